"""Exact-likelihood metrics for 2D energies: log Z by quadrature and held-out NLL.

The energy callable takes a (B, 2) tensor of ``dtype`` (float32 by default) on ``device``
and returns (B,) energies E(x), with p(x) = exp(-E(x)) / Z on the box; it may be a torch
module in eval mode. It is evaluated in chunks under ``torch.no_grad()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ebmbench.metrics.sample_stats import mean_nll
from ebmbench.protocol import Box

_GL_ORDER = 8  # Gauss-Legendre nodes per panel
_CHUNK = 65536  # energy evaluations per call

Energy = Callable[[Tensor], Tensor]


def _gauss_legendre_axis(low: float, high: float, n: int) -> tuple[Tensor, Tensor]:
    """Composite Gauss-Legendre nodes and weights on [low, high]: ceil(n / p) panels of p = min(8, n)."""
    order = min(_GL_ORDER, n)
    panels = math.ceil(n / order)
    ref_x, ref_w = np.polynomial.legendre.leggauss(order)  # on [-1, 1]
    width = (high - low) / panels
    left = low + width * np.arange(panels)[:, None]
    nodes = left + 0.5 * width * (ref_x[None, :] + 1.0)
    weights = np.broadcast_to(0.5 * width * ref_w[None, :], nodes.shape)
    return torch.from_numpy(nodes.reshape(-1).copy()), torch.from_numpy(weights.reshape(-1).copy())


def _energies(energy: Energy, x: Tensor, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """E(x) as float64 on the CPU, evaluated in chunks of the leading dimension under no_grad."""
    out = []
    with torch.no_grad():
        for lo in range(0, x.shape[0], _CHUNK):
            e = energy(x[lo : lo + _CHUNK].to(device=device, dtype=dtype))
            out.append(e.reshape(-1).to(device="cpu", dtype=torch.float64))
    return torch.cat(out)


def _log_z_grid(energy: Energy, box: Box, n: int, dtype: torch.dtype, device: torch.device | str) -> float:
    nodes, weights = _gauss_legendre_axis(box.low, box.high, n)
    gx, gy = torch.meshgrid(nodes, nodes, indexing="ij")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    log_w = (weights[:, None].log() + weights[None, :].log()).reshape(-1)
    e = _energies(energy, points, dtype, device)
    return float(torch.logsumexp(-e + log_w, dim=0))


def log_partition_quadrature(
    energy: Energy,
    box: Box,
    n: int = 512,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[float, float]:
    """log Z = log of the box integral of exp(-E) by composite Gauss-Legendre (Davis & Rabinowitz 1984).

    Tensor-product rule with about n nodes per axis (ceil(n / 8) panels of 8 nodes), summed as a
    float64 logsumexp of -E + log w. Returns (log_Z, err) where err = |log Z(n) - log Z(n // 2)|
    is a grid-refinement estimate of the quadrature error, not a bound.
    """
    if box.dim != 2:
        raise ValueError(
            f"quadrature is only tractable for 2D; use AIS (issue 6): box has dimension {box.dim}"
        )
    if n < 2:
        raise ValueError(f"n={n}: need at least 2 nodes per axis for the refinement estimate")
    log_z = _log_z_grid(energy, box, n, dtype, device)
    coarse = _log_z_grid(energy, box, n // 2, dtype, device)
    return log_z, abs(log_z - coarse)


def heldout_nll(
    energy: Energy,
    x_test: Tensor,
    log_z: float,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[float, float]:
    """Held-out NLL in nats, mean of E(x) + log Z, and its standard error (x_test's device by default)."""
    e = _energies(energy, x_test, dtype, device or x_test.device)
    return mean_nll(-(e + log_z))
