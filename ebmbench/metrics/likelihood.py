"""Exact-likelihood metrics for 2D energies: log Z by quadrature, held-out NLL, KL to an exact density.

The energy callable takes a (B, 2) tensor of ``dtype`` (float32 by default) on ``device``
and returns (B,) energies E(x), with p(x) = exp(-E(x)) / Z on the box; it may be a torch
module in eval mode. It is evaluated in chunks under ``torch.no_grad()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ebmbench.data.base import Dataset
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


def _grid(box: Box, n: int) -> tuple[Tensor, Tensor]:
    """(n'^2, 2) float64 nodes of the tensor-product Gauss-Legendre rule on a 2D box, and their log weights."""
    nodes, weights = _gauss_legendre_axis(box.low, box.high, n)
    gx, gy = torch.meshgrid(nodes, nodes, indexing="ij")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    return points, (weights[:, None].log() + weights[None, :].log()).reshape(-1)


def _log_z_grid(energy: Energy, box: Box, n: int, dtype: torch.dtype, device: torch.device | str) -> float:
    points, log_w = _grid(box, n)
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


def point_nll(
    energy: Energy,
    x_test: Tensor,
    log_z: float,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """E(x) + log Z per test point, float64 on the CPU (x_test's device by default)."""
    return _energies(energy, x_test, dtype, device or x_test.device) + log_z


def heldout_nll(
    energy: Energy,
    x_test: Tensor,
    log_z: float,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[float, float]:
    """Held-out NLL in nats, mean of E(x) + log Z, and its standard error (x_test's device by default)."""
    return mean_nll(-point_nll(energy, x_test, log_z, device, dtype))


def log_partition_refined(
    energy: Energy,
    box: Box,
    tol: float = 1e-4,
    n_start: int = 64,
    n_max: int = 2048,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[float, float, int]:
    """log Z by composite Gauss-Legendre, doubling the nodes per axis until it is stable (Davis & Rabinowitz 1984).

    Starts at ``n_start`` nodes per axis and doubles until |log Z(n) - log Z(n / 2)| < tol or n reaches
    ``n_max``. Returns (log_Z, err, n): the finest value, its refinement error estimate (not a bound) and
    the nodes per axis it used; err >= tol means the grid did not converge within n_max.
    """
    if box.dim != 2:
        raise ValueError(f"quadrature is only tractable for 2D; use AIS: box has dimension {box.dim}")
    if not (tol > 0 and 2 <= n_start <= n_max):
        raise ValueError(f"need tol > 0 and 2 <= n_start <= n_max, got tol={tol}, n_start={n_start}, n_max={n_max}")
    n, coarse = n_start, _log_z_grid(energy, box, n_start // 2, dtype, device)
    while True:
        fine = _log_z_grid(energy, box, n, dtype, device)
        if abs(fine - coarse) < tol or 2 * n > n_max:
            return fine, abs(fine - coarse), n
        n, coarse = 2 * n, fine


def sample_grid(
    energy: Energy,
    box: Box,
    count: int,
    generator: torch.Generator,
    cells: int = 256,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Draws from the piecewise-constant density exp(-E(cell centre)) on a cells x cells grid over a 2D box.

    A cell is chosen with probability proportional to exp(-E) at its centre, then a point uniformly in it:
    the target density up to grid resolution (it converges to exp(-E) / Z as the grid is refined).
    """
    if box.dim != 2:
        raise ValueError(f"grid sampling is only tractable for 2D: box has dimension {box.dim}")
    width = (box.high - box.low) / cells
    centres = box.low + width * (torch.arange(cells, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(centres, centres, indexing="ij")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    log_mass = -_energies(energy, points, dtype, device)
    probs = torch.softmax(log_mass, dim=0)
    idx = torch.multinomial(probs.to(generator.device), count, replacement=True, generator=generator).cpu()
    u = torch.rand((count, 2), generator=generator, device=generator.device, dtype=torch.float64).cpu()
    x = points[idx] + (u - 0.5) * width
    return box.clamp(x).to(device=device, dtype=dtype)


# ---------------------------------------------------------------- KL between a 2D model and an exact density

KL_KEYS = ("kl_data_model", "kl_model_data", "log_z_model", "log_mass_data")


def _kl_sum(log_a: Tensor, log_b: Tensor, log_w: Tensor) -> float:
    """sum_i w_i a_i (log a_i - log b_i): KL(a || b) by the rule; nodes where a underflows to 0 add nothing."""
    mass = (log_a + log_w).exp()
    return float(torch.where(mass > 0, mass * (log_a - log_b), torch.zeros_like(mass)).sum())


def kl_on_grid(log_q: Tensor, log_p: Tensor, log_w: Tensor) -> dict[str, float]:
    """KL(p || q) and KL(q || p) of unnormalized log-densities at the nodes of one rule, each normalized by it.

    log Z = logsumexp(log f + log w) for both, so both are densities on the box (Davis & Rabinowitz 1984).
    """
    log_zq, log_zp = torch.logsumexp(log_q + log_w, 0), torch.logsumexp(log_p + log_w, 0)
    lq, lp = log_q - log_zq, log_p - log_zp
    return {"kl_data_model": _kl_sum(lp, lq, log_w), "kl_model_data": _kl_sum(lq, lp, log_w),
            "log_z_model": float(log_zq), "log_mass_data": float(log_zp)}


def _kl_at(energy: Energy, log_p: Energy, box: Box, n: int, dtype: torch.dtype, device: torch.device | str
           ) -> dict[str, float]:
    points, log_w = _grid(box, n)
    return kl_on_grid(-_energies(energy, points, dtype, device), log_p(points).double().cpu(), log_w)


def model_kl_quadrature(
    energy: Energy,
    log_p: Energy,
    box: Box,
    tol: float = 1e-3,
    n_start: int = 64,
    n_max: int = 2048,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """KL(p || q) and KL(q || p), q = exp(-E) / Z and p both normalized on a 2D box, by refined Gauss-Legendre.

    ``log_p`` is the exact data log-density (float64 nodes in, (N,) out). Doubles the nodes per axis from
    ``n_start`` until both KLs, log Z and log of p's mass on the box change by less than ``tol`` or n reaches
    ``n_max`` (Davis & Rabinowitz 1984); returns the finest values, their refinement errors, the grid and whether
    it converged.
    """
    if box.dim != 2:
        raise ValueError(f"quadrature is only tractable for 2D: box has dimension {box.dim}")
    if not (tol > 0 and 2 <= n_start <= n_max):
        raise ValueError(f"need tol > 0 and 2 <= n_start <= n_max, got tol={tol}, n_start={n_start}, n_max={n_max}")
    n, coarse = n_start, _kl_at(energy, log_p, box, n_start // 2, dtype, device)
    while True:
        fine = _kl_at(energy, log_p, box, n, dtype, device)
        errors = {k: abs(fine[k] - coarse[k]) for k in KL_KEYS}
        if max(errors.values()) < tol or 2 * n > n_max:
            return {**fine, "quadrature_errors": errors, "grid": n, "converged": max(errors.values()) < tol}
        n, coarse = 2 * n, fine


# ---------------------------------------------------------------- the test points and the paired forward KL


def heldout_points(dataset: Dataset, max_points: int = 0) -> Tensor:
    """The first ``max_points`` of the test split (0: all of it): the one subset every likelihood row uses."""
    return dataset.test[: max_points or None]


def forward_kl_meta(dataset: Dataset, x: Tensor, nll: Tensor, kind: str, shared_var: float = 0.0
                    ) -> dict[str, Any]:
    """KL(p || q) = NLL - H(p), paired: mean over the row's points of log p(x) - log q(x) (Theis et al. 2016).

    Only for continuous data with an exact density p (else {}). ``nll`` is -log q per point; ``shared_var`` is the
    variance of a term every point shares (AIS's log Z), added to the paired standard error. The KL errs the way
    the NLL does, so its kind is the NLL's.
    """
    if dataset.density is None or dataset.levels:
        return {}
    diff = dataset.density.log_prob(x.detach().cpu().double()).double() + nll.detach().cpu().double().reshape(-1)
    se = math.sqrt(float(diff.var()) / diff.numel() + shared_var) if diff.numel() > 1 else math.nan
    return {"forward_kl": float(diff.mean()), "forward_kl_stderr": se, "forward_kl_kind": kind,
            "forward_kl_definition": "mean over this row's test points of log p_data(x) - log q(x) "
                                     "(held-out NLL - H(p) on the same points); stderr from the paired differences"}


# ---------------------------------------------------------------- data conventions shared by the estimators


def bin_width(levels: int | None, box: Box) -> float:
    """Width of one discrete level, (high - low) / (levels - 1); 0 for continuous data (levels None)."""
    if not levels:
        return 0.0
    return (box.high - box.low) / (levels - 1)


def dequantize(x: Tensor, width: float, generator: torch.Generator) -> Tensor:
    """y = x + (u - 1/2) w, u ~ U[0, 1)^D: uniform over each level's bin (Theis et al. 2016); as density.exact_nll."""
    u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    return x + (u - 0.5) * width


def dequantize_in_box(x: Tensor, width: float, box: Box, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Uniform over each level's bin cut to the box, for densities that live on the box; returns (y, log volume).

    The bins of the end levels low and high stick out of the box by w / 2, where such a density is zero,
    so they are cut to [low, low + w/2] and [high - w/2, high]. Then P(k) = int_{bin cap box} p
    >= |bin cap box| exp(E_u log p(y)), i.e. -log P(k) <= -log p(y) - log|bin cap box| (Jensen).
    """
    lo = torch.clamp(x - width / 2, min=box.low)
    hi = torch.clamp(x + width / 2, max=box.high)
    u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    log_volume = (hi - lo).double().log().flatten(1).sum(dim=1)
    return lo + u * (hi - lo), log_volume


def bits_per_dim(nll_nats: float, dim: int) -> float:
    """nats per sample -> bits per dimension."""
    return nll_nats / (dim * math.log(2))


def points_kwargs(cfg: Any) -> dict[str, Any]:
    """A likelihood metric's ``configure``: the first cfg.likelihood_points of the test split (0: all of it)."""
    return {"max_points": cfg.likelihood_points}
