"""Model metrics from a normalized density: exact where it is tractable.

- ``nll_heldout``: held-out E(x) + log Z of an energy in 2D, log Z by refined Gauss-Legendre quadrature.
- ``nll_exact``: the model's own normalized ``log_prob`` (flows; RBMs by enumerating hidden units).
- ``nll_true_density``: the exact data density's NLL of the same test points, the floor of every NLL.
- ``kl_data_model``, ``kl_model_data``: both KLs between the model's density and the exact data density on
  the 2D box by quadrature, so a good energy with a poor sampler shows as such.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ebmbench.data.base import Dataset, tensors_hash
from ebmbench.metrics import likelihood, sample_stats
from ebmbench.metrics.base import Measured, Metric, NotApplicable, need_density, register
from ebmbench.metrics.likelihood import points_kwargs
from ebmbench.protocol import GenerativeModel


def need_2d(model: GenerativeModel) -> None:
    if model.support.dim != 2:
        raise NotApplicable(f"quadrature of exp(-E) is tractable only in 2D, data has {model.support.dim} "
                            "dimensions (AIS estimates it there: nll_ais_forward, nll_ais_reverse)")


def quadrature_nll(model: GenerativeModel, dataset: Dataset, max_points: int = 0, tol: float = 1e-4,
                   n_max: int = 2048) -> Measured:
    """Held-out E(x) + log Z, log Z by refined Gauss-Legendre on the 2D box (Davis & Rabinowitz 1984)."""
    need_2d(model)
    x = likelihood.heldout_points(dataset, max_points)
    with torch.no_grad():
        log_z, err, grid = likelihood.log_partition_refined(model.energy, model.support, tol=tol,
                                                            n_start=min(64, n_max), n_max=n_max, device=model.device)
        nll = likelihood.point_nll(model.energy, x.to(model.device), log_z)
    value, stderr = sample_stats.mean_nll(-nll)
    converged = err < tol
    kind = "exact" if converged else "estimate"
    meta = {"likelihood_kind": kind, "method": "quadrature of exp(-E) over the support box",
            "log_z": log_z, "quadrature_error": err, "quadrature_tol": tol, "grid": grid, "converged": converged,
            "split": "test", "units": "nats per sample", "n": len(x), "test_split_size": len(dataset.test)}
    if not converged:
        meta["estimate_reason"] = (f"log Z did not converge: refinement error {err:.3g} >= tol {tol:g} at {grid} "
                                   "nodes per axis (n_max); the stderr does not include it")
    meta.update(likelihood.forward_kl_meta(dataset, x, nll, kind))
    return value, stderr, meta


def exact_nll(model: GenerativeModel, dataset: Dataset, max_points: int = 0) -> Measured:
    """Held-out NLL by the model's own normalized log_prob (Dinh et al. 2017 for flows; RBMs by enumeration)."""
    x = likelihood.heldout_points(dataset, max_points).to(model.device)
    meta: dict[str, Any] = {"split": "test", "units": "nats per sample", "n": len(x),
                            "test_split_size": len(dataset.test)}
    if dataset.levels == 2:  # binary data: the model's log_prob is a probability mass
        meta.update(likelihood_kind="exact", convention="binary pmf")
        with torch.no_grad():
            value, stderr = sample_stats.mean_nll(model.log_prob(x).cpu())
    elif dataset.levels:  # discrete levels: uniform dequantization bounds the discrete NLL (Theis et al. 2016)
        width = (dataset.support.high - dataset.support.low) / (dataset.levels - 1)
        u = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)).to(x.device)
        with torch.no_grad():
            log_p = model.log_prob(x + (u - 0.5) * width).cpu()
        # P(k) = int_bin p >= w^D exp(E_u log p(y)), so -log P(k) <= -log p(y) - D log w (one u per image)
        value, stderr = sample_stats.mean_nll(log_p + model.support.dim * math.log(width))
        meta.update(likelihood_kind="upper bound", convention=f"uniform dequantization over {dataset.levels} levels, "
                    "one draw per image; -log p(y) - D log(bin width) bounds the discrete NLL", bin_width=width)
    else:
        meta.update(likelihood_kind="exact", convention="continuous density")
        with torch.no_grad():
            log_q = model.log_prob(x).double().cpu()
        value, stderr = sample_stats.mean_nll(log_q)
        meta.update(likelihood.forward_kl_meta(dataset, x, -log_q, "exact"))
    meta["bits_per_dim"] = value / (model.support.dim * math.log(2))
    return value, stderr, meta


