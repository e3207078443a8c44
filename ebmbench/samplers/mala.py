"""Metropolis-adjusted Langevin algorithm (MALA) on exp(-E(x)/T), exact for the density on its support box.

Proposal y = x - eps grad E(x) + sqrt(2 eps T) xi (the ULA step of ``langevin.py``), accepted with
probability min(1, pi(y) q(x|y) / (pi(x) q(y|x))) (Roberts & Tweedie 1996). Support: the density
is zero outside the box, so a proposal that leaves it is rejected; the chain then targets the
truncated density exactly (no clamping or reflection, which would bias it). The energy is never
evaluated outside the box: rejected rows are evaluated at their current state.
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


def mala_chain(
    energy: Energy,
    x0: Tensor,
    *,
    steps: int,
    eps: float,
    temperature: float = 1.0,
    generator: torch.Generator,
    box: Box | None = None,
    grad: GradFn | None = None,
    sync: bool = True,
) -> tuple[Tensor, MCMCStats]:
    """MALA (Roberts & Tweedie 1996) targeting exp(-E(x)/T) on ``box`` (None: all of R^D).

    ``grad``: (E, grad E) in one call (eager or compiled, ``samplers.compiled.grad_fn``); None: eager autograd.
    ``sync=False``: no host read at all; the acceptance and the finiteness probe stay on the device
    (``metropolis.settle`` reads many chains' at once). The first call's E and grad E are cloned: a compiled
    CUDA-graph mode (reduce-overhead) overwrites its outputs on the next replay.
    """
    check_args(box, x0, eps=eps, temperature=temperature)
    grad = grad if grad is not None else (lambda y: energy_and_grad(energy, y))
    x = x0.detach()
    e, g = (t.clone() for t in grad(x))
    nfe, trace, accepted, noise = 1, [e], torch.zeros((), device=x.device), (2.0 * eps * temperature) ** 0.5
    probe = finite_probe(e)
    emit("step 0", x)
    for step in range(steps):
        xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        y = x - eps * g + noise * xi
        ok = inside(box, y)
        e_y, g_y = grad(rows(ok, y, x))
        probe += finite_probe(e_y)  # on device: one host sync per chain, at its end
        nfe += 1
        # log q(x|y) - log q(y|x) with q(b|a) = N(b; a - eps grad E(a), 2 eps T I); y - mean(y|x) = noise * xi
        log_q_ratio = -sq_norm(x - y + eps * g_y) / (4.0 * eps * temperature) + 0.5 * sq_norm(xi)
        accept = mh_accept(-(e_y - e) / temperature + log_q_ratio, ok, generator)
        x, e, g = rows(accept, y, x), torch.where(accept, e_y, e), rows(accept, g_y, g)
        accepted += accept.sum()
        trace.append(e)
        emit(f"step {step + 1}", x)
    energies = torch.stack(trace, dim=1)
    if not sync:
        return x.detach(), MCMCStats(None, energies, nfe, accepted, steps * x.shape[0], probe)
    check_finite(probe, "MALA sampling")
    rate = float(accepted) / (steps * x.shape[0]) if steps else float("nan")
    return x.detach(), MCMCStats(acceptance=rate, energies=energies, nfe=nfe)


def mala(
    model: GenerativeModel,
    n: int,
    generator: torch.Generator,
    steps: int = 100,
    eps: float = 0.01,
    temperature: float = 1.0,
    support_mode: str = "reject",
) -> SamplerOutput:
    """Fresh MALA chains of ``steps`` steps from uniform noise on the support; NFE = steps + 1."""
    box = support_box(model.support, support_mode)
    x0 = model.support.uniform(n, generator, model.device)
    compiled_before = compile_seconds(model)
    x, stats = mala_chain(model.energy, x0, steps=steps, eps=eps, temperature=temperature,
                          generator=generator, box=box, grad=grad_fn(model))
    info = {**mcmc_info(stats, temperature, support_mode), "compile_s": compile_seconds(model) - compiled_before}
    return SamplerOutput(x, nfe=stats.nfe, info=info, temperature=temperature)


SAMPLERS.register(
    "mala",
    SamplerSpec("mala", requires="energy", fn=mala, cite="Roberts & Tweedie 1996 (MALA)"),
)
