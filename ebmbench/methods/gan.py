"""GAN baselines: DCGAN, WGAN-GP and SNGAN, two players trained by one custom step each.

The model's counted ``net`` is the generator G (sampling NFE counts G calls); the discriminator
(critic) D is a separate submodule that only training uses. The three methods share one model
class and one training step and differ in loss, D normalization and optimizer defaults:

| method  | D loss / G loss                        | D norm (conv / MLP) | n_critic | Adam betas |
|---------|----------------------------------------|---------------------|----------|------------|
| dcgan   | non-saturating (Goodfellow et al. 2014) | batch / none        | 1        | (0.5, 0.999) |
| wgan_gp | Wasserstein + gradient penalty 10      | none / none         | 5        | (0.0, 0.9) |
| sngan   | hinge                                  | spectral / spectral | 1        | (0.5, 0.999) |

The betas are method parameters and override the run's adam_beta1/adam_beta2 unless set < 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.methods.base import METHODS, MethodSpec, adam
from ebmbench.nets.cifar import GAN_ARCHS, gan_nets
from ebmbench.nets.gan import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator
from ebmbench.params import param
from ebmbench.protocol import Box, GenerativeModel
from ebmbench.samplers import oneshot  # noqa: F401  (registers the "generator" sampler)


@dataclass
class DCGANParams:
    """Parameters of DCGAN (Radford et al. 2016) with the non-saturating loss (Goodfellow et al. 2014)."""

    latent_dim: int = param(32, "dimension of z ~ N(0, I)", range=">= 1")
    hidden: int = param(128, "MLP width of G and D (vector data, e.g. 2D)", range=">= 1")
    depth: int = param(3, "MLP hidden layers of G and D (vector data)", range=">= 1")
    g_channels: int = param(
        64, "conv G feature maps before its last layer (image data; x2 per halving of resolution)", range=">= 1")
    d_channels: int = param(
        64, "conv D feature maps after its first layer (image data; x2 per halving of resolution)", range=">= 1")
    n_critic: int = param(1, "D updates per G update, each on a fresh data batch", range=">= 1")
    beta1: float = param(0.5, "Adam beta1 of G and D (Radford et al. 2016); < 0: use the run's adam_beta1", range="< 1")
    beta2: float = param(0.999, "Adam beta2 of G and D; < 0: use the run's adam_beta2", range="< 1")
    support_mode: str = param(
        "none", "evaluation sampler: keep G(z) to the support by none | clamp | reflect",
        choices=("none", "clamp", "reflect"))
    arch: str = param(
        "default", 'network: "default" (by data shape) or a paper network of ebmbench.nets.cifar',
        choices=("default", *GAN_ARCHS))


@dataclass
class WGANGPParams(DCGANParams):
    """Parameters of WGAN-GP (Gulrajani et al. 2017, Algorithm 1 defaults)."""

    n_critic: int = param(5, "critic updates per generator update (Algorithm 1: n_critic = 5)", range=">= 1")
    beta1: float = param(0.0, "Adam beta1 (Algorithm 1: 0); < 0: use the run's adam_beta1", range="< 1")
    beta2: float = param(0.9, "Adam beta2 (Algorithm 1: 0.9); < 0: use the run's adam_beta2", range="< 1")
    gp_weight: float = param(10.0, "lambda of the gradient penalty lambda * (|grad D(x_hat)| - 1)^2", range=">= 0")
    # the study's random-search ranges (issue 15, ebmbench/study.py): name -> (scale, low, high) | ("choice", ...)
    search_space: ClassVar[dict[str, tuple]] = {
        "lr": ("log", 5e-5, 2e-3), "n_critic": ("int", 1, 5), "beta1": ("linear", 0.0, 0.9),
        "gp_weight": ("log", 1.0, 30.0)}


@dataclass
class SNGANParams(DCGANParams):
    """Parameters of SNGAN (Miyato et al. 2018): spectrally normalized D, hinge loss."""

    n_critic: int = param(1, "D updates per G update (Miyato et al. 2018 use 1 or 5 by setting)", range=">= 1")
    beta1: float = param(0.5, "Adam beta1 (standard-CNN setting); < 0: use the run's adam_beta1", range="< 1")
    beta2: float = param(0.999, "Adam beta2 (standard-CNN setting); < 0: use the run's adam_beta2", range="< 1")
    # the study's random-search ranges (issue 15, ebmbench/study.py): name -> (scale, low, high) | ("choice", ...)
    search_space: ClassVar[dict[str, tuple]] = {
        "lr": ("log", 5e-5, 2e-3), "n_critic": ("int", 1, 5), "beta1": ("linear", 0.0, 0.9)}


class GAN(GenerativeModel):
    """A generator G (``self.net``, counted) and a discriminator D (``self.discriminator``, not counted)."""

    family = "gan"
    capabilities = frozenset({"generate"})
    default_sampler = "generator"

    def __init__(self, generator_net: nn.Module, discriminator: nn.Module, support: Box, params: DCGANParams,
                 loss: str) -> None:
        super().__init__(generator_net, support)
        if loss not in D_LOSSES:
            raise ValueError(f"GAN loss {loss!r}: choose one of {sorted(D_LOSSES)}")
        self.discriminator = discriminator
        self.params = params
        self.loss = loss
        self.latent_shape = (params.latent_dim,)

    def generate(self, z: Tensor) -> Tensor:
        """x = G(z): exactly one counted call of the generator."""
        return self.net(z)

    def prior(self, n: int, generator: torch.Generator) -> Tensor:
        """z ~ N(0, I) of shape (n, latent_dim) from ``generator``."""
        return torch.randn((n, *self.latent_shape), generator=generator, device=self.device)


# Per-sample losses on discriminator outputs d_real = D(x), d_fake = D(G(z)).
def d_loss_non_saturating(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))) (Goodfellow et al. 2014, eq. 1)."""
    return F.softplus(-d_real) + F.softplus(d_fake)


