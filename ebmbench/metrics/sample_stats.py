"""Sample-based statistics: MMD (median and multi-scale), energy distance, k-NN entropy and reverse KL,
mode coverage and mode-weight total variation, support and NLL summaries.

Pure functions on tensors; they know nothing about model families. Pairwise quantities are
computed in float64 in row blocks so that N ~ 5000, D ~ 64 stays within a few hundred MB.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln
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


def _mmd_sets(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, int, int]:
    """Both sets flattened to float64 on x's device, with their sizes; at least 2 each, equal dimension."""
    a, b = _flat64(x), _flat64(y)
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"unbiased MMD^2 needs at least 2 samples per set, got {n} and {m}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"dimension mismatch: {a.shape[1]} vs {b.shape[1]}")
    return a, b.to(a.device), n, m


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidth: float) -> float:
    """Unbiased U-statistic MMD^2 (Gretton et al. 2012, eq. 3), RBF kernel exp(-|a-b|^2 / (2 h^2))."""
    a, b, n, m = _mmd_sets(x, y)

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


def mmd2_multiscale(x: Tensor, y: Tensor, bandwidths: tuple[float, ...]) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with the mean of RBF kernels at several bandwidths.

    k(a, b) = (1/J) sum_j exp(-|a-b|^2 / (2 h_j^2)), a characteristic kernel that resolves every listed
    scale (a mixture of Gaussian kernels, cf. Li et al. 2015, generative moment matching networks).
    """
    h = torch.as_tensor(bandwidths, dtype=torch.float64)
    if h.numel() == 0 or bool((h <= 0).any()):
        raise ValueError(f"bandwidths must be a non-empty list of positive lengths, got {bandwidths}")
    a, b, n, m = _mmd_sets(x, y)
    inv = (-0.5 / h**2).tolist()

    def kernel(d: Tensor) -> Tensor:  # in place on the distance block: no fresh 8 MB buffers per bandwidth
        d2, out, buf = d.square_(), torch.zeros_like(d), torch.empty_like(d)
        for c in inv:
            out += torch.mul(d2, c, out=buf).exp_()
        return out.div_(len(inv))

    # k(a, a) = 1 exactly, so the i = j terms of the within-set sums are removed as n and m.
    kxx = (_pair_sum(a, a, kernel) - n) / (n * (n - 1))
    kyy = (_pair_sum(b, b, kernel) - m) / (m * (m - 1))
    kxy = _pair_sum(a, b, kernel) / (n * m)
    return kxx + kyy - 2.0 * kxy


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


def mode_tv(mode_ids: Tensor, reference: Tensor) -> dict[str, Any]:
    """Total variation between mode-weight histograms over (modes, off) (cf. Srivastava et al. 2017, VEEGAN).

    ``reference`` [M + 1] holds the exact probabilities of modes 0..M-1 and, last, of the off region
    (id -1: below the high-density cut); TV = 1/2 sum_m |q_m - p_m| over the M + 1 bins.
    """
    p = reference.reshape(-1).to(torch.float64).cpu()
    n_modes, ids = p.numel() - 1, mode_ids.reshape(-1).long().cpu()
    if ids.numel() == 0:
        raise ValueError("mode_tv needs at least one sample")
    if ids.min() < -1 or ids.max() >= n_modes:
        raise ValueError(f"mode ids must lie in [-1, {n_modes - 1}]")
    counts = torch.bincount(torch.where(ids < 0, n_modes, ids), minlength=n_modes + 1)
    q = counts.double() / ids.numel()
    return {"tv": 0.5 * float((q - p).abs().sum()), "high_quality_fraction": float(1.0 - q[-1]),
            "counts": counts[:-1].tolist(), "off_count": int(counts[-1])}


def knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance from each point to its k-th nearest other point (a scipy cKDTree query, float64)."""
    a = _flat64(x).cpu().numpy()
    if not 1 <= k < len(a):
        raise ValueError(f"k={k}: need 1 <= k < N = {len(a)}")
    dist, _ = cKDTree(a).query(a, k=k + 1)  # the first neighbour is the point itself (distance 0)
    return torch.from_numpy(np.ascontiguousarray(dist[:, k]))


def knn_entropy_terms(x: Tensor, k: int, min_radius: float) -> tuple[Tensor, int]:
    """Per-point terms h_i of the Kozachenko-Leonenko (1987) entropy estimate, H = mean_i h_i, and the clamp count.

    h_i = psi(N) - psi(k) + log V_d + d log r_i (Kraskov et al. 2004, eq. 20), r_i the k-NN radius and V_d the
    unit-ball volume; radii below ``min_radius`` (duplicates) are raised to it, so h_i stays finite.
    """
    if not min_radius > 0:
        raise ValueError(f"min_radius={min_radius}: must be positive (duplicate points have radius 0)")
    r = knn_radii(x, k)
    n, d = r.numel(), x[0].numel()
    log_vd = 0.5 * d * math.log(math.pi) - float(gammaln(0.5 * d + 1.0))
    log_r = r.clamp_min(min_radius).log()
    return float(digamma(n) - digamma(k)) + log_vd + d * log_r, int((r < min_radius).sum())


def knn_entropy(x: Tensor, k: int, min_radius: float = 1e-12) -> float:
    """Kozachenko-Leonenko (1987) k-NN estimate of the differential entropy H(q) of the samples x, in nats."""
    return float(knn_entropy_terms(x, k, min_radius)[0].mean())


def reverse_kl(x: Tensor, log_p: Tensor, k: int, min_radius: float) -> dict[str, Any]:
    """KL(q||p) = -H(q) - E_q log p from samples x ~ q, the exact log p(x), and a k-NN entropy of q.

    H(q) is the Kozachenko-Leonenko (1987) estimate; the standard error is std_i(t_i) / sqrt(N) of the
    per-sample terms t_i = -h_i - log p(x_i) (it ignores the weak dependence between k-NN radii).
    """
    lp = log_p.detach().reshape(-1).to(torch.float64).cpu()
    if lp.numel() != len(x):
        raise ValueError(f"{len(x)} samples but {lp.numel()} log-densities")
    if not bool(torch.isfinite(lp).all()):
        raise ValueError(f"log p is not finite at {int((~torch.isfinite(lp)).sum())} of {len(lp)} samples")
    h, clamped = knn_entropy_terms(x, k, min_radius)
    t = -h - lp
    return {"kl": float(t.mean()), "se": float(t.std() / math.sqrt(t.numel())), "entropy": float(h.mean()),
            "cross_entropy": float(-lp.mean()), "n_clamped": clamped, "k": k, "n": t.numel()}


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
