"""GAN generators and discriminators: MLPs for vector data, DCGAN-style convnets for images.

Conv nets follow Radford et al. 2016 (DCGAN): 4x4 stride-2 (transposed) convolutions, BatchNorm
and ReLU in G with a tanh output, LeakyReLU(0.2) in D, weights drawn from N(0, 0.02). The
discriminator's normalization is chosen per method: "batch" (DCGAN), "none" (the WGAN-GP
critic: batch norm would make the per-sample gradient penalty invalid, Gulrajani et al. 2017)
or "spectral" (SNGAN, Miyato et al. 2018, via torch's spectral_norm parametrization).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ebmbench.nets.mlp import mlp

D_NORMS = ("batch", "none", "spectral")
MIN_SIZE = 4  # smallest feature map of the conv nets (DCGAN's 4x4)


def spatial_plan(size: int) -> tuple[int, int]:
    """(s0, n) with size = s0 * 2^n: halve while even and the result stays >= 4 (8 -> 4, 28 -> 7, 32 -> 4)."""
    s, n = size, 0
    while s % 2 == 0 and s // 2 >= MIN_SIZE:
        s, n = s // 2, n + 1
    if n == 0:
        raise ValueError(f"image size {size} cannot be halved to a >= {MIN_SIZE} feature map; need size 8, 28, 32, ...")
    return s, n


def dcgan_init(module: nn.Module) -> None:
    """Radford et al. 2016: conv weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _check_norm(norm: str) -> None:
    if norm not in D_NORMS:
        raise ValueError(f"discriminator norm {norm!r}: choose one of {D_NORMS}")


def _spectral(layer: nn.Module, norm: str) -> nn.Module:
    """Wrap ``layer`` in spectral_norm for norm "spectral"; initialize it first (init acts on the raw weight)."""
    dcgan_init(layer)
    return spectral_norm(layer) if norm == "spectral" else layer


class MLPGenerator(nn.Module):
    """G(z) for vector data: an MLP with SiLU activations and a linear (unbounded) output."""

    def __init__(self, latent_dim: int, shape: tuple[int, ...], hidden: int = 128, depth: int = 3) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.f = mlp(latent_dim, math.prod(shape), hidden, depth)

    def forward(self, z: Tensor) -> Tensor:
        return self.f(z).view(z.shape[0], *self.shape)


class MLPDiscriminator(nn.Module):
    """D(x) -> one logit/critic value per sample: LeakyReLU(0.2) MLP; norm "none" or "spectral"."""

    def __init__(self, shape: tuple[int, ...], hidden: int = 128, depth: int = 3, norm: str = "none") -> None:
        super().__init__()
        _check_norm(norm)
        if norm == "batch":
            raise ValueError("MLP discriminators take norm 'none' or 'spectral' (batch norm is for conv D)")
        layers: list[nn.Module] = []
        d = math.prod(shape)
        for _ in range(depth):
            layers += [_spectral(nn.Linear(d, hidden), norm), nn.LeakyReLU(0.2)]
            d = hidden
        layers.append(_spectral(nn.Linear(d, 1), norm))
        self.f = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.f(x.flatten(1)).squeeze(-1)


class ConvGenerator(nn.Module):
    """DCGAN generator: z -> s0 x s0 by a transposed conv, n stride-2 upsamplings, tanh mapped to [low, high]."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], channels: int = 64,
                 low: float = -1.0, high: float = 1.0) -> None:
        super().__init__()
        c, h, w = shape
        if h != w:
            raise ValueError(f"conv generator needs square images, got {h}x{w}")
        s0, n = spatial_plan(h)
        widths = [channels * 2 ** (n - 1 - i) for i in range(n)]  # feature maps halve as resolution doubles
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], s0, 1, 0, bias=False),  # (z, 1, 1) -> (w0, s0, s0)
            nn.BatchNorm2d(widths[0]), nn.ReLU(),
        ]
        for i in range(n):
            last = i == n - 1
            c_out = c if last else widths[i + 1]
            layers.append(nn.ConvTranspose2d(widths[i], c_out, 4, 2, 1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
        self.f = nn.Sequential(*layers)
        self.low, self.high = low, high
        self.apply(dcgan_init)

    def forward(self, z: Tensor) -> Tensor:
        y = torch.tanh(self.f(z.view(z.shape[0], -1, 1, 1)))
        return self.low + (self.high - self.low) * (y + 1.0) / 2.0


class ConvDiscriminator(nn.Module):
    """DCGAN discriminator: n stride-2 convs with LeakyReLU(0.2), then an s0 x s0 conv to one value."""

    def __init__(self, shape: tuple[int, int, int], channels: int = 64, norm: str = "batch") -> None:
        super().__init__()
        _check_norm(norm)
        c, h, w = shape
        if h != w:
            raise ValueError(f"conv discriminator needs square images, got {h}x{w}")
        s0, n = spatial_plan(h)
        layers: list[nn.Module] = []
        c_in = c
        for i in range(n):
            c_out = channels * 2**i
            layers.append(_spectral(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm != "batch" or i == 0), norm))
            if norm == "batch" and i > 0:  # DCGAN: no batch norm on the input layer
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c_out
        layers.append(_spectral(nn.Conv2d(c_in, 1, s0, 1, 0), norm))
        self.f = nn.Sequential(*layers)
        for m in self.f:
            if isinstance(m, nn.BatchNorm2d):
                dcgan_init(m)

    def forward(self, x: Tensor) -> Tensor:
        return self.f(x).flatten(1).squeeze(-1)