def d_loss_wasserstein(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """D(G(z)) - D(x), the critic's loss before the penalty (Gulrajani et al. 2017, eq. 3)."""
    return d_fake - d_real


def d_loss_hinge(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """max(0, 1 - D(x)) + max(0, 1 + D(G(z))) (Miyato et al. 2018, eq. 16; Lim & Ye 2017)."""
    return F.relu(1.0 - d_real) + F.relu(1.0 + d_fake)


def g_loss_non_saturating(d_fake: Tensor) -> Tensor:
    """-log sigmoid(D(G(z))): the non-saturating generator loss (Goodfellow et al. 2014, Sec. 3)."""
    return F.softplus(-d_fake)


def g_loss_negative_critic(d_fake: Tensor) -> Tensor:
    """-D(G(z)): the generator loss of WGAN-GP and of the hinge GAN."""
    return -d_fake


D_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "non_saturating": d_loss_non_saturating, "wasserstein": d_loss_wasserstein, "hinge": d_loss_hinge,
}
G_LOSSES: dict[str, Callable[[Tensor], Tensor]] = {
    "non_saturating": g_loss_non_saturating, "wasserstein": g_loss_negative_critic, "hinge": g_loss_negative_critic,
}


def interpolate(x_real: Tensor, x_fake: Tensor, generator: torch.Generator) -> Tensor:
    """x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1] per sample (Gulrajani et al. 2017, Algorithm 1)."""
    shape = (x_real.shape[0],) + (1,) * (x_real.dim() - 1)
    eps = torch.rand(shape, generator=generator, device=x_real.device, dtype=x_real.dtype)
    return eps * x_real + (1.0 - eps) * x_fake


def gradient_penalty(critic: Callable[[Tensor], Tensor], x_hat: Tensor) -> Tensor:
    """(|grad_x D(x_hat)|_2 - 1)^2 per sample, differentiable in D's parameters (Gulrajani et al. 2017)."""
    with torch.enable_grad():
        x_hat = x_hat.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of ``module`` need no gradient inside the block (D while G is updated)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def critic_update(model: GAN, x_real: Tensor, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                  params: DCGANParams) -> dict[str, Tensor]:
    """One D step on a real batch and as many fresh G(z) (plus the gradient penalty for WGAN-GP).

    Diagnostics are 0-d float64 device tensors (no host sync; the guard reads them), float64 so that their
    means over the D steps are the same numbers as Python floats would give.
    """
    with torch.no_grad():
        x_fake = model.generate(model.prior(x_real.shape[0], generator))
    d_real, d_fake = model.discriminator(x_real), model.discriminator(x_fake)
    loss = D_LOSSES[model.loss](d_real, d_fake)
    diag = {"d_real": d_real.detach().mean().double(), "d_fake": d_fake.detach().mean().double()}
    if model.loss == "wasserstein":
        gp = gradient_penalty(model.discriminator, interpolate(x_real, x_fake, generator))
        loss = loss + params.gp_weight * gp  # type: ignore[attr-defined]
        diag["gp"] = gp.detach().mean().double()
        diag["wasserstein_estimate"] = diag["d_real"] - diag["d_fake"]
    optimizer.zero_grad(set_to_none=True)
    loss.mean().backward()
    optimizer.step()
    return {"d_loss": loss.detach().mean().double(), **diag}


def generator_update(model: GAN, batch: int, optimizer: torch.optim.Optimizer,
                     generator: torch.Generator) -> Tensor:
    """One G step on ``batch`` fresh latents, D frozen; returns the G loss (a 0-d device tensor)."""
    with frozen(model.discriminator):
        d_fake = model.discriminator(model.generate(model.prior(batch, generator)))
        loss = G_LOSSES[model.loss](d_fake).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    optimizer.step()
    return loss.detach().double()


def gan_train_step(model: GAN, next_batch: Callable[[], Tensor], optimizers: dict[str, torch.optim.Optimizer],
                   generator: torch.Generator, params: DCGANParams) -> dict[str, Tensor]:
    """n_critic D updates, each on a fresh batch, then one G update.

    Diagnostics are means over the step's D updates; "loss" is the D loss (with the penalty for WGAN-GP).
    """
    if params.n_critic < 1:
        raise ValueError(f"n_critic={params.n_critic}: need at least one D update per G update")
    d_steps, batch = [], 0
    for _ in range(params.n_critic):
        x_real = next_batch()
        batch = x_real.shape[0]
        d_steps.append(critic_update(model, x_real, optimizers["d"], generator, params))
    diag = {k: sum(d[k] for d in d_steps) / len(d_steps) for k in d_steps[0]}
    g_loss = generator_update(model, batch, optimizers["g"], generator)
    return {"loss": diag["d_loss"], **diag, "g_loss": g_loss}


def method_betas(params: DCGANParams, run_betas: tuple[float, float]) -> tuple[float, float]:
    """The method's Adam betas; a beta set < 0 falls back to the run's."""
    return (params.beta1 if params.beta1 >= 0 else run_betas[0], params.beta2 if params.beta2 >= 0 else run_betas[1])


def gan_optimizers(model: GAN, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
    """Adam for G ("g") and for D ("d") at the run's lr, with the method's betas (see ``method_betas``)."""
    b = method_betas(model.params, betas)
    return {"g": adam(model.net.parameters(), lr, b), "d": adam(model.discriminator.parameters(), lr, b)}


def build_gan_nets(dataset: Dataset, params: DCGANParams, d_norm: str) -> tuple[nn.Module, nn.Module]:
    """MLP G and D for vector data (D norm "batch" becomes "none"); DCGAN conv G and D for (C, H, W) images."""
    shape, box = dataset.shape, dataset.support
    if params.arch != "default":  # the paper pair brings its own D normalization
        return gan_nets(params.arch, shape, params.latent_dim, box.low, box.high)
    if len(shape) == 1:
        g = MLPGenerator(params.latent_dim, shape, params.hidden, params.depth)
        d = MLPDiscriminator(shape, params.hidden, params.depth, norm="none" if d_norm == "batch" else d_norm)
        return g, d
    if len(shape) == 3:
        g = ConvGenerator(params.latent_dim, shape, params.g_channels, low=box.low, high=box.high)  # type: ignore[arg-type]
        return g, ConvDiscriminator(shape, params.d_channels, norm=d_norm)  # type: ignore[arg-type]
    raise ValueError(f"GANs have nets for shapes (D,) and (C, H, W), not {shape}")


def build_gan(dataset: Dataset, params: DCGANParams, *, loss: str, d_norm: str) -> GAN:
    """A GAN for ``dataset`` with the given loss and discriminator normalization."""
    g, d = build_gan_nets(dataset, params, d_norm)
    return GAN(g, d, dataset.support, params, loss)


def gan_eval_samplers(params: DCGANParams) -> list[tuple[str, dict[str, Any]]]:
    """One-shot samples x = G(z)."""
    return [("generator", {"support_mode": params.support_mode})]


VARIANTS = {  # method -> (params, loss, D normalization, citation)
    "dcgan": (DCGANParams, "non_saturating", "batch",
              "Radford et al. 2016, Unsupervised Representation Learning with Deep Convolutional GANs; "
              "non-saturating loss of Goodfellow et al. 2014"),
    "wgan_gp": (WGANGPParams, "wasserstein", "none",
                "Gulrajani et al. 2017, Improved Training of Wasserstein GANs"),
    "sngan": (SNGANParams, "hinge", "spectral",
              "Miyato et al. 2018, Spectral Normalization for Generative Adversarial Networks"),
}
for _name, (_params, _loss, _norm, _cite) in VARIANTS.items():
    METHODS.register(
        _name,
        MethodSpec(name=_name, family="gan", params=_params, build=partial(build_gan, loss=_loss, d_norm=_norm),
                   train_step=gan_train_step, optimizers=gan_optimizers, eval_samplers=gan_eval_samplers,
                   notebook="train_gan.ipynb", cite=_cite),
    )
