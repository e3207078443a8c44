"""DDPM: a noise predictor trained with L_simple on diffusers' schedulers (Ho et al. 2020).

Capability ``score``: the discrete schedule is the VP process x_t = (x0 + sigma_t z) / sqrt(1 + sigma_t^2),
sigma_t = sqrt((1 - ab_t) / ab_t) (``ebmbench.noise.VPNoise``), and in the scaled coordinates
x_hat = x_t / sqrt(ab) = x0 + sigma z the score is grad log p_sigma(x_hat) = -eps_theta(x_t, t(sigma)) / sigma
(Song et al. 2021, eq. 9-11; Karras et al. 2022, Table 1), with t(sigma) linear in log sigma between grid points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.methods.base import METHODS, MethodSpec
from ebmbench.nets.cifar import EPS_ARCHS, eps_net
from ebmbench.nets.time_conditioned import time_conditioned_net
from ebmbench.noise import VPNoise, as_sigma, per_sample
from ebmbench.params import param
from ebmbench.protocol import Box, GenerativeModel

if TYPE_CHECKING:  # diffusers loads on first use (seconds of import for notebooks that never need it)
    from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler


@dataclass
class DDPMParams:
    """Parameters of DDPM (Ho et al. 2020): the diffusers schedule, the eps net and eval budgets."""

    num_train_timesteps: int = param(1000, "T, discrete timesteps t in [0, T)", range=">= 1")
    beta_schedule: str = param(
        "linear", "beta_t linear in t (Ho et al. 2020, Sec. 4)",
        choices=("linear", "scaled_linear", "squaredcos_cap_v2"))
    beta_start: float = param(1e-4, "beta_1", range="in (0, 1)")
    beta_end: float = param(0.02, "beta_T", range="in (0, 1)")
    variance_type: str = param(
        "fixed_small", "ancestral step variance = posterior beta~_t (Ho et al. eq. 7)",
        choices=("fixed_small", "fixed_small_log", "fixed_large"))
    timestep_spacing: str = param(
        "leading", "which timesteps a shortened sampler visits: t = k * (T // steps)",
        choices=("leading", "trailing", "linspace"))
    clip_sample: bool = param(
        False, "x0-prediction is NOT clipped to [-1, 1]: data may lie outside [-1, 1] (2D toys live on [-4, 4]).")
    prediction_type: str = param("epsilon", "the net predicts the added noise eps", choices=("epsilon",))
    hidden: int = param(128, "TimeMLP width (vector data, e.g. 2D)", range=">= 1")
    depth: int = param(3, "TimeMLP hidden layers (vector data, e.g. 2D)", range=">= 1")
    channels: str = param("32,64", "UNet2DModel block widths (image data), one halving per block", grammar="int list")
    ddpm_steps: int = param(1000, "ancestral sampler steps at evaluation", range=">= 1")
    ddim_steps: int = param(50, "DDIM steps at evaluation", range=">= 1")
    ddim_eta: float = param(0.0, "DDIM eta at evaluation (0 = deterministic, 1 = DDPM-like noise)", range="in [0, 1]")
    dpm_steps: int = param(20, "DPM-Solver++(2M) steps at evaluation (Lu et al. 2022)", range=">= 1")
    arch: str = param(
        "default", 'network: "default" (by data shape) or a paper network of ebmbench.nets.cifar',
        choices=("default", *EPS_ARCHS))
    step_sweep: str = param("", 'e.g. "10,20,50,100,1000": evaluate every sampler at each step count instead',
                             grammar="int list or ''")
    # the study's random-search ranges (issue 15, ebmbench/study.py): name -> (scale, low, high) | ("choice", ...)
    search_space: ClassVar[dict[str, tuple]] = {
        "lr": ("log", 1e-4, 3e-3), "ema_decay": ("linear", 0.9, 0.999), "hidden": ("int_log", 64, 256),
        "beta_end": ("log", 0.005, 0.05)}


def scheduler_settings(params: DDPMParams) -> dict[str, Any]:
    """The pinned diffusers scheduler settings derived from ``params`` (shared by DDPM and DDIM)."""
    return {
        "num_train_timesteps": params.num_train_timesteps,
        "beta_schedule": params.beta_schedule,
        "beta_start": params.beta_start,
        "beta_end": params.beta_end,
        "variance_type": params.variance_type,
        "timestep_spacing": params.timestep_spacing,
        "clip_sample": params.clip_sample,
        "prediction_type": params.prediction_type,
        "thresholding": False,
        "steps_offset": 0,
        "set_alpha_to_one": True,  # DDIM only: alpha_bar at "t = -1" is 1, so its last step lands on x0
    }


class DDPM(GenerativeModel):
    """Denoising diffusion model with an eps net eps_theta(x_t, t) (Ho et al. 2020)."""

    family = "diffusion"
    capabilities = frozenset({"eps_prediction", "score"})
    default_sampler = "ddpm"

    def __init__(
        self,
        net: nn.Module,
        support: Box,
        params: DDPMParams | None = None,
        shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(net, support)
        self.params = params if params is not None else DDPMParams()
        self.shape = tuple(shape) if shape is not None else tuple(support.shape)  # one sample's shape
        self.noise_process = VPNoise(self.make_ddpm_scheduler().alphas_cumprod)  # the schedule as sigma_t

    def eps(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Predicted noise eps_theta(x_t, t) (Ho et al. 2020, eq. 14); counted through ``self.net``."""
        return self.net(x_t, t)

    def score(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """grad log p_sigma(x) at x = x0 + sigma z (scaled coordinates) = -eps_theta(x / sqrt(1+sigma^2), t) / sigma."""
        self.noise_process.check(sigma)
        sigma = as_sigma(sigma, x)
        x_t = per_sample(self.noise_process.scale(sigma), x) * x
        return -self.eps(x_t, self.noise_process.timestep(sigma)) / per_sample(sigma, x)

    def scheduler_config(self) -> dict[str, Any]:
        """The pinned scheduler settings this model trains and samples with."""
        return scheduler_settings(self.params)

    def train_alphas_cumprod(self, params: DDPMParams, x: Tensor) -> Tensor:
        """alpha_bar_t of the training schedule on x's device and dtype, built once from a diffusers
        DDPMScheduler (a scheduler per step cost about 0.3 ms of a 1.4 ms 2D training step)."""
        key = (x.device, x.dtype)
        cached = self.__dict__.get("_train_ab")
        if cached is None or cached[0] != key:
            if scheduler_settings(params) != self.scheduler_config():
                raise ValueError("ddpm_loss: params' schedule differs from the model's; train and sample must agree")
            ab = self.make_ddpm_scheduler().alphas_cumprod.to(device=x.device, dtype=x.dtype)
            self.__dict__["_train_ab"] = cached = (key, ab)
        return cached[1]

    def make_ddpm_scheduler(self) -> DDPMScheduler:
        """A fresh diffusers DDPMScheduler with the pinned settings (Ho et al. 2020)."""
        cfg = self.scheduler_config()
        cfg.pop("set_alpha_to_one")
        from diffusers import DDPMScheduler

        return DDPMScheduler(**cfg)

    def make_ddim_scheduler(self) -> DDIMScheduler:
        """A fresh diffusers DDIMScheduler with the same betas and settings (Song et al. 2021)."""
        cfg = self.scheduler_config()
        cfg.pop("variance_type")  # DDIM's variance is sigma_t(eta), set per step
        from diffusers import DDIMScheduler

        return DDIMScheduler(**cfg)

    def make_ddim_inverse_scheduler(self) -> DDIMInverseScheduler:
        """DDIM run forwards, x0 -> x_T, over the DDIM sampler's timesteps (Song et al. 2021, Sec. 4.3)."""
        cfg = self.scheduler_config()
        cfg.pop("variance_type")
        cfg.pop("thresholding")  # not a DDIMInverseScheduler option; it never thresholds
        from diffusers import DDIMInverseScheduler

        return DDIMInverseScheduler(**cfg)

    def make_dpm_scheduler(self) -> DPMSolverMultistepScheduler:
        """DPM-Solver++(2M), data prediction, same betas and spacing (Lu et al. 2022, Algorithm 2)."""
        cfg = self.scheduler_config()
        for key in ("variance_type", "clip_sample", "set_alpha_to_one"):  # no such DPM-Solver options
            cfg.pop(key)
        from diffusers import DPMSolverMultistepScheduler

        return DPMSolverMultistepScheduler(
            **cfg,
            algorithm_type="dpmsolver++",
            solver_order=2,
            solver_type="midpoint",
            lower_order_final=True,  # with < 15 steps, the second-to-last step is first order too
            final_sigmas_type="zero",  # the last step (first order) lands on sigma = 0: the x0 prediction
        )


def ddpm_loss(
    model: DDPM, x0: Tensor, generator: torch.Generator, params: DDPMParams
) -> tuple[Tensor, dict[str, float]]:
    """L_simple = |eps_theta(x_t, t) - eps|^2, t ~ U{0..T-1} (Ho et al. 2020, eq. 14)."""
    ab = model.train_alphas_cumprod(params, x0)
    b = x0.shape[0]
    t = torch.randint(0, params.num_train_timesteps, (b,), generator=generator, device=x0.device)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = add_noise(ab, x0, eps, t)
    loss = (model.eps(x_t, t) - eps).pow(2).flatten(1).mean(dim=1)
    return loss, {"loss": loss.mean().detach()}  # a 0-d tensor: read on the host only when the guard syncs


def add_noise(alphas_cumprod: Tensor, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4), the same float operations
    as diffusers' ``DDPMScheduler.add_noise``."""
    ab = alphas_cumprod[t]
    shape = (-1, *([1] * (x0.dim() - 1)))
    return (ab**0.5).flatten().view(shape) * x0 + ((1 - ab) ** 0.5).flatten().view(shape) * eps


def build_eps_net(shape: tuple[int, ...], params: DDPMParams) -> nn.Module:
    """TimeMLP for vector data (D,), a small UNet for images (C, H, W)."""
    if params.arch != "default":
        return eps_net(params.arch, shape)
    return time_conditioned_net(shape, hidden=params.hidden, depth=params.depth, channels=params.channels,
                                what="DDPM eps")


def build_ddpm(dataset: Dataset, params: DDPMParams) -> DDPM:
    """A DDPM (Ho et al. 2020) for ``dataset``: eps net by data shape, the dataset's support box."""
    return DDPM(build_eps_net(dataset.shape, params), dataset.support, params, shape=dataset.shape)


def ddpm_eval_samplers(params: DDPMParams) -> list[tuple[str, dict[str, Any]]]:
    """Ancestral DDPM (Ho et al. 2020), DDIM (Song et al. 2021) and DPM-Solver++ (Lu et al. 2022)."""
    if params.step_sweep:
        steps = [int(k) for k in params.step_sweep.split(",")]
        return [(name, {"steps": k, **extra}) for name, extra in
                (("ddpm", {}), ("ddim", {"eta": params.ddim_eta}), ("dpm_solver", {})) for k in steps]
    return [
        ("ddpm", {"steps": params.ddpm_steps}),
        ("ddim", {"steps": params.ddim_steps, "eta": params.ddim_eta}),
        ("dpm_solver", {"steps": params.dpm_steps}),
    ]


METHODS.register(
    "ddpm",
    MethodSpec(
        name="ddpm",
        family="diffusion",
        params=DDPMParams,
        build=build_ddpm,
        objective=ddpm_loss,
        eval_samplers=ddpm_eval_samplers,
        notebook="train_diffusion.ipynb",
        cite="Ho et al. 2020, Denoising Diffusion Probabilistic Models",
    ),
)
