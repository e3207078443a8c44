"""Reverse diffusion with K MCMC steps per noise level on a time-indexed energy (Du et al. 2023, Sec. 3-4).

At every visited timestep t of the DDPM schedule the chains first take K steps of a kernel that targets
exp(-E(x, t)) (ULA; MALA, Roberts & Tweedie 1996; HMC, Neal 2011: the kernels of ``langevin.py``, ``mala.py`` and
``hmc.py``), then one ancestral DDPM step t -> t' (Ho et al. 2020, Algorithm 2) with eps = sigma_t grad E.

Step sizes per level: MALA eps_t = m * step_size * sigma_t^2, HMC h_t = m * step_size * sigma_t, ULA eps_t =
step_size * sigma_t^2 (sigma_t^2 = 1 - alpha_bar_t, the variance the forward process adds). The multiplier m is
adapted between levels towards ``target_accept`` from the acceptance of the level just finished
(log m += adapt_rate * (acceptance - target)); within a level the kernel is fixed, so each level's MCMC leaves
exp(-E(., t)) invariant exactly. Intermediate levels live on R^D (no support rule), as in DDPM.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ebmbench.protocol import SAMPLERS, Box, SamplerOutput, SamplerSpec, TimeEnergyModel
from ebmbench.samplers.diffusion import table_previous_timestep
from ebmbench.samplers.hmc import hmc_chain
from ebmbench.samplers.langevin import ula_chain
from ebmbench.samplers.mala import mala_chain
from ebmbench.samplers.metropolis import MCMCStats, settle
from ebmbench.samplers.trace import emit

KERNELS = ("ula", "mala", "hmc")


def level_energy(model: TimeEnergyModel, t: int):
    """x -> E(x, t) at one integer timestep."""

    def energy(x: Tensor) -> Tensor:
        return model.energy_t(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))

    return energy


def mcmc_at_level(model: TimeEnergyModel, x: Tensor, t: int, kernel: str, steps: int, step: float,
                  generator: torch.Generator, leapfrog_steps: int = 3) -> tuple[Tensor, int, float | None]:
    """``steps`` transitions of ``kernel`` on exp(-E(., t)) with step ``step`` (ULA/MALA eps, HMC h);
    returns (x, energy-and-gradient evaluations made, acceptance or None for ULA), read on the host."""
    x, nfe, stats = level_chain(model, x, t, kernel, steps, step, generator, leapfrog_steps)
    (acc,) = settle([stats], f"{kernel} at t = {t}")
    return x, nfe, None if kernel == "ula" else acc


def level_chain(model: TimeEnergyModel, x: Tensor, t: int, kernel: str, steps: int, step: float,
                generator: torch.Generator, leapfrog_steps: int = 3) -> tuple[Tensor, int, MCMCStats]:
    """``mcmc_at_level`` with no host read: returns the chain's device-side stats (ULA: only its finiteness
    probe), for ``metropolis.settle``."""
    energy = level_energy(model, t)
    if kernel == "ula":
        unbounded = Box(-math.inf, math.inf, tuple(x.shape[1:]))
        x, t_stats = ula_chain(energy, x, steps=steps, eps=step, temperature=1.0, generator=generator, box=unbounded,
                               support_mode="none")
        return x, steps, MCMCStats(None, t_stats["probe"].new_zeros((0, 0)), steps, t_stats["probe"].new_zeros(()),
                                   0, t_stats["probe"])
    if kernel == "mala":
        x, stats = mala_chain(energy, x, steps=steps, eps=step, generator=generator, sync=False)
        return x, stats.nfe, stats
    if kernel == "hmc":
        x, stats = hmc_chain(energy, x, steps=steps, leapfrog_steps=leapfrog_steps, step_size=step,
                             generator=generator, sync=False)
        return x, stats.nfe, stats
    raise ValueError(f"kernel {kernel!r}: choose one of {KERNELS}")


def sigma_table(scheduler: Any) -> list[float]:
    """sigma_t = sqrt(1 - alpha_bar_t) of every timestep as host floats, from the scheduler's CPU schedule (the
    model's ``sigma_t`` at one level was a host read per level)."""
    return (1 - scheduler.alphas_cumprod.double()).sqrt().tolist()


def level_step(kernel: str, step_size: float, multiplier: float, sigma: float) -> float:
    """The kernel's step at a level of native noise std ``sigma`` (see the module docstring)."""
    if kernel == "hmc":
        return multiplier * step_size * sigma
    return (multiplier if kernel == "mala" else 1.0) * step_size * sigma**2


