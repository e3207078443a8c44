"""Hamiltonian Monte Carlo with the leapfrog integrator on exp(-E(x)/T), exact for the density on its support box.

Potential U(x) = E(x) / T, unit mass matrix, full momentum refresh every iteration, L leapfrog
steps of size h (Neal 2011, "MCMC using Hamiltonian dynamics", sections 2.3 and 3.2). Each chain
draws its h every iteration uniformly from step_size * [1 - jitter, 1 + jitter], independently of
its state (Neal 2011, section 5.4.2.2): a fixed trajectory length h L near a multiple of pi / omega
of some mode (omega^2 an eigenvalue of the Hessian of U) maps that mode to +-itself and never mixes it.
Support: the density is zero outside the box, so a trajectory that leaves the box is rejected.
The rule depends only on the positions the trajectory visits, which its time reversal visits
too, so detailed balance holds and the chain targets the truncated density exactly. A chain
whose trajectory has left is frozen at its last position inside (its proposal is rejected
anyway), so the energy is never evaluated outside the box.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ebmbench.protocol import SAMPLERS, Box, GenerativeModel, SamplerOutput, SamplerSpec
from ebmbench.samplers.compiled import GradFn, check_finite, compile_seconds, energy_and_grad, finite_probe, grad_fn
from ebmbench.samplers.langevin import Energy
from ebmbench.samplers.metropolis import (
    MCMCStats,
    check_args,
    inside,
    mcmc_info,
    mh_accept,
    rows,
    sq_norm,
    support_box,
)
from ebmbench.samplers.trace import emit


def leapfrog(
    grad: GradFn, x: Tensor, p: Tensor, g: Tensor, *, n_steps: int, h: Tensor | float, temperature: float,
    box: Box | None, probe: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """L leapfrog steps of (x, p) under U = E / T from grad E(x) = g; returns x, p, E, grad E, stayed-inside.

    ``probe`` (``compiled.finite_probe``, on device) gains NaN in place if an energy along the trajectory is NaN/inf.
    """
    ok = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    e = None
    p = p - 0.5 * h * g / temperature
    for i in range(n_steps):
        x_new = x + h * p
        ok = ok & inside(box, x_new)
        x = rows(ok, x_new, x)  # a chain that left stays at its last inside point; it will be rejected
        e, g = grad(x)
        probe += finite_probe(e)
        p = p - (0.5 if i == n_steps - 1 else 1.0) * h * g / temperature
    return x, p, e, g, ok


def hmc_chain(
    energy: Energy,
    x0: Tensor,
    *,
    steps: int,
    leapfrog_steps: int,
    step_size: float,
    temperature: float = 1.0,
    step_jitter: float = 0.0,
    generator: torch.Generator,
    box: Box | None = None,
    grad: GradFn | None = None,
    sync: bool = True,
) -> tuple[Tensor, MCMCStats]:
    """HMC (Duane et al. 1987; Neal 2011) targeting exp(-E(x)/T) on ``box`` (None: all of R^D).

    ``grad``: (E, grad E) in one call (eager or compiled, ``samplers.compiled.grad_fn``); None: eager autograd.
    ``sync=False``: no host read at all; the acceptance and the finiteness probe stay on the device
    (``metropolis.settle`` reads many chains' at once). The first call's E and grad E are cloned: a compiled
    CUDA-graph mode (reduce-overhead) overwrites its outputs on the next replay.
    """
    if leapfrog_steps < 1:
        raise ValueError(f"leapfrog_steps={leapfrog_steps}: HMC needs at least one leapfrog step")
    if not 0.0 <= step_jitter < 1.0:
        raise ValueError(f"step_jitter={step_jitter}: choose a fraction in [0, 1)")
    check_args(box, x0, step_size=step_size, temperature=temperature)
    grad = grad if grad is not None else (lambda y: energy_and_grad(energy, y))
    x = x0.detach()
    e, g = (t.clone() for t in grad(x))
    nfe, trace, accepted = 1, [e], torch.zeros((), device=x.device)
    probe = finite_probe(e)
    emit("step 0", x)
    for step in range(steps):
        p0 = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        u = torch.rand((x.shape[0], *[1] * (x.dim() - 1)), generator=generator, device=x.device, dtype=x.dtype)
        h = step_size * (1.0 + step_jitter * (2.0 * u - 1.0))
        y, p, e_y, g_y, ok = leapfrog(grad, x, p0, g, n_steps=leapfrog_steps, h=h,
                                      temperature=temperature, box=box, probe=probe)
        nfe += leapfrog_steps
        # log alpha = H(x, p0) - H(y, p) with H = E / T + |p|^2 / 2
        log_alpha = (e - e_y) / temperature + 0.5 * (sq_norm(p0) - sq_norm(p))
        accept = mh_accept(log_alpha, ok, generator)
        x, e, g = rows(accept, y, x), torch.where(accept, e_y, e), rows(accept, g_y, g)
        accepted += accept.sum()
        trace.append(e)
        emit(f"step {step + 1}", x)
    energies = torch.stack(trace, dim=1)
    if not sync:
        return x.detach(), MCMCStats(None, energies, nfe, accepted, steps * x.shape[0], probe)
    check_finite(probe, "HMC sampling")
    rate = float(accepted) / (steps * x.shape[0]) if steps else float("nan")
    return x.detach(), MCMCStats(acceptance=rate, energies=energies, nfe=nfe)


def hmc(
    model: GenerativeModel,
    n: int,
    generator: torch.Generator,
    steps: int = 50,
    leapfrog_steps: int = 10,
    step_size: float = 0.05,
    step_jitter: float = 0.2,
    temperature: float = 1.0,
    support_mode: str = "reject",
) -> SamplerOutput:
    """Fresh HMC chains of ``steps`` iterations from uniform noise on the support; NFE = steps * L + 1."""
    box = support_box(model.support, support_mode)
    x0 = model.support.uniform(n, generator, model.device)
    compiled_before = compile_seconds(model)
    x, stats = hmc_chain(model.energy, x0, steps=steps, leapfrog_steps=leapfrog_steps, step_size=step_size,
                         temperature=temperature, step_jitter=step_jitter, generator=generator, box=box,
                         grad=grad_fn(model))
    info = {**mcmc_info(stats, temperature, support_mode), "leapfrog_steps": leapfrog_steps,
            "step_jitter": step_jitter, "compile_s": compile_seconds(model) - compiled_before}
    return SamplerOutput(x, nfe=stats.nfe, info=info, temperature=temperature)


SAMPLERS.register(
    "hmc",
    SamplerSpec("hmc", requires="energy", fn=hmc, cite="Neal 2011, MCMC using Hamiltonian dynamics (leapfrog HMC)"),
)
