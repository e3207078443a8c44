"""NCSN: a noise-conditional score network trained by multi-level denoising score matching (Song & Ermon 2019)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

import ebmbench.samplers.annealed  # noqa: F401  (registers annealed_langevin, NCSN's default sampler)
from ebmbench.data.base import Dataset
from ebmbench.methods.base import METHODS, MethodSpec
from ebmbench.nets.cifar import SCORE_NGF, score_net
from ebmbench.nets.time_conditioned import time_conditioned_net
from ebmbench.noise import VENoise, as_sigma, geometric_sigmas, per_sample
from ebmbench.params import param
from ebmbench.protocol import Box, GenerativeModel

# The net's "timestep" input is c_noise = 100 ln sigma: DDPM's t in [0, 1000) spans ln sigma_t in
# [-4.6, 5.1] (about 100 timesteps per unit of ln sigma), so the sinusoidal embeddings of TimeMLP and
# UNet2DModel, tuned for DDPM timesteps, resolve noise levels as finely as they resolve DDPM's steps.
NOISE_LABEL_SCALE = 100.0


@dataclass
class NCSNParams:
    """Parameters of NCSN (Song & Ermon 2019): the noise levels, the score net and annealed Langevin."""

    n_sigmas: int = param(10, "L, number of noise levels (Song & Ermon 2019: 10)", range=">= 1")
    sigma_min: float = param(0.01, "sigma_L, smallest noise level (paper: 0.01 for images in [0, 1])", range="> 0")
    sigma_max: float = param(
        1.0, "sigma_1, largest noise level (paper: 1; NCSNv2: ~ max pairwise data distance)", range="> 0")
    steps_per_sigma: int = param(100, "T, Langevin steps per noise level at sampling (paper: 100)", range=">= 1")
    eps: float = param(2e-5, "epsilon, step size alpha_i = eps * sigma_i^2 / sigma_L^2 (paper: 2e-5)", range="> 0")
    denoise: bool = param(True, "final step x + sigma_L^2 s(x, sigma_L) (Jolicoeur-Martineau et al. 2021; NCSNv2)")
    init: str = param(
        "uniform", "chains start uniform on the support (paper) or 'prior' N(0, sigma_1^2 I)",
        choices=("uniform", "prior"))
    support_mode: str = param(
        "none", "projection of the returned samples onto the support: none | clamp | reflect",
        choices=("none", "clamp", "reflect"))
    hidden: int = param(128, "TimeMLP width (vector data, e.g. 2D)", range=">= 1")
    depth: int = param(3, "TimeMLP hidden layers (vector data, e.g. 2D)", range=">= 1")
    channels: str = param("32,64", "UNet2DModel block widths (image data), one halving per block", grammar="int list")
    arch: str = param(
        "default", 'network: "default" (by data shape) or a paper network of ebmbench.nets.cifar',
        choices=("default", *SCORE_NGF))
    # the study's random-search ranges (issue 15, ebmbench/study.py): name -> (scale, low, high) | ("choice", ...)
    search_space: ClassVar[dict[str, tuple]] = {
        "lr": ("log", 1e-4, 3e-3), "ema_decay": ("linear", 0.9, 0.999), "hidden": ("int_log", 64, 256),
        "sigma_max": ("log", 1.0, 10.0), "eps": ("log", 5e-6, 1e-4)}


def noise_label(sigma: Tensor) -> Tensor:
    """c_noise(sigma) = 100 ln sigma, the 'timestep' the net is conditioned on."""
    return NOISE_LABEL_SCALE * sigma.log()


class NCSN(GenerativeModel):
    """Noise-conditional score s_theta(x, sigma) = f_theta(x, 100 ln sigma) / sigma (Song & Ermon 2019; 2020)."""

    family = "score"
    capabilities = frozenset({"score"})
    default_sampler = "annealed_langevin"

    def __init__(self, net: nn.Module, support: Box, params: NCSNParams | None = None) -> None:
        super().__init__(net, support)
        self.params = params if params is not None else NCSNParams()
        self.noise_process = VENoise(self.params.sigma_min, self.params.sigma_max)
        sigmas = geometric_sigmas(self.params.sigma_max, self.params.sigma_min, self.params.n_sigmas)
        self.register_buffer("sigmas", sigmas.float())  # sigma_1 > ... > sigma_L, the training levels

    def score(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """grad_x log p_sigma(x), p_sigma = p_data * N(0, sigma^2 I); the 1/sigma output scale of NCSNv2."""
        self.noise_process.check(sigma)
        return self.level_score(x, as_sigma(sigma, x))

    def level_score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``score`` at noise levels known to be in range (the model's own ``sigmas``), without the range check
        (a host read of sigma's extremes): training draws every level from ``sigmas``."""
        return self.net(x, noise_label(sigma)) / per_sample(sigma, x)