def corrected_reverse(model: TimeEnergyModel, n: int, generator: torch.Generator, *, kernel: str, steps: int,
                      mcmc_steps: int, step_size: float, target_accept: float, adapt_rate: float,
                      leapfrog_steps: int = 3, min_t: int = 0) -> SamplerOutput:
    """DDPM ancestral sampling over ``steps`` levels with ``mcmc_steps`` MCMC transitions before each step at
    every level t >= ``min_t`` (the levels below take plain ancestral steps)."""
    if mcmc_steps < 0 or steps < 1:
        raise ValueError(f"steps={steps}, mcmc_steps={mcmc_steps}: need steps >= 1 and mcmc_steps >= 0")
    if not step_size > 0 or not 0 < target_accept < 1:
        raise ValueError(f"step_size={step_size} must be > 0 and target_accept={target_accept} in (0, 1)")
    scheduler = model.make_ddpm_scheduler()
    scheduler.set_timesteps(steps)
    table_previous_timestep(scheduler)  # as the ancestral sampler: no host reads of the schedule per step
    x = torch.randn((n, *model.shape), generator=generator, device=model.device)
    nfe, log_m, sizes, chains = 0, 0.0, [], []
    sigmas = sigma_table(scheduler)
    for t in scheduler.timesteps.tolist():
        t_batch = torch.full((n,), t, dtype=torch.long, device=x.device)
        if mcmc_steps and t >= min_t:
            h = level_step(kernel, step_size, math.exp(log_m), sigmas[t])
            x, calls, stats = level_chain(model, x, t, kernel, mcmc_steps, h, generator, leapfrog_steps)
            nfe += calls
            sizes.append(h)
            chains.append(stats)
            if adapt_rate and kernel != "ula":  # the next level's step needs this one's acceptance: one read a level
                (acc,) = settle([stats], f"{kernel} at t = {t}")
                log_m += adapt_rate * (acc - target_accept)
        emit(f"t = {t}", x)
        with torch.no_grad():
            x = scheduler.step(model.eps(x, t_batch), t, x, generator=generator).prev_sample
        nfe += 1
    emit("x_0", x)
    info: dict[str, Any] = {"kernel": kernel, "timesteps": steps, "mcmc_steps": mcmc_steps, "min_t": min_t,
                            "step_sizes": sizes, "scheduler_config": model.scheduler_config()}
    accepts = [a for a in settle(chains, f"{kernel} corrector") if kernel != "ula"]  # once, at the end
    if accepts:
        info.update(acceptance=sum(accepts) / len(accepts), acceptance_by_level=accepts,
                    target_accept=target_accept)
    return SamplerOutput(x.detach(), nfe=nfe, info=info)


def ddpm_ula(model: TimeEnergyModel, n: int, generator: torch.Generator, steps: int = 100, mcmc_steps: int = 2,
             step_size: float = 0.05, min_t: int = 0) -> SamplerOutput:
    """Reverse diffusion with K unadjusted Langevin steps per level (Du et al. 2023, ULA corrector)."""
    return corrected_reverse(model, n, generator, kernel="ula", steps=steps, mcmc_steps=mcmc_steps,
                             step_size=step_size, target_accept=0.5, adapt_rate=0.0, min_t=min_t)


def ddpm_mala(model: TimeEnergyModel, n: int, generator: torch.Generator, steps: int = 100, mcmc_steps: int = 2,
              step_size: float = 0.1, target_accept: float = 0.57, adapt_rate: float = 1.0,
              min_t: int = 0) -> SamplerOutput:
    """Reverse diffusion with K MALA steps per level, step adapted between levels (Du et al. 2023)."""
    return corrected_reverse(model, n, generator, kernel="mala", steps=steps, mcmc_steps=mcmc_steps,
                             step_size=step_size, target_accept=target_accept, adapt_rate=adapt_rate, min_t=min_t)


def ddpm_hmc(model: TimeEnergyModel, n: int, generator: torch.Generator, steps: int = 100, mcmc_steps: int = 1,
             leapfrog_steps: int = 3, step_size: float = 0.3, target_accept: float = 0.65,
             adapt_rate: float = 1.0, min_t: int = 0) -> SamplerOutput:
    """Reverse diffusion with K HMC iterations of L leapfrog steps per level, step adapted between levels."""
    return corrected_reverse(model, n, generator, kernel="hmc", steps=steps, mcmc_steps=mcmc_steps,
                             step_size=step_size, target_accept=target_accept, adapt_rate=adapt_rate,
                             leapfrog_steps=leapfrog_steps, min_t=min_t)


_CITE = "Du et al. 2023, Reduce, Reuse, Recycle: reverse diffusion with {} per noise level"
for _name, _fn, _kernel in (("ddpm_ula", ddpm_ula, "ULA"), ("ddpm_mala", ddpm_mala, "MALA"),
                            ("ddpm_hmc", ddpm_hmc, "HMC")):
    SAMPLERS.register(_name, SamplerSpec(_name, requires="time_energy", fn=_fn, cite=_CITE.format(_kernel)))
