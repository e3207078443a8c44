"""Sample-based statistics: MMD, energy distance, mode coverage, support and NLL summaries.

Pure functions on tensors; they know nothing about model families. Pairwise quantities are
computed in float64 in row blocks so that N ~ 5000, D ~ 64 stays within a few hundred MB.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ebmbench.protocol import Box

_BLOCK = 1024  # rows of a pairwise block: 1024 x 5000 float64 is ~40 MB
_MAX_BANDWIDTH_POINTS = 2000


def _flat64(x: Tensor) -> Tensor:
    return x.detach().reshape(x.shape[0], -1).to(torch.float64)


def _pair_sum(a: Tensor, b: Tensor, fn: Callable[[Tensor], Tensor]) -> float:
    """Sum of fn(|a_i - b_j|) over all pairs (i, j), in row blocks of ``a``."""
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for lo in range(0, a.shape[0], _BLOCK):
        total += fn(torch.cdist(a[lo : lo + _BLOCK], b)).sum()
    return float(total)


def median_bandwidth(ref: Tensor) -> float:
    """Median heuristic (Gretton et al. 2012): median pairwise distance of the first 2000 points."""
    x = _flat64(ref[:_MAX_BANDWIDTH_POINTS])
    if x.shape[0] < 2:
        raise ValueError(f"median bandwidth needs at least 2 reference points, got {x.shape[0]}")
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1, device=x.device)
    return float(torch.cdist(x, x)[i, j].median())


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidth: float) -> float:
    """Unbiased U-statistic MMD^2 (Gretton et al. 2012, eq. 3), RBF kernel exp(-|a-b|^2 / (2 h^2))."""
    a, b = _flat64(x), _flat64(y)
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"unbiased MMD^2 needs at least 2 samples per set, got {n} and {m}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"dimension mismatch: {a.shape[1]} vs {b.shape[1]}")
    b = b.to(a.device)

    def kernel(d: Tensor) -> Tensor:
        return torch.exp(-(d**2) / (2.0 * bandwidth**2))

    # k(a, a) = 1 exactly, so the i = j terms of the within-set sums are removed as n and m.
    kxx = (_pair_sum(a, a, kernel) - n) / (n * (n - 1))
    kyy = (_pair_sum(b, b, kernel) - m) / (m * (m - 1))
    kxy = _pair_sum(a, b, kernel) / (n * m)
    return kxx + kyy - 2.0 * kxy


def mmd_with_floor(
    samples: Tensor, ref: Tensor, floor_ref: Tensor, bandwidth: float | None = None
) -> dict[str, Any]:
    """MMD^2 of samples vs ref beside the real-vs-real floor, both at equal N (Gretton et al. 2012)."""
    n = min(len(samples), len(ref), len(floor_ref))
    samples, ref, floor_ref = samples[:n], ref[:n], floor_ref[:n]
    h = median_bandwidth(ref) if bandwidth is None else float(bandwidth)
    return {
        "mmd2": mmd2_unbiased(samples, ref, h),
        "floor": mmd2_unbiased(floor_ref, ref, h),
        "bandwidth": h,
        "kernel": "rbf",
        "n": n,
    }


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance (Székely & Rizzo 2013), V-statistic sqrt(2E|X-Y| - E|X-X'| - E|Y-Y'|).

    Means run over all pairs including i = j, with the Euclidean norm in D dimensions;
    in 1D this equals ``scipy.stats.energy_distance`` (unweighted).
    """
    a, b = _flat64(x), _flat64(y)
    b = b.to(a.device)
    n, m = a.shape[0], b.shape[0]

    def ident(d: Tensor) -> Tensor:
        return d

    exy = _pair_sum(a, b, ident) / (n * m)
    exx = _pair_sum(a, a, ident) / (n * n)
    eyy = _pair_sum(b, b, ident) / (m * m)
    return math.sqrt(max(2.0 * exy - exx - eyy, 0.0))


def mode_coverage(mode_ids: Tensor, n_modes: int, min_fraction: float = 0.2) -> dict[str, Any]:
    """Mode coverage and high-quality fraction (Srivastava et al. 2017, VEEGAN protocol).

    A mode counts as covered when it holds at least max(1, min_fraction * N / n_modes) of the
    N samples; id -1 marks a sample off the high-density region.
    """
    ids = mode_ids.reshape(-1).long().cpu()
    if ids.numel() and (ids.min() < -1 or ids.max() >= n_modes):
        raise ValueError(f"mode ids must lie in [-1, {n_modes - 1}]")
    n = ids.numel()
    counts = torch.bincount(ids[ids >= 0], minlength=n_modes)
    threshold = max(1.0, min_fraction * n / n_modes)
    return {
        "coverage": float((counts >= threshold).double().mean()),
        "high_quality_fraction": float((ids >= 0).double().mean()) if n else 0.0,
        "counts": counts.tolist(),
        "threshold": threshold,
    }


def off_support_fraction(x: Tensor, box: Box) -> float:
    """Fraction of samples with any coordinate outside the support box."""
    return 1.0 - float(box.contains(x).double().mean())


def mean_nll(log_prob: Tensor) -> tuple[float, float]:
    """Mean negative log-likelihood and its standard error std / sqrt(N) (NaN for N < 2)."""
    nll = -log_prob.detach().reshape(-1).to(torch.float64)
    n = nll.numel()
    if n == 0:
        raise ValueError("mean_nll needs at least one log-probability")
    se = float(nll.std() / math.sqrt(n)) if n > 1 else math.nan
    return float(nll.mean()), se