Score = Callable[[Tensor, Tensor], Tensor]


def dsm_loss(score: Score, x0: Tensor, sigma: Tensor, z: Tensor) -> Tensor:
    """sigma^2-weighted DSM: 1/2 |sigma s(x0 + sigma z, sigma) + z|^2 (Song & Ermon 2019, eq. 5-6).

    ``sigma`` is (B,), one level per sample; returns the (B,) loss summed over dimensions.
    """
    s = per_sample(sigma, x0)
    return 0.5 * (s * score(x0 + s * z, sigma) + z).pow(2).flatten(1).sum(dim=1)


def ncsn_loss(
    model: NCSN, x0: Tensor, generator: torch.Generator, params: NCSNParams
) -> tuple[Tensor, dict[str, float]]:
    """1/L sum_i sigma_i^2 l(theta; sigma_i), estimated with one level i ~ U{1..L} per sample (eq. 6)."""
    levels = (params.sigma_max, params.sigma_min, params.n_sigmas)
    if model.__dict__.get("_checked_levels") != levels:  # once per model and schedule, not every step
        if not torch.equal(geometric_sigmas(*levels).float(), model.sigmas.cpu()):
            raise ValueError("ncsn_loss: params' noise levels differ from the model's; train and sample must agree")
        model.__dict__["_checked_levels"] = levels
    i = torch.randint(0, len(model.sigmas), (x0.shape[0],), generator=generator, device=x0.device)
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    loss = dsm_loss(model.level_score, x0, model.sigmas[i], z)  # levels from model.sigmas: in range
    return loss, {"loss": loss.mean().detach()}  # a 0-d tensor: read on the host only when the guard syncs


def build_score_net(shape: tuple[int, ...], params: NCSNParams) -> nn.Module:
    """TimeMLP for vector data (D,), diffusers' UNet2DModel for images (C, H, W); both take c_noise as t."""
    if params.arch != "default":
        return score_net(params.arch, shape, sigma_max=params.sigma_max, sigma_min=params.sigma_min,
                         n_sigmas=params.n_sigmas)
    return time_conditioned_net(shape, hidden=params.hidden, depth=params.depth, channels=params.channels,
                                what="NCSN score")


def build_ncsn(dataset: Dataset, params: NCSNParams) -> NCSN:
    """An NCSN (Song & Ermon 2019) for ``dataset`` on the dataset's support box."""
    if dataset.shape != tuple(dataset.support.shape):
        raise ValueError(f"NCSN samples in the support's shape {dataset.support.shape}, data has {dataset.shape}")
    return NCSN(build_score_net(dataset.shape, params), dataset.support, params)


def ncsn_eval_samplers(params: NCSNParams) -> list[tuple[str, dict[str, Any]]]:
    """Annealed Langevin over the trained noise levels with the paper's budget (L * T + 1 NFE)."""
    budget = {
        "n_sigmas": params.n_sigmas,
        "sigma_min": params.sigma_min,
        "sigma_max": params.sigma_max,
        "steps_per_sigma": params.steps_per_sigma,
        "eps": params.eps,
        "denoise": params.denoise,
        "init": params.init,
        "support_mode": params.support_mode,
    }
    return [("annealed_langevin", budget)]


METHODS.register(
    "ncsn",
    MethodSpec(
        name="ncsn",
        family="score",
        params=NCSNParams,
        build=build_ncsn,
        objective=ncsn_loss,
        eval_samplers=ncsn_eval_samplers,
        notebook="train_score.ipynb",
        cite="Song & Ermon 2019, Generative Modeling by Estimating Gradients of the Data Distribution",
    ),
)
