"""Sample metrics: samples and the dataset -> a number, the same code for every family.

On any data: MMD with the median-heuristic bandwidth (Gretton et al. 2012) and the energy distance
(Szekely & Rizzo 2013), each beside its train-vs-test floor. On a dataset with an exact 2D density:
reverse KL(q||p) from the exact log p and a k-NN entropy of the samples (the 2D headline), mode-weight
total variation, multi-scale MMD at the density's length scales and mode coverage, each with the same
estimator on exact samples at equal N as its floor; and the true NLL of the samples.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import Tensor

from ebmbench.data.base import Dataset
from ebmbench.metrics import sample_stats
from ebmbench.metrics.base import Measured, Metric, NotApplicable, need_density, register
from ebmbench.metrics.floor_cache import cached_floor, density_fingerprint


def mmd(x: Tensor, dataset: Dataset) -> Measured:
    n = min(len(x), len(dataset.test), len(dataset.train))
    ref = dataset.test[:n]
    h = sample_stats.median_bandwidth(ref)
    value = sample_stats.mmd2_unbiased(x[:n], ref, h)
    floor = cached_floor({"metric": "mmd", "data": dataset.content_hash, "n": n, "bandwidth": h},
                         lambda: sample_stats.mmd2_unbiased(dataset.train[:n], ref, h))
    meta = {"kernel": "rbf", "bandwidth": h, "bandwidth_rule": "median heuristic on test split",
            "floor": floor, "floor_definition": "MMD^2(train split, test split) at equal N",
            "reference": "test split", "estimator": "unbiased U-statistic", "n": n}
    return value, None, meta


def energy_distance(x: Tensor, dataset: Dataset) -> Measured:
    n = min(len(x), len(dataset.test), len(dataset.train))
    value = sample_stats.energy_distance(x[:n], dataset.test[:n])
    floor = cached_floor({"metric": "energy_distance", "data": dataset.content_hash, "n": n},
                         lambda: sample_stats.energy_distance(dataset.train[:n], dataset.test[:n]))
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
    """Reverse KL of exact samples at N = n: mean and SD over the floor seeds (the estimator's bias and spread);
    on disk per machine (metrics/floor_cache.py)."""
    key = {"metric": "reverse_kl", "density": name, "fingerprint": density_fingerprint(name), "n": n, "k": KL_K,
           "min_radius_rel": MIN_RADIUS_REL, "seeds": list(FLOOR_SEEDS)}
    density = toy_density(name)
    return cached_floor(key, lambda: _mean_sd([_kl(x, density)["kl"] for x in exact_sample_sets(name, n)]))


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
    key = {"metric": "mode_tv", "density": name, "fingerprint": density_fingerprint(name), "n": n,
           "seeds": list(FLOOR_SEEDS), "reference": [MODE_REFERENCE_SAMPLES, MODE_REFERENCE_SEED]}
    density = toy_density(name)
    return cached_floor(key, lambda: _mean_sd([sample_stats.mode_tv(density.mode_of(x), mode_reference(name))["tv"]
                                               for x in exact_sample_sets(name, n)]))


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


def mmd_multiscale(x: Tensor, dataset: Dataset) -> Measured:
    if dataset.density is None or len(dataset.shape) != 1 or dataset.shape[0] != 2:
        raise NotApplicable(f"multi-scale MMD takes its bandwidths from an exact 2D density's length scales; "
                            f"dataset {dataset.name!r} (shape {dataset.shape}) has none")
    density = need_2d_density(x, dataset)
    h = tuple(density.length_scales())
    n = min(len(x), len(dataset.test), len(dataset.train))
    value = sample_stats.mmd2_multiscale(x[:n], dataset.test[:n], h)
    floor = cached_floor({"metric": "mmd2_multiscale", "data": dataset.content_hash, "n": n, "bandwidths": list(h)},
                         lambda: sample_stats.mmd2_multiscale(dataset.train[:n], dataset.test[:n], h))
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


register(
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
)


