"""The evaluation metrics, registered by name; each chooses by capability, never by family.

A sample metric maps (samples, dataset) to a number; a model metric maps (model,
dataset) to a number. Either raises ``NotApplicable`` with the reason when the
model or dataset lacks what it needs, and that reason is recorded in the row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch import Tensor

from ebmbench.data.base import Dataset
from ebmbench.metrics import likelihood, sample_stats
from ebmbench.protocol import GenerativeModel
from ebmbench.registry import Registry

Measured = tuple[float, float | None, dict[str, Any]]  # value, stderr, meta


class NotApplicable(Exception):
    """The metric cannot be computed for this model or dataset; the message says why."""


LADDER_VERDICTS = ("passed", "failed", "untested")


@dataclass(frozen=True)
class Metric:
    """A registered metric: on samples (``on='samples'``) or on the model (``on='model'``).

    ``configure`` maps the run's config to keyword arguments of ``fn`` (an estimator's budget).
    ``ladder`` records the metric's verdict on the ordered sample sets of ``ebmbench.metrics.ladder``
    (tests/test_ladder.py checks every "passed"); only a metric that passed may be a ``headline``.
    """

    name: str
    on: str
    fn: Callable[..., Measured]
    cite: str
    configure: Callable[[Any], dict[str, Any]] | None = None
    ladder: str = "untested"
    headline: bool = False

    def __post_init__(self) -> None:
        if self.ladder not in LADDER_VERDICTS:
            raise ValueError(f"metric {self.name!r}: ladder={self.ladder!r}, choose from {LADDER_VERDICTS}")
        if self.headline and self.ladder != "passed":
            raise ValueError(f"metric {self.name!r}: a headline metric must have passed the ladder")

    def kwargs(self, cfg: Any) -> dict[str, Any]:
        return self.configure(cfg) if self.configure is not None and cfg is not None else {}


SAMPLE_METRICS: Registry[Metric] = Registry("sample metric")
MODEL_METRICS: Registry[Metric] = Registry("model metric")


def need_density(dataset: Dataset):
    if dataset.density is None:
        raise NotApplicable(f"dataset {dataset.name!r} has no exact density")
    return dataset.density


def mmd(x: Tensor, dataset: Dataset) -> Measured:
    r = sample_stats.mmd_with_floor(x, dataset.test, dataset.train)
    meta = {"kernel": "rbf", "bandwidth": r["bandwidth"], "bandwidth_rule": "median heuristic on test split",
            "floor": r["floor"], "floor_definition": "MMD^2(train split, test split) at equal N",
            "reference": "test split", "estimator": "unbiased U-statistic", "n": r["n"]}
    return r["mmd2"], None, meta


def energy_distance(x: Tensor, dataset: Dataset) -> Measured:
    n = min(len(x), len(dataset.test), len(dataset.train))
    value = sample_stats.energy_distance(x[:n], dataset.test[:n])
    floor = sample_stats.energy_distance(dataset.train[:n], dataset.test[:n])
    meta = {"floor": floor, "floor_definition": "train split vs test split at equal N",
            "reference": "test split", "convention": "scipy.stats.energy_distance (V-statistic, sqrt)", "n": n}
    return value, None, meta


def mode_coverage(x: Tensor, dataset: Dataset) -> Measured:
    density = need_density(dataset)
    r = sample_stats.mode_coverage(density.mode_of(x), density.n_modes)
    meta = {"n_modes": density.n_modes, "high_quality_fraction": r["high_quality_fraction"],
            "counts": r["counts"], "count_threshold": r["threshold"], "n": len(x)}
    return r["coverage"], None, meta


# --- 2D sample metrics that see mode structure (each with the exact-sample floor at equal N) ---------------------

KL_K = 3  # k of the k-NN entropy estimate (chosen on the ladder and the floor, ebmbench/metrics/ladder.py)
MIN_RADIUS_REL = 1e-6  # k-NN radii are clamped from below at this fraction of the box width (duplicates)
FLOOR_SEEDS = tuple(range(1000, 1010))  # exact sample sets of the floors: density.sample(n, manual_seed(s))
MODE_REFERENCE_SAMPLES, MODE_REFERENCE_SEED = 200_000, 7  # exact samples of mode_tv's reference histogram


def need_2d_density(x: Tensor, dataset: Dataset):
    """The dataset's exact 2D density; NotApplicable without one, ValueError on non-finite samples."""
    density = need_density(dataset)
    bad = int((~torch.isfinite(x.reshape(len(x), -1))).any(dim=1).sum())
    if bad:
        raise ValueError(f"{bad} of {len(x)} samples are not finite (NaN or inf)")
    return density


