"""Annealed Langevin dynamics on a noise-conditional score (Song & Ermon 2019, Algorithm 1).

Runs on any model with capability ``score``: the chain lives in the scaled (VE) coordinates
x = x0 + sigma z of ``ebmbench.noise``, so NCSN (VE) and DDPM (VP, mapped) share it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ebmbench.noise import geometric_sigmas
from ebmbench.protocol import SAMPLERS, GenerativeModel, SamplerOutput, SamplerSpec
from ebmbench.samplers.trace import emit


def initial_state(model: GenerativeModel, n: int, generator: torch.Generator, init: str, sigma_max: float) -> Tensor:
    """'uniform' on the support box (Song & Ermon 2019, Sec. 5) or 'prior' N(0, sigma_1^2 I) (Song & Ermon 2020)."""
    if init == "uniform":
        return model.support.uniform(n, generator, model.device)
    if init == "prior":
        return sigma_max * torch.randn((n, *model.support.shape), generator=generator, device=model.device)
    raise ValueError(f"init {init!r}: choose 'uniform' or 'prior'")


def step_sizes(sigmas: Tensor, eps: float) -> Tensor:
    """alpha_i = eps * sigma_i^2 / sigma_L^2 (Song & Ermon 2019, Algorithm 1)."""
    return eps * (sigmas / sigmas[-1]) ** 2


@torch.no_grad()
def annealed_langevin(
    model: Any,
    n: int,
    generator: torch.Generator,
    n_sigmas: int = 10,
    sigma_min: float = 0.01,
    sigma_max: float = 1.0,
    steps_per_sigma: int = 100,
    eps: float = 2e-5,
    denoise: bool = True,
    init: str = "uniform",
    support_mode: str = "none",
) -> SamplerOutput:
    """x <- x + alpha_i/2 s(x, sigma_i) + sqrt(alpha_i) z, T steps per level, geometric sigma_1 > ... > sigma_L.

    ``denoise`` adds the final step x + sigma_L^2 s(x, sigma_L) (Tweedie; Jolicoeur-Martineau et
    al. 2021, Song & Ermon 2020). Intermediate iterates follow p_sigma, which extends beyond the
    support, so they are never projected; ``support_mode`` (none | clamp | reflect) applies to the
    returned samples only. NFE = L * T (+ 1 with ``denoise``).
    """
    sigmas = geometric_sigmas(sigma_max, sigma_min, n_sigmas)
    model.noise_process.check(sigmas)
    alphas = step_sizes(sigmas, eps)
    x = initial_state(model, n, generator, init, sigma_max)
    calls = 0
    emit("start", x)
    for sigma, alpha in zip(sigmas.tolist(), alphas.tolist()):
        for _ in range(steps_per_sigma):
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + 0.5 * alpha * model.score(x, sigma) + math.sqrt(alpha) * z
            calls += 1
        emit(f"sigma = {sigma:.3g}", x)
    if denoise:
        x = x + sigma_min**2 * model.score(x, sigma_min)
        calls += 1
    x = model.support.project(x, support_mode)
    emit("denoised" if denoise else "final", x)
    info = {
        "sigmas": sigmas.tolist(),
        "alpha_first": float(alphas[0]),
        "alpha_last": float(alphas[-1]),
        "init": init,
        "denoise": denoise,
        "support_mode": support_mode,
        "noise_process": model.noise_process.describe(),
    }
    return SamplerOutput(x, nfe=calls, info=info)


SAMPLERS.register(
    "annealed_langevin",
    SamplerSpec(
        name="annealed_langevin",
        requires="score",
        fn=annealed_langevin,
        cite="Song & Ermon 2019, Generative Modeling by Estimating Gradients of the Data Distribution (Algorithm 1)",
    ),
)
