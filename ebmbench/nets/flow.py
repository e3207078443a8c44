"""RealNVP: affine coupling layers with alternating binary masks (Dinh et al. 2017).

Every coupling acts on the flattened vector with an MLP conditioner (for 2D data and for 8x8
digits, 64 dimensions, an MLP is enough; the paper's convolutional ResNet conditioners and
squeeze/multi-scale architecture are left out). Masks: index parity for vectors (in 2D, first
vs second coordinate), a spatial checkerboard for images; consecutive couplings use the mask
and its complement. Batch normalization between couplings is left out, so the map is the same
in train and eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ebmbench.nets.mlp import mlp


def base_mask(shape: tuple[int, ...]) -> Tensor:
    """Flattened binary mask b: 1 on the even indices of a vector, on the (h + w)-even pixels of an image."""
    if len(shape) == 3:
        c, h, w = shape
        hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        return ((hh + ww) % 2 == 0).float().expand(c, h, w).reshape(-1)
    return (torch.arange(math.prod(shape)) % 2 == 0).float()


class AffineCoupling(nn.Module):
    """y = b*x + (1-b)*(x*exp(s(b*x)) + t(b*x)) with s = scale * tanh(.) (Dinh et al. 2017, eq. 9)."""

    def __init__(self, mask: Tensor, hidden: int, depth: int) -> None:
        super().__init__()
        dim = mask.numel()
        self.register_buffer("mask", mask.clone())
        self.st = mlp(dim, 2 * dim, hidden, depth)
        nn.init.zeros_(self.st[-1].weight)  # every coupling starts as the identity
        nn.init.zeros_(self.st[-1].bias)
        self.scale = nn.Parameter(torch.ones(dim))  # learned rescaling of the tanh log-scale

    def _s_t(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Log-scale s and shift t, zero on the masked (conditioning) coordinates."""
        raw_s, t = self.st(x * self.mask).chunk(2, dim=1)
        free = 1.0 - self.mask
        return self.scale * torch.tanh(raw_s) * free, t * free

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(y, log|det dy/dx|) with log|det| = sum of s over the transformed coordinates."""
        s, t = self._s_t(x)
        return x * torch.exp(s) + t, s.sum(dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        """x = b*y + (1-b)*(y - t(b*y)) * exp(-s(b*y)): b*y = b*x, so s and t are recomputed exactly."""
        s, t = self._s_t(y)
        return (y - t) * torch.exp(-s)


class RealNVP(nn.Module):
    """f: x -> z through ``n_couplings`` affine couplings; ``forward(z, reverse=True)`` is f^-1.

    ``forward(x)`` returns (z, log|det df/dx|); ``forward(z, reverse=True)`` returns x. One module
    serves both directions so that the model's counting wrapper sees every call.
    """

    def __init__(self, shape: tuple[int, ...], n_couplings: int = 8, hidden: int = 128, depth: int = 2) -> None:
        super().__init__()
        if n_couplings < 2:
            raise ValueError(f"n_couplings={n_couplings}: need at least 2 so that every coordinate is transformed")
        self.shape = tuple(shape)
        b = base_mask(self.shape)
        self.couplings = nn.ModuleList(
            AffineCoupling(b if k % 2 == 0 else 1.0 - b, hidden, depth) for k in range(n_couplings)
        )

    def forward(self, x: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor] | Tensor:
        h = x.reshape(x.shape[0], -1)
        if reverse:
            for layer in reversed(self.couplings):
                h = layer.inverse(h)
            return h.view_as(x)
        log_det = torch.zeros(h.shape[0], device=h.device, dtype=h.dtype)
        for layer in self.couplings:
            h, ld = layer(h)
            log_det = log_det + ld
        return h.view_as(x), log_det