@cache
def toy_density(name: str) -> Any:
    """One instance per process of the named toy density (its high-density cut computed once)."""
    from ebmbench.data.toy2d import get_density

    return get_density(name)


@cache
def exact_sample_sets(name: str, n: int) -> tuple[Tensor, ...]:
    """Exact samples of the named toy density at N = n, one set per floor seed (cached per process)."""
    density = toy_density(name)
    return tuple(density.sample(n, torch.Generator().manual_seed(s)) for s in FLOOR_SEEDS)


def _mean_sd(values: list[float]) -> dict[str, Any]:
    v = torch.tensor(values, dtype=torch.float64)
    return {"floor": float(v.mean()), "floor_sd": float(v.std()), "floor_seeds": list(FLOOR_SEEDS)}


def _kl(x: Tensor, density: Any) -> dict[str, Any]:
    width = float(density.box.high - density.box.low)
    return sample_stats.reverse_kl(x, density.log_prob(x.to(torch.float64)), KL_K, MIN_RADIUS_REL * width)


@cache
def reverse_kl_floor(name: str, n: int) -> dict[str, Any]:
    """Reverse KL of exact samples at N = n: mean and SD over the floor seeds (the estimator's bias and spread)."""
    density = toy_density(name)
    return _mean_sd([_kl(x, density)["kl"] for x in exact_sample_sets(name, n)])


def reverse_kl(x: Tensor, dataset: Dataset) -> Measured:
    density = need_2d_density(x, dataset)
    r = _kl(x, density)
    floor = reverse_kl_floor(density.name, len(x))
    meta = {**floor, "above_floor": r["kl"] - floor["floor"], "k": r["k"], "n": r["n"], "entropy": r["entropy"],
            "cross_entropy": r["cross_entropy"], "n_clamped": r["n_clamped"],
            "min_radius": MIN_RADIUS_REL * float(density.box.high - density.box.low),
            "estimator": f"-H_KL(q) - mean log p(x): Kozachenko-Leonenko k-NN entropy (k={KL_K}), exact log p",
            "stderr_definition": "std of per-sample terms / sqrt(N)",
            "floor_definition": f"the same estimator on exact samples at equal N, mean and SD over {len(FLOOR_SEEDS)} "
                                "seeds", "units": "nats"}
    return r["kl"], r["se"], meta


@cache
def mode_reference(name: str) -> Tensor:
    """Exact mode-weight histogram over (modes, off) of the named density, from many exact samples (cached)."""
    density = toy_density(name)
    ids = density.mode_of(density.sample(MODE_REFERENCE_SAMPLES, torch.Generator().manual_seed(MODE_REFERENCE_SEED)))
    counts = torch.bincount(torch.where(ids < 0, density.n_modes, ids), minlength=density.n_modes + 1)
    return counts.double() / counts.sum()


@cache
def mode_tv_floor(name: str, n: int) -> dict[str, Any]:
    """mode_tv of exact samples at N = n: mean and SD over the floor seeds."""
    density, ref = toy_density(name), mode_reference(name)
    return _mean_sd([sample_stats.mode_tv(density.mode_of(x), ref)["tv"] for x in exact_sample_sets(name, n)])


