"""Samplers for noise-prediction models on diffusers' schedulers: ancestral DDPM, DDIM, DPM-Solver++.

The samplers draw x_T ~ N(0, I) from the caller's generator and pass that generator to every
``scheduler.step``, so a seed fixes the whole chain. Also deterministic DDIM inversion
(x0 -> x_T) and DDIM decoding from a given x_T. The schedulers stay on the CPU
(their alpha_bar scalars broadcast onto the model's device) and receive integer timesteps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ebmbench.protocol import SAMPLERS, EpsModel, SamplerOutput, SamplerSpec
from ebmbench.samplers.trace import emit

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler


def _prior(model: EpsModel, n: int, generator: torch.Generator) -> Tensor:
    """x_T ~ N(0, I) of shape (n, *model.shape) on the model's device."""
    return torch.randn((n, *model.shape), generator=generator, device=model.device)


def _run_chain(
    model: EpsModel,
    scheduler: DDPMScheduler | DDIMScheduler | DPMSolverMultistepScheduler,
    x: Tensor,
    **step_kwargs: Any,
) -> tuple[Tensor, int]:
    """Walk ``scheduler.timesteps``: one eps call and one ``scheduler.step`` each; returns (x_0, calls)."""
    calls = 0
    for t in scheduler.timesteps.tolist():
        emit(f"t = {t}", x)
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = model.eps(x, t_batch)
        calls += 1
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    emit("x_0", x)
    return x, calls


def _info(model: EpsModel, scheduler: Any, **extra: Any) -> dict[str, Any]:
    """What the run used: scheduler class, the pinned settings and how many timesteps were visited."""
    return {
        "scheduler": type(scheduler).__name__,
        "scheduler_config": model.scheduler_config(),
        "timesteps": len(scheduler.timesteps),
        **extra,
    }


def table_previous_timestep(scheduler: DDPMScheduler) -> DDPMScheduler:
    """Look up t's predecessor in a Python table made once per chain. diffusers' ``previous_timestep`` finds it
    with tensor comparisons read on the host, several device syncs a step; the table gives the same timesteps
    as ints (the last one's predecessor is -1, as diffusers'), which index ``alphas_cumprod`` alike."""
    ts = scheduler.timesteps.tolist()
    scheduler.previous_timestep = dict(zip(ts, [*ts[1:], -1], strict=True)).__getitem__  # type: ignore[method-assign]
    return scheduler


@torch.no_grad()
def ddpm_ancestral(model: EpsModel, n: int, generator: torch.Generator, steps: int = 1000) -> SamplerOutput:
    """Ancestral sampling x_{t-1} ~ p_theta(x_{t-1} | x_t) (Ho et al. 2020, Algorithm 2)."""
    scheduler = model.make_ddpm_scheduler()
    scheduler.set_timesteps(steps)
    table_previous_timestep(scheduler)
    x, calls = _run_chain(model, scheduler, _prior(model, n, generator), generator=generator)
    return SamplerOutput(x, nfe=calls, info=_info(model, scheduler))


@torch.no_grad()
def ddim(model: EpsModel, n: int, generator: torch.Generator, steps: int = 50, eta: float = 0.0) -> SamplerOutput:
    """DDIM sampling with sigma_t = eta * sqrt(beta~_t) (Song et al. 2021, eq. 12 and 16)."""
    x, calls, scheduler = _ddim_chain(model, _prior(model, n, generator), steps, eta, generator)
    return SamplerOutput(x, nfe=calls, info=_info(model, scheduler, eta=eta))


def _ddim_chain(
    model: EpsModel, x_T: Tensor, steps: int, eta: float, generator: torch.Generator | None
) -> tuple[Tensor, int, DDIMScheduler]:
    scheduler = model.make_ddim_scheduler()
    scheduler.set_timesteps(steps)
    x, calls = _run_chain(model, scheduler, x_T, generator=generator, eta=eta)
    return x, calls, scheduler


@torch.no_grad()
def ddim_decode(model: EpsModel, x_T: Tensor, steps: int = 50) -> Tensor:
    """Deterministic DDIM (eta = 0) from a given x_T to x_0 (Song et al. 2021, eq. 12); ``steps`` eps calls."""
    return _ddim_chain(model, x_T, steps, 0.0, None)[0]


@torch.no_grad()
def ddim_invert(model: EpsModel, x0: Tensor, steps: int = 50, fixed_point_iters: int = 0) -> Tensor:
    """DDIM inversion x0 -> x_T: the eta = 0 update run forwards (Song et al. 2021, Sec. 4.3; Dhariwal & Nichol 2021).

    diffusers' DDIMInverseScheduler visits the DDIM sampler's timesteps in reverse order and
    moves x from t' = t - T/steps to t with eps_theta(x_t', t), where the sampler's step back uses
    eps_theta(x_t, t): an O(1/steps) approximation of the exact inverse. ``fixed_point_iters`` > 0
    re-evaluates eps at the current estimate of x_t and repeats the step (fixed-point inversion,
    Pan et al. 2023), which converges to the exact inverse of ``ddim_decode``.
    ``steps * (1 + fixed_point_iters)`` eps calls, counted by ``model.net``.
    """
    scheduler = model.make_ddim_inverse_scheduler()
    scheduler.set_timesteps(steps)
    x = x0
    for t in scheduler.timesteps.tolist():
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x_t = scheduler.step(model.eps(x, t_batch), t, x).prev_sample
        for _ in range(fixed_point_iters):
            x_t = scheduler.step(model.eps(x_t, t_batch), t, x).prev_sample
        x = x_t
    return x


@torch.no_grad()
def dpm_solver(model: EpsModel, n: int, generator: torch.Generator, steps: int = 20) -> SamplerOutput:
    """DPM-Solver++(2M): multistep 2nd-order probability-flow ODE solver on x0 predictions (Lu et al. 2022)."""
    scheduler = model.make_dpm_scheduler()
    scheduler.set_timesteps(steps)
    x, calls = _run_chain(model, scheduler, _prior(model, n, generator), generator=generator)
    solver = {k: scheduler.config[k] for k in ("algorithm_type", "solver_order", "solver_type", "lower_order_final",
                                                "final_sigmas_type", "timestep_spacing")}
    return SamplerOutput(x, nfe=calls, info=_info(model, scheduler, solver=solver))


SAMPLERS.register(
    "ddpm",
    SamplerSpec(
        name="ddpm",
        requires="eps_prediction",
        fn=ddpm_ancestral,
        cite="Ho et al. 2020, Denoising Diffusion Probabilistic Models (Algorithm 2)",
    ),
)
SAMPLERS.register(
    "ddim",
    SamplerSpec(
        name="ddim",
        requires="eps_prediction",
        fn=ddim,
        cite="Song et al. 2021, Denoising Diffusion Implicit Models",
    ),
)
SAMPLERS.register(
    "dpm_solver",
    SamplerSpec(
        name="dpm_solver",
        requires="eps_prediction",
        fn=dpm_solver,
        cite="Lu et al. 2022, DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
    ),
)