def true_density_nll(model: GenerativeModel, dataset: Dataset, max_points: int = 0) -> Measured:
    """NLL of the test points under the exact data density: H(p) on those points, the floor of every NLL."""
    density = need_density(dataset)
    x = likelihood.heldout_points(dataset, max_points)
    value, stderr = sample_stats.mean_nll(density.log_prob(x))
    meta = {"likelihood_kind": "exact", "what": "the true density's NLL of the test split (the floor)",
            "units": "nats per sample", "n": len(x), "test_split_size": len(dataset.test)}
    return value, stderr, meta


_KL_CACHE: dict[tuple, dict[str, Any]] = {}
KL_DIRECTIONS = {"kl_data_model": "KL(p_data || q_model)", "kl_model_data": "KL(q_model || p_data)"}


def model_kl(model: GenerativeModel, dataset: Dataset, tol: float = 1e-3, n_max: int = 2048) -> dict[str, Any]:
    """Both KLs between the model's density and the exact data density on the 2D box, once per weights and data."""
    density = need_density(dataset)
    if model.support.dim != 2:
        raise NotApplicable(f"KL by quadrature is tractable only in 2D, data has {model.support.dim} dimensions")
    energy = model.energy if model.has("energy") else (lambda y: -model.log_prob(y))
    key = (type(model).__name__, tensors_hash(*model.state_dict().values()), dataset.content_hash, model.support,
           tol, n_max)
    if key not in _KL_CACHE:
        _KL_CACHE.clear()
        with torch.no_grad():
            _KL_CACHE[key] = likelihood.model_kl_quadrature(energy, density.log_prob, model.support, tol=tol,
                                                            n_max=n_max, device=model.device)
    return _KL_CACHE[key]


def kl_row(model: GenerativeModel, dataset: Dataset, direction: str, tol: float = 1e-3, n_max: int = 2048
           ) -> Measured:
    """One direction of the model-data KL by quadrature as the value, both directions in meta."""
    r = model_kl(model, dataset, tol, n_max)
    normalization = ("q = exp(-E) / Z on the box" if model.has("energy") else
                     "q = the model's log_prob renormalized on the box (its mass there: exp(log_z_model))")
    meta = {"what": KL_DIRECTIONS[direction], "kl_data_model": r["kl_data_model"],
            "kl_model_data": r["kl_model_data"], "kl_kind": "exact" if r["converged"] else "estimate",
            "method": "tensor-product Gauss-Legendre quadrature over the support box, refined by doubling",
            "normalization": normalization + "; p_data (normalized on R^2) renormalized on the box",
            "log_z_model": r["log_z_model"], "data_mass_in_box": math.exp(r["log_mass_data"]),
            "quadrature_errors": r["quadrature_errors"], "quadrature_tol": tol, "grid": r["grid"],
            "converged": r["converged"], "box": [model.support.low, model.support.high], "units": "nats"}
    return r[direction], None, meta


def kl_data_model(model: GenerativeModel, dataset: Dataset, tol: float = 1e-3, n_max: int = 2048) -> Measured:
    """KL(p_data || q_theta) on the 2D box by quadrature: the forward KL without sampling error."""
    return kl_row(model, dataset, "kl_data_model", tol, n_max)


def kl_model_data(model: GenerativeModel, dataset: Dataset, tol: float = 1e-3, n_max: int = 2048) -> Measured:
    """KL(q_theta || p_data) on the 2D box by quadrature: the reverse KL of the model's density (not its sampler)."""
    return kl_row(model, dataset, "kl_model_data", tol, n_max)


register(
    Metric("nll_heldout", "model", quadrature_nll, "exact NLL by quadrature of log Z", points_kwargs,
           requires="energy"),
    Metric("nll_exact", "model", exact_nll, "NLL of the test split by the model's exact log_prob", points_kwargs,
           requires="log_prob"),
    Metric("nll_true_density", "model", true_density_nll, "NLL of the test split under the true density",
           points_kwargs),
    Metric("kl_data_model", "model", kl_data_model, "KL(p_data || q_theta) on the 2D box by Gauss-Legendre quadrature",
           requires="energy | log_prob"),
    Metric("kl_model_data", "model", kl_model_data, "KL(q_theta || p_data) on the 2D box by Gauss-Legendre quadrature",
           requires="energy | log_prob"),
)