def mode_tv(x: Tensor, dataset: Dataset) -> Measured:
    density = need_2d_density(x, dataset)
    ref = mode_reference(density.name)
    r = sample_stats.mode_tv(density.mode_of(x), ref)
    floor = mode_tv_floor(density.name, len(x))
    meta = {**floor, "above_floor": r["tv"] - floor["floor"], "high_quality_fraction": r["high_quality_fraction"],
            "counts": r["counts"], "off_count": r["off_count"], "n_modes": density.n_modes, "n": len(x),
            "reference": ref.tolist(),
            "reference_definition": f"mode_of histogram of {MODE_REFERENCE_SAMPLES} exact samples (seed "
                                    f"{MODE_REFERENCE_SEED}); last bin: below the high-density cut",
            "floor_definition": f"exact samples at equal N, mean and SD over {len(FLOOR_SEEDS)} seeds"}
    return r["tv"], None, meta


_MMD_MULTISCALE_FLOORS: dict[tuple[str, int, tuple[float, ...]], float] = {}  # (data hash, n, bandwidths) -> floor


def mmd_multiscale(x: Tensor, dataset: Dataset) -> Measured:
    if dataset.density is None or len(dataset.shape) != 1 or dataset.shape[0] != 2:
        raise NotApplicable(f"multi-scale MMD takes its bandwidths from an exact 2D density's length scales; "
                            f"dataset {dataset.name!r} (shape {dataset.shape}) has none")
    density = need_2d_density(x, dataset)
    h = tuple(density.length_scales())
    n = min(len(x), len(dataset.test), len(dataset.train))
    value = sample_stats.mmd2_multiscale(x[:n], dataset.test[:n], h)
    key = (dataset.content_hash, n, h)
    if key not in _MMD_MULTISCALE_FLOORS:
        _MMD_MULTISCALE_FLOORS[key] = sample_stats.mmd2_multiscale(dataset.train[:n], dataset.test[:n], h)
    floor = _MMD_MULTISCALE_FLOORS[key]
    meta = {"kernel": "mean of RBF kernels", "bandwidths": list(h),
            "bandwidth_rule": "dyadic multiples of the density's finest length scale up to half the box width",
            "floor": floor, "floor_definition": "the same MMD^2 between train and test splits at equal N",
            "above_floor": value - floor, "reference": "test split", "estimator": "unbiased U-statistic", "n": n}
    return value, None, meta


def off_support(x: Tensor, dataset: Dataset) -> Measured:
    box = dataset.support
    return sample_stats.off_support_fraction(x, box), None, {"box": [box.low, box.high], "n": len(x)}


def true_nll_of_samples(x: Tensor, dataset: Dataset) -> Measured:
    density = need_density(dataset)
    value, stderr = sample_stats.mean_nll(density.log_prob(x))
    meta = {"warning": "rewards mode collapse: read beside mode_coverage and mmd2", "n": len(x)}
    return value, stderr, meta


def need_2d_energy(model: GenerativeModel) -> None:
    if not model.has("energy"):
        raise NotApplicable(f"needs capability 'energy'; the model has {sorted(model.capabilities)}")
    if model.support.dim != 2:
        raise NotApplicable(f"quadrature of exp(-E) is tractable only in 2D, data has {model.support.dim} "
                            "dimensions (AIS estimates it there: nll_ais_forward, nll_ais_reverse)")


def quadrature_nll(model: GenerativeModel, dataset: Dataset, max_points: int = 0, tol: float = 1e-4,
                   n_max: int = 2048) -> Measured:
    """Held-out E(x) + log Z, log Z by refined Gauss-Legendre on the 2D box (Davis & Rabinowitz 1984)."""
    need_2d_energy(model)
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
    if not model.has("log_prob"):
        raise NotApplicable(f"needs capability 'log_prob'; the model has {sorted(model.capabilities)}")
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
    from ebmbench.data.base import tensors_hash

    density = need_density(dataset)
    if not (model.has("energy") or model.has("log_prob")):
        raise NotApplicable(f"needs capability 'energy' or 'log_prob'; the model has {sorted(model.capabilities)}")
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


