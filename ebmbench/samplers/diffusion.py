"""Samplers for noise-prediction models on diffusers' schedulers: ancestral DDPM and DDIM.

Both draw x_T ~ N(0, I) from the caller's generator and pass that generator to every
``scheduler.step``, so a seed fixes the whole chain. The schedulers stay on the CPU
(their alpha_bar scalars broadcast onto the model's device) and receive integer timesteps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor

from ebmbench.protocol import SAMPLERS, SamplerOutput, SamplerSpec

if TYPE_CHECKING:
    from ebmbench.methods.diffusion import DDPM


def _prior(model: DDPM, n: int, generator: torch.Generator) -> Tensor:
    """x_T ~ N(0, I) of shape (n, *model.shape) on the model's device."""
    return torch.randn((n, *model.shape), generator=generator, device=model.device)


def _run_chain(
    model: DDPM,
    scheduler: DDPMScheduler | DDIMScheduler,
    x: Tensor,
    generator: torch.Generator,
    **step_kwargs: Any,
) -> tuple[Tensor, int]:
    """Walk ``scheduler.timesteps``: one eps call and one ``scheduler.step`` each; returns (x_0, calls)."""
    calls = 0
    for t in scheduler.timesteps.tolist():
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = model.eps(x, t_batch)
        calls += 1
        x = scheduler.step(eps, t, x, generator=generator, **step_kwargs).prev_sample
    return x, calls


def _info(model: DDPM, scheduler: DDPMScheduler | DDIMScheduler, **extra: Any) -> dict[str, Any]:
    """What the run used: scheduler class, the pinned settings and how many timesteps were visited."""
    return {
        "scheduler": type(scheduler).__name__,
        "scheduler_config": model.scheduler_config(),
        "timesteps": len(scheduler.timesteps),
        **extra,
    }


@torch.no_grad()
def ddpm_ancestral(model: DDPM, n: int, generator: torch.Generator, steps: int = 1000) -> SamplerOutput:
    """Ancestral sampling x_{t-1} ~ p_theta(x_{t-1} | x_t) (Ho et al. 2020, Algorithm 2)."""
    scheduler = model.make_ddpm_scheduler()
    scheduler.set_timesteps(steps)
    x, calls = _run_chain(model, scheduler, _prior(model, n, generator), generator)
    return SamplerOutput(x, nfe=calls, info=_info(model, scheduler))


@torch.no_grad()
def ddim(model: DDPM, n: int, generator: torch.Generator, steps: int = 50, eta: float = 0.0) -> SamplerOutput:
    """DDIM sampling with sigma_t = eta * sqrt(beta~_t) (Song et al. 2021, eq. 12 and 16)."""
    scheduler = model.make_ddim_scheduler()
    scheduler.set_timesteps(steps)
    x, calls = _run_chain(model, scheduler, _prior(model, n, generator), generator, eta=eta)
    return SamplerOutput(x, nfe=calls, info=_info(model, scheduler, eta=eta))


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