for _m in (
    Metric("reverse_kl", "samples", reverse_kl, "KL(q||p) with Kozachenko & Leonenko 1987 k-NN entropy",
           ladder="passed", headline=True),
    Metric("mode_tv", "samples", mode_tv, "mode-weight total variation (cf. Srivastava et al. 2017)",
           ladder="failed"),
    Metric("mmd2_multiscale", "samples", mmd_multiscale, "Gretton et al. 2012; RBF mixture at the density's scales",
           ladder="failed"),
    Metric("mmd2", "samples", mmd, "Gretton et al. 2012", ladder="failed"),
    Metric("energy_distance", "samples", energy_distance, "Szekely & Rizzo 2013", ladder="failed"),
    Metric("mode_coverage", "samples", mode_coverage, "fraction of modes with enough high-density samples",
           ladder="failed"),
    Metric("off_support_fraction", "samples", off_support, "fraction of samples outside the support box"),
    Metric("true_nll_of_samples", "samples", true_nll_of_samples, "-log p_data(x) of model samples"),
):
    SAMPLE_METRICS.register(_m.name, _m)


def _ais(direction: str) -> Callable[..., Measured]:
    def fn(model: GenerativeModel, dataset: Dataset, params: Any = None, max_points: int = 0) -> Measured:
        from ebmbench.metrics import ais

        return ais.nll_row(model, dataset, direction, params, max_points)

    return fn


def _likelihood_points(cfg: Any) -> dict[str, Any]:
    """Every likelihood row uses the first cfg.likelihood_points of the test split (0: all of it)."""
    return {"max_points": cfg.likelihood_points}


def _ais_params(cfg: Any) -> dict[str, Any]:
    from ebmbench.metrics.ais import AISParams

    # a run that skips the reverse row must not pay for reverse AIS's long start chains inside the forward row
    return {"params": AISParams(n_steps=cfg.ais_steps, runs=cfg.ais_runs, chains=cfg.ais_chains, seed=cfg.seed,
                                reverse=not cfg.skipped("nll_ais_reverse")), **_likelihood_points(cfg)}


def _pf_ode(model: GenerativeModel, dataset: Dataset, params: Any = None) -> Measured:
    from ebmbench.metrics import pf_ode

    return pf_ode.model_metric_pf_ode(model, dataset, params)


def _elbo(model: GenerativeModel, dataset: Dataset, params: Any = None) -> Measured:
    from ebmbench.metrics import elbo

    return elbo.model_metric_elbo(model, dataset, params)


def _points(cfg: Any, cls: str) -> dict[str, Any]:
    from ebmbench.metrics import elbo, pf_ode

    if cls == "elbo":
        return {"params": elbo.ELBOParams(max_points=cfg.likelihood_points, seed=cfg.seed,
                                          t_samples=cfg.elbo_t_samples)}
    tol = cfg.pf_ode_tol
    return {"params": pf_ode.PFODEParams(max_points=cfg.likelihood_points, seed=cfg.seed, rtol=tol, atol=tol)}


for _m in (
    Metric("nll_heldout", "model", quadrature_nll, "exact NLL by quadrature of log Z", _likelihood_points),
    Metric("nll_ais_forward", "model", _ais("forward"), "Neal 2001, annealed importance sampling", _ais_params),
    Metric("nll_ais_reverse", "model", _ais("reverse"), "Grosse et al. 2015 BDMC; Burda et al. 2015 RAISE",
           _ais_params),
    Metric("nll_pf_ode", "model", _pf_ode, "Song et al. 2021, probability-flow ODE", lambda c: _points(c, "pf_ode")),
    Metric("nll_elbo", "model", _elbo, "Ho et al. 2020, eq. 5", lambda c: _points(c, "elbo")),
    Metric("nll_exact", "model", exact_nll, "NLL of the test split by the model's exact log_prob",
           _likelihood_points),
    Metric("nll_true_density", "model", true_density_nll, "NLL of the test split under the true density",
           _likelihood_points),
    Metric("kl_data_model", "model", kl_data_model, "KL(p_data || q_theta) on the 2D box by Gauss-Legendre quadrature"),
    Metric("kl_model_data", "model", kl_model_data, "KL(q_theta || p_data) on the 2D box by Gauss-Legendre quadrature"),
):
    MODEL_METRICS.register(_m.name, _m)
