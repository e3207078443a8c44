"""Composition of trained 2D models against exact composed targets (Du et al. 2023, "Reduce, Reuse, Recycle").

Targets (exact): the product p_a p_b / Z, Z by refined Gauss-Legendre quadrature of the datasets' exact log_prob
on the box, and the mixture (p_a + p_b) / 2; each with exact samples (product: rejection from one factor with
acceptance p_other / max p_other, the max bounded in closed form for an isotropic mixture), a high-density cut and
modes (product: pairs of natural modes; mixture: the natural mode of the likelier density).

Models: ``ComposedModel`` sums the components' energies (EBMs; energy_ddpm at t = 0), their time-indexed energies
and their eps (the summed scores of Du et al. 2023, Sec. 3). One composed evaluation is one call of its
``CountingNet`` (the NFE column) and two network evaluations, which the components' own counters count
(``component_net_calls``). The mixture draws each sample from one component with probability 1/2 (exact).

Runs: a composition is a suite run (``compositions:`` in a suite file, ``CompositionSpec``) executed by
``notebooks/compose_run.ipynb``; it loads each component's checkpoint by run id and config hash and never trains.
Its rows go to ``results/<suite>/compositions/<run_id>/result.json`` (``load_compositions``).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from ebmbench import config as config_mod
from ebmbench.builtins import METHODS, SAMPLERS, load_dataset
from ebmbench.data.toy2d import IsotropicMixture, ToyDensity, get_density
from ebmbench.kernels import NOTEBOOKS_DIR
from ebmbench.metrics import sample_stats
from ebmbench.metrics.floor_cache import cached_floor, density_fingerprint
from ebmbench.metrics.likelihood import log_partition_refined
from ebmbench.metrics.sample_metrics import FLOOR_SEEDS, KL_K, MIN_RADIUS_REL
from ebmbench.protocol import Cost, GenerativeModel, Samples
from ebmbench.results import (
    SCHEMA_VERSION,
    MetricValue,
    atomic_torch_save,
    atomic_write_json,
    make_rows,
    provenance,
    write_failed_record,
)
from ebmbench.results import read_result as read_record
from ebmbench.serialization import load_checkpoint
from ebmbench.training import CHECKPOINT, load_weights

OPERATIONS = ("product", "mixture")
COMPOSABLE = frozenset({"energy", "eps_prediction", "time_energy"})
FOLDER = "compositions"  # results/<suite>/compositions/<run_id>/
NOTEBOOK = "compose_run.ipynb"
THRESHOLD_SEED, HIGH_DENSITY_QUANTILE, MODE_REFERENCE_SEED = 20190101, 1e-3, 7  # as toy2d's cut and sample_metrics
REFERENCE_SAMPLES = 50_000  # exact samples behind the cut and the mode histogram (toy2d: 200 000; a product's
# rejection sampler makes 200 000 cost minutes); the cut, the histogram and the floors are cached on disk per machine


class CompositionError(ValueError):
    """A composition that cannot be built: a missing or unfinished component, a mismatched box or schedule."""


# ---------------------------------------------------------------- exact composed targets


class ComposedDensity:
    """Shared parts of the composed targets: the high-density cut and mode ids below it set to -1."""

    name: str
    box: Any
    n_modes: int
    a: ToyDensity
    b: ToyDensity
    _threshold: float | None = None

    @property
    def parts(self) -> tuple[ToyDensity, ToyDensity]:
        return self.a, self.b

    def modes(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def cache_key(self, metric: str, **extra: Any) -> dict[str, Any]:
        """What a cached quantity of this target depends on: both densities' fingerprints and the settings."""
        prints = [density_fingerprint(d.name) for d in self.parts]
        return {"metric": metric, "target": self.name, "fingerprints": prints, "samples": REFERENCE_SAMPLES, **extra}

    def log_prob_threshold(self) -> float:
        """The 0.1 % quantile of log_prob over exact samples (fixed seed, cached on disk), as toy2d's cut."""
        if self._threshold is None:
            def compute() -> float:
                x = self.sample(REFERENCE_SAMPLES, torch.Generator().manual_seed(THRESHOLD_SEED))
                return float(torch.quantile(self.log_prob(x.double()), HIGH_DENSITY_QUANTILE))

            key = self.cache_key("compose_cut", seed=THRESHOLD_SEED, quantile=HIGH_DENSITY_QUANTILE)
            self._threshold = float(cached_floor(key, compute))
        return self._threshold

    def mode_of(self, x: Tensor) -> Tensor:
        """The composed mode of each point; -1 below the high-density cut."""
        x64 = x.double()
        return torch.where(self.log_prob(x64) >= self.log_prob_threshold(), self.modes(x64), -1)


def _common_box(a: ToyDensity, b: ToyDensity) -> Any:
    if a.box != b.box:
        raise CompositionError(f"{a.name} lives on {a.box}, {b.name} on {b.box}: compose densities on one box")
    return a.box


def log_peak_bound(d: ToyDensity) -> float:
    """log of an upper bound on the density: sum_k w_k / (2 pi s^2) for an isotropic Gaussian mixture."""
    if not isinstance(d, IsotropicMixture):
        raise CompositionError(f"{d.name}: exact product sampling needs a bound on its density; one factor must be "
                               "an isotropic Gaussian mixture (eight_gaussians, diagonal_blobs, rings, two_moons, ...)")
    return float(torch.logsumexp(d.log_weights, 0)) - math.log(2 * math.pi * d.std**2)


class ProductDensity(ComposedDensity):
    """p_a p_b / Z on the common box (Hinton 2002's product of experts); Z by refined Gauss-Legendre quadrature."""

    def __init__(self, a: ToyDensity, b: ToyDensity, tol: float = 1e-6, n_max: int = 1024) -> None:
        self.a, self.b, self.box = a, b, _common_box(a, b)
        self.name, self.n_modes = f"{a.name}*{b.name}", a.n_modes * b.n_modes
        self.log_z, err, self.grid = log_partition_refined(lambda x: -self.unnormalized(x), self.box, tol=tol,
                                                           n_start=64, n_max=n_max, dtype=torch.float64)
        if not err < tol:
            raise CompositionError(f"log Z of {self.name} did not converge: error {err:.3g} at {self.grid} nodes")
        self.quadrature_error = err
        # rejection: propose from one factor, accept with the other's density over its bound
        self.proposal, self.other = (a, b) if isinstance(b, IsotropicMixture) else (b, a)
        self.log_bound = log_peak_bound(self.other)

    def unnormalized(self, x: Tensor) -> Tensor:
        x64 = x.double()
        return self.a.log_prob(x64) + self.b.log_prob(x64)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_a + log p_b - log Z, exact and normalized on the box, in float64."""
        return self.unnormalized(x) - self.log_z

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n exact draws by rejection: x ~ p_proposal on the box, accepted with prob p_other(x) / bound."""
        kept, have = [], 0
        while have < n:
            m = max(1024, 2 * (n - have))
            x = self.proposal.sample(m, generator)
            log_ratio = self.other.log_prob(x.double()) - self.log_bound
            if bool((log_ratio > 1e-9).any()):
                raise CompositionError(f"{self.other.name}'s density exceeds its bound: rejection would be biased")
            u = torch.rand(m, generator=generator, device=generator.device, dtype=torch.float64)
            x = x[u.log() < log_ratio.to(u.device)]
            kept.append(x)
            have += len(x)
        return torch.cat(kept)[:n]

    def modes(self, x: Tensor) -> Tensor:
        """Pairs of natural modes: mode_a * n_modes_b + mode_b."""
        return self.a.natural_mode(x) * self.b.n_modes + self.b.natural_mode(x)


class MixtureDensity(ComposedDensity):
    """(p_a + p_b) / 2: exact, normalized as its parts (on R^2; their mass off the box is below 1e-6)."""

    def __init__(self, a: ToyDensity, b: ToyDensity) -> None:
        self.a, self.b, self.box = a, b, _common_box(a, b)
        self.name, self.n_modes = f"({a.name}+{b.name})/2", a.n_modes + b.n_modes

    def log_prob(self, x: Tensor) -> Tensor:
        x64 = x.double()
        return torch.logaddexp(self.a.log_prob(x64), self.b.log_prob(x64)) - math.log(2.0)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """A fair coin per sample picks the density; exact draws from each, shuffled."""
        n_a = int((torch.rand(n, generator=generator, device=generator.device) < 0.5).sum())
        x = torch.cat([self.a.sample(n_a, generator), self.b.sample(n - n_a, generator)])
        return x[torch.randperm(n, generator=generator, device=generator.device)]

    def modes(self, x: Tensor) -> Tensor:
        """The likelier density's natural mode; the second density's modes follow the first's."""
        first = self.a.log_prob(x) >= self.b.log_prob(x)
        return torch.where(first, self.a.natural_mode(x), self.a.n_modes + self.b.natural_mode(x))


_TARGETS: dict[tuple[str, str, str], ComposedDensity] = {}


def target(operation: str, dataset_a: str, dataset_b: str) -> ComposedDensity:
    """The exact composed density (one per process and composition)."""
    if operation not in OPERATIONS:
        raise CompositionError(f"operation {operation!r}: choose one of {OPERATIONS}")
    key = (operation, dataset_a, dataset_b)
    if key not in _TARGETS:
        a, b = get_density(dataset_a), get_density(dataset_b)
        _TARGETS[key] = ProductDensity(a, b) if operation == "product" else MixtureDensity(a, b)
    return _TARGETS[key]


# ---------------------------------------------------------------- the ladder-validated 2D metrics on a composed target

_REFERENCE: dict[str, Tensor] = {}
_FLOORS: dict[tuple[str, int], dict[str, Any]] = {}


def mode_reference(t: ComposedDensity) -> Tensor:
    """Exact mode-weight histogram over (modes, off) from many exact samples (cached per process)."""
    if t.name not in _REFERENCE:
        def compute() -> list[float]:
            ids = t.mode_of(t.sample(REFERENCE_SAMPLES, torch.Generator().manual_seed(MODE_REFERENCE_SEED)))
            counts = torch.bincount(torch.where(ids < 0, t.n_modes, ids), minlength=t.n_modes + 1)
            return (counts.double() / counts.sum()).tolist()

        key = t.cache_key("compose_mode_reference", seed=MODE_REFERENCE_SEED)
        _REFERENCE[t.name] = torch.tensor(cached_floor(key, compute), dtype=torch.float64)
    return _REFERENCE[t.name]


def _kl(x: Tensor, t: ComposedDensity) -> dict[str, Any]:
    width = float(t.box.high - t.box.low)
    return sample_stats.reverse_kl(x, t.log_prob(x.double()), KL_K, MIN_RADIUS_REL * width)


def floors(t: ComposedDensity, n: int) -> dict[str, Any]:
    """reverse_kl and mode_tv of exact samples at N = n: mean and SD over the floor seeds (cached per process)."""
    if (t.name, n) not in _FLOORS:
        def compute() -> dict[str, list[float]]:
            ref = mode_reference(t)
            kl, tv = [], []
            for s in FLOOR_SEEDS:
                x = t.sample(n, torch.Generator().manual_seed(s))
                kl.append(_kl(x, t)["kl"])
                tv.append(sample_stats.mode_tv(t.mode_of(x), ref)["tv"])
            kl_t, tv_t = torch.tensor(kl, dtype=torch.float64), torch.tensor(tv, dtype=torch.float64)
            return {"reverse_kl": [float(kl_t.mean()), float(kl_t.std())],
                    "mode_tv": [float(tv_t.mean()), float(tv_t.std())]}

        key = t.cache_key("compose_floors", n=n, k=KL_K, min_radius_rel=MIN_RADIUS_REL, seeds=list(FLOOR_SEEDS),
                          reference_seed=MODE_REFERENCE_SEED)
        _FLOORS[(t.name, n)] = cached_floor(key, compute)
    return _FLOORS[(t.name, n)]


def score(x: Tensor, t: ComposedDensity) -> list[tuple[str, float, float | None, dict[str, Any]]]:
    """(metric, value, stderr, meta) for reverse KL to the exact target, mode-weight TV and the high-quality
    fraction, with the floors of exact samples at equal N (the settings of metrics/sample_metrics.py)."""
    x = x.detach().cpu().float()
    bad = int((~torch.isfinite(x)).any(dim=1).sum())
    if bad:
        raise ValueError(f"{bad} of {len(x)} samples are not finite (NaN or inf)")
    fl = floors(t, len(x))
    kl = _kl(x, t)
    tv = sample_stats.mode_tv(t.mode_of(x), mode_reference(t))
    seeds = {"floor_seeds": list(FLOOR_SEEDS), "n": len(x)}
    return [
        ("reverse_kl", kl["kl"], kl["se"], {"floor": fl["reverse_kl"][0], "floor_sd": fl["reverse_kl"][1],
                                            "entropy": kl["entropy"], "cross_entropy": kl["cross_entropy"],
                                            "k": KL_K, "units": "nats", **seeds}),
        ("mode_tv", tv["tv"], None, {"floor": fl["mode_tv"][0], "floor_sd": fl["mode_tv"][1], "counts": tv["counts"],
                                     "off_count": tv["off_count"], **seeds}),
        ("high_quality_fraction", tv["high_quality_fraction"], None,
         {"definition": "fraction above the target's 0.1 % log-density quantile", "n": len(x)}),
        ("off_support_fraction", sample_stats.off_support_fraction(x, t.box), None, {"n": len(x)}),
    ]


# ---------------------------------------------------------------- composed models


class SumNet(nn.Module):
    """The composed network: one call evaluates both components (each counted by its own CountingNet)."""

    def __init__(self, a: GenerativeModel, b: GenerativeModel) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, what: str, x: Tensor, t: Tensor | None = None) -> Tensor:
        if what == "energy":
            return self.a.energy(x) + self.b.energy(x)
        if what == "energy_t":
            return self.a.energy_t(x, t) + self.b.energy_t(x, t)
        if what == "eps":
            return self.a.eps(x, t) + self.b.eps(x, t)
        raise ValueError(f"SumNet evaluates 'energy', 'energy_t' or 'eps', not {what!r}")


class ComposedModel(GenerativeModel):
    """The product of two trained models: E = E_a + E_b, E_t = E_a,t + E_b,t, eps = eps_a + eps_b (Du et al. 2023)."""

    family = "composed"

    def __init__(self, a: GenerativeModel, b: GenerativeModel) -> None:
        if a.support != b.support:
            raise CompositionError(f"components live on {a.support} and {b.support}: compose models on one box")
        super().__init__(SumNet(a, b), a.support)
        self.capabilities = frozenset(a.capabilities & b.capabilities & COMPOSABLE)  # per instance, declared
        if "eps_prediction" in self.capabilities:
            if a.scheduler_config() != b.scheduler_config():
                raise CompositionError("summed eps needs one diffusion schedule; the components' differ")
            self.shape = a.shape

    @property
    def parts(self) -> tuple[GenerativeModel, GenerativeModel]:
        return self.net.net.a, self.net.net.b

    def energy(self, x: Tensor) -> Tensor:
        return self.net("energy", x)

    def energy_t(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.net("energy_t", x_t, t)

    def eps(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.net("eps", x_t, t)

    def sigma_t(self, t: Tensor) -> Tensor:
        return self.parts[0].sigma_t(t)

    def scheduler_config(self) -> dict[str, Any]:
        return self.parts[0].scheduler_config()

    def make_ddpm_scheduler(self) -> Any:
        return self.parts[0].make_ddpm_scheduler()

    def make_ddim_scheduler(self) -> Any:
        return self.parts[0].make_ddim_scheduler()

    def make_ddim_inverse_scheduler(self) -> Any:
        return self.parts[0].make_ddim_inverse_scheduler()

    def make_dpm_scheduler(self) -> Any:
        return self.parts[0].make_dpm_scheduler()


def mixture_samples(a: GenerativeModel, b: GenerativeModel, n: int, generator: torch.Generator, sampler: str,
                    budget: dict[str, Any]) -> Samples:
    """(p_a + p_b) / 2: a fair coin per sample picks the component, each draws its share with ``sampler``;
    the cost is the per-sample average of the two draws."""
    n_a = int((torch.rand(n, generator=generator) < 0.5).sum())
    parts = [(m, k) for m, k in ((a, n_a), (b, n - n_a)) if k]
    drawn = [m.sample(k, generator=generator, sampler=sampler, **budget) for m, k in parts]
    x = torch.cat([s.x for s in drawn])[torch.randperm(n, generator=generator)]

    def avg(attr: str) -> float:
        return sum(getattr(s.cost, attr) * k for s, (_, k) in zip(drawn, parts, strict=True)) / n

    first = drawn[0]
    cost = Cost(nfe=avg("nfe"), grad_evals=avg("grad_evals"), wall_s_per_sample=avg("wall_s_per_sample"),
                batch_size=n, threads=first.cost.threads, device=first.cost.device)
    info = {**first.info, "components_drawn": [k for _, k in parts]}
    return Samples(x, cost, first.sampler, first.params, first.temperature, info)


# ---------------------------------------------------------------- composition runs


@dataclass(frozen=True)
class CompositionConfig:
    """One composition run: operation, the two component runs (by id and config hash), samplers and budgets."""

    operation: str
    dataset_a: str
    dataset_b: str
    method: str
    seed: int
    components: str  # "run_id_a,run_id_b"
    component_hashes: str  # "config_hash_a,config_hash_b"
    samplers: str  # JSON {sampler: {budget}}
    n_samples: int = 2000
    threads: int = 1
    suite: str = "adhoc"
    results_dir: str = "results"

    @property
    def config_hash(self) -> str:
        return config_mod.spec_hash(self)

    @property
    def run_id(self) -> str:
        pair = f"{self.operation}-{self.dataset_a}-{self.dataset_b}"
        return f"{pair}__{self.method}__s{self.seed}__{self.config_hash[:8]}"

    @property
    def dataset(self) -> str:
        sign = "*" if self.operation == "product" else "+"
        return f"{self.dataset_a}{sign}{self.dataset_b}"

    @property
    def run_dir(self) -> Path:
        return Path(self.results_dir) / self.suite / FOLDER / self.run_id

    def budgets(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.samplers)


def sampler_problems(samplers: Any) -> list[str]:
    """Registered sampler names with mappings of their own budget parameters."""
    if not isinstance(samplers, dict) or not samplers:
        return [f"samplers must be a non-empty mapping of sampler: budget, got {samplers!r}"]
    problems = []
    for name, budget in samplers.items():
        if name not in SAMPLERS:
            problems.append(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS.names())}")
            continue
        allowed = SAMPLERS.get(name).parameters()
        unknown = sorted(set(budget or {}) - set(allowed))
        if not isinstance(budget or {}, dict) or unknown:
            problems.append(f"sampler {name!r} takes no parameter {unknown}; it takes {sorted(allowed)}")
    return problems


def composition_config(params: dict[str, Any]) -> CompositionConfig:
    """Validate a composition's flat parameters: unknown names, types and choices are errors naming them."""
    known = {f.name: f for f in fields(CompositionConfig)}
    unknown = sorted(set(params) - set(known))
    missing = sorted(k for k, f in known.items() if k not in params and f.default is MISSING)
    problems = [f"unknown parameter(s) {unknown}; a composition takes {sorted(known)}"] if unknown else []
    problems += [f"missing parameter(s) {missing}"] if missing else []
    for k, v in params.items():
        if k in known:
            want = {"str": str, "int": int}[known[k].type]
            if not isinstance(v, want) or isinstance(v, bool):
                problems.append(f"{k}={v!r}: expected {want.__name__}")
    if params.get("operation") not in OPERATIONS:
        problems.append(f"operation {params.get('operation')!r}: choose one of {OPERATIONS}")
    if not problems:
        try:
            problems += sampler_problems(json.loads(params["samplers"]))
        except ValueError as err:
            problems.append(f"samplers must be JSON ({err})")
    if problems:
        raise config_mod.ConfigError(problems)
    return CompositionConfig(**params)


@dataclass
class CompositionSpec:
    """A composition as a suite run: its parameters, the notebook that runs it and the runs it needs first."""

    cfg: CompositionConfig
    needs: tuple[str, ...]  # run ids of the component runs
    timeout_s: float
    notebook: Path = NOTEBOOKS_DIR / NOTEBOOK
    trial: None = None  # compositions are never study trials (suites.RunSpec.trial)

    @property
    def params(self) -> dict[str, Any]:
        return asdict(self.cfg)

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    def failed_record(self, reason: str) -> dict[str, Any]:
        """One failed row, so a composition that could not run is never a gap."""
        return write_failed(self.cfg, reason)


def run_fields(cfg: CompositionConfig, run_status: str, dataset_hash: str = "") -> dict[str, Any]:
    return {"run_id": cfg.run_id, "suite": cfg.suite, "dataset": cfg.dataset, "dataset_hash": dataset_hash,
            "family": "composed", "method": cfg.method, "seed": cfg.seed, "run_status": run_status,
            "train_steps": 0, "train_wall_s": None, "train_flops": None, "threads": cfg.threads,
            "config_hash": cfg.config_hash, **provenance("cpu")}


def write_failed(cfg: CompositionConfig, reason: str) -> dict[str, Any]:
    return write_failed_record(cfg.run_dir, run_fields(cfg, "failed"), reason)


ENTRY_KEYS = {"operations", "pairs", "methods", "seeds", "samplers", "n_samples", "timeout"}


def _entry_problems(where: str, entry: Any) -> list[str]:
    if not isinstance(entry, dict):
        return [f"{where}: expected a mapping with keys {sorted(ENTRY_KEYS)}, got {entry!r}"]
    problems = [f"{where}: unknown key(s) {sorted(set(entry) - ENTRY_KEYS)}; allowed: {sorted(ENTRY_KEYS)}"] \
        if set(entry) - ENTRY_KEYS else []
    pairs = entry.get("pairs")
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        problems.append(f"{where}: pairs must be a list of [dataset_a, dataset_b], got {pairs!r}")
    for key in ("operations", "methods"):
        if not isinstance(entry.get(key), list) or not entry[key]:
            problems.append(f"{where}: {key} must be a non-empty list, got {entry.get(key)!r}")
    problems += [f"{where}: unknown operation {op!r}; choose from {OPERATIONS}" for op in entry.get("operations") or []
                 if op not in OPERATIONS]
    if not isinstance(entry.get("samplers"), dict):
        problems.append(f"{where}: samplers must map each method to {{sampler: budget}}, got {entry.get('samplers')!r}")
    else:
        for method in entry.get("methods") or []:
            problems += [f"{where}.samplers.{method}: {p}" for p in sampler_problems(entry["samplers"].get(method))]
    return problems


def _component(runs: list[Any], dataset: str, method: str, seed: int) -> Any | str:
    """The suite run of ``method`` on ``dataset`` with ``seed``, or a problem saying why there is not one."""
    found = [r for r in runs if (r.cfg.dataset, r.cfg.method, r.cfg.seed) == (dataset, method, seed)]
    if len(found) == 1:
        return found[0]
    if not found:
        return (f"no run of {method} on {dataset} with seed {seed} in this suite's runs; add it (the composition "
                "uses its checkpoint)")
    return f"{len(found)} runs of {method} on {dataset} with seed {seed}; a composition needs exactly one"


def compositions_from(entries: Any, runs: list[Any], suite: str, results_dir: str, where: str,
                      default_timeout: float) -> tuple[list[CompositionSpec], list[str]]:
    """Expand a suite's ``compositions:`` entries into specs that name the component runs they need."""
    if entries is None:
        return [], []
    if not isinstance(entries, list):
        return [], [f"{where}: compositions must be a list of entries, got {type(entries).__name__}"]
    specs, problems = [], []
    for i, entry in enumerate(entries):
        at = f"{where}: compositions[{i}]"
        bad = _entry_problems(at, entry)
        if bad:
            problems += bad
            continue
        for op, (a, b), method, seed in itertools.product(entry["operations"], entry["pairs"], entry["methods"],
                                                          entry.get("seeds", [0])):
            parts = [_component(runs, d, method, seed) for d in (a, b)]
            text = [p for p in parts if isinstance(p, str)]
            if text:
                problems += [f"{at}: {p}" for p in text]
                continue
            cfg = CompositionConfig(
                operation=op, dataset_a=a, dataset_b=b, method=method, seed=seed,
                components=",".join(p.cfg.run_id for p in parts),
                component_hashes=",".join(p.cfg.config_hash for p in parts),
                samplers=json.dumps(entry["samplers"][method], sort_keys=True),
                n_samples=int(entry.get("n_samples", 2000)), threads=parts[0].cfg.threads, suite=suite,
                results_dir=str(Path(results_dir).resolve()))
            specs.append(CompositionSpec(cfg, tuple(p.cfg.run_id for p in parts),
                                         float(entry.get("timeout", default_timeout))))
    return specs, problems


@dataclass
class Component:
    """A finished component run, loaded from its checkpoint with the weights its run evaluated."""

    run_id: str
    model: GenerativeModel
    cfg: Any
    dataset_hash: str


def load_component(results_dir: str, suite: str, run_id: str, config_hash: str) -> Component:
    """The component run ``run_id``: finished (ok), written by config ``config_hash``; never trained here."""
    run_dir = Path(results_dir) / suite / "runs" / run_id
    record = read_record(run_dir)
    if record is None or record.get("run_status") != "ok":
        status = "no result.json" if record is None else f"run_status {record.get('run_status')}"
        raise CompositionError(f"component run {run_id} is not finished ({status}); a composition never trains it: "
                               "run its suite entry first")
    saved = json.loads((run_dir / "config.json").read_text())
    if saved.get("config_hash") != config_hash:
        raise CompositionError(f"component run {run_id} has config hash {saved.get('config_hash')}, the composition "
                               f"names {config_hash}")
    flat = {k: v for k, v in saved.items() if k not in ("config_hash", "run_id", "method_params")}
    cfg = config_mod.resolve({**flat, **saved["method_params"]})
    dataset = load_dataset(cfg.dataset)
    model = METHODS.get(cfg.method).build(dataset, cfg.method_params)
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    model.load_state_dict(ckpt["model"])
    if cfg.eval_weights == "ema":
        load_weights(model, ckpt["ema"])
    model.eval()
    return Component(run_id, model, cfg, dataset.content_hash)


@dataclass
class Composition:
    """The state the composition notebook carries from cell to cell."""

    cfg: CompositionConfig
    target: ComposedDensity
    components: tuple[Component, Component]
    model: ComposedModel | None  # the product; None for a mixture (each component draws its share)
    samples: dict[str, Samples] = field(default_factory=dict)
    failures: dict[str, MetricValue] = field(default_factory=dict)
    values: list[MetricValue] = field(default_factory=list)
    target_s: float = 0.0

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir


def start(namespace_or_params: dict[str, Any]) -> Composition:
    """Validate parameters (a notebook's globals() or a dict), load the components, build the exact target."""
    cfg = composition_config(config_mod.params_from_namespace(namespace_or_params))
    torch.set_num_threads(cfg.threads)
    ids, hashes = cfg.components.split(","), cfg.component_hashes.split(",")
    parts = tuple(load_component(cfg.results_dir, cfg.suite, i, h) for i, h in zip(ids, hashes, strict=True))
    for part, name in zip(parts, (cfg.dataset_a, cfg.dataset_b), strict=True):
        if part.cfg.dataset != name or part.cfg.method != cfg.method:
            raise CompositionError(f"component {part.run_id} is {part.cfg.method} on {part.cfg.dataset}, not "
                                   f"{cfg.method} on {name}")
    t0 = time.perf_counter()
    tgt = target(cfg.operation, cfg.dataset_a, cfg.dataset_b)
    tgt.log_prob_threshold()
    target_s = time.perf_counter() - t0
    model = ComposedModel(parts[0].model, parts[1].model) if cfg.operation == "product" else None
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg.run_dir / "config.json", {"config_hash": cfg.config_hash, "run_id": cfg.run_id,
                                                    **asdict(cfg)})
    return Composition(cfg, tgt, parts, model, target_s=target_s)  # type: ignore[arg-type]


def _component_calls(c: Composition) -> tuple[int, int]:
    models = [p.model for p in c.components]
    return sum(m.net.forward_calls for m in models), sum(m.net.backward_calls for m in models)


def draw(c: Composition) -> dict[str, Samples]:
    """Every listed sampler's samples (one batch, seeded by the run's seed); a sampler the composed model cannot
    run is a not_applicable row, one that breaks (non-finite energies) a failed row."""
    for name, budget in c.cfg.budgets().items():
        generator = torch.Generator().manual_seed(c.cfg.seed)
        spec = SAMPLERS.get(name)
        if c.model is not None and not c.model.has(spec.requires):
            c.failures[name] = MetricValue("reverse_kl", None, status="not_applicable", sampler=name,
                                           reason=f"sampler {name!r} needs capability {spec.requires!r}; the "
                                                  f"composed model has {sorted(c.model.capabilities)}")
            continue
        for p in c.components:
            p.model.net.reset()
        try:
            if c.model is not None:
                s = c.model.sample(c.cfg.n_samples, generator=generator, sampler=name, **budget)
            else:
                a, b = (p.model for p in c.components)
                s = mixture_samples(a, b, c.cfg.n_samples, generator, name, budget)
        except (FloatingPointError, ValueError, RuntimeError) as err:
            c.failures[name] = MetricValue("reverse_kl", None, status="failed", sampler=name,
                                           reason=f"{type(err).__name__}: {err}")
            continue
        if c.model is not None:  # the components' own counters: network evaluations per composed draw
            fwd, bwd = _component_calls(c)
            s.info = {**s.info, "component_net_calls": fwd, "component_grad_evals": bwd}
        c.samples[name] = s
    return c.samples


def _info_meta(s: Samples) -> dict[str, Any]:
    keep = ("acceptance", "target_accept", "kernel", "mcmc_steps", "timesteps", "temperature",
            "component_net_calls", "component_grad_evals", "components_drawn", "leapfrog_steps")
    return {"sampler_params": s.params, **{k: s.info[k] for k in keep if k in s.info}}


def evaluate(c: Composition) -> list[MetricValue]:
    """Each sampler's samples against the exact target: reverse KL, mode TV, high-quality fraction, off support."""
    c.values = list(c.failures.values())
    for name, s in c.samples.items():
        t0 = time.perf_counter()
        try:
            scores = score(s.x, c.target)
        except ValueError as err:
            c.values.append(MetricValue("reverse_kl", None, status="failed", sampler=name, reason=str(err),
                                        cost=s.cost.to_dict()))
            continue
        meta = {**_info_meta(s), "operation": c.cfg.operation, "components": c.cfg.components,
                "target_log_z": getattr(c.target, "log_z", None), "eval_s": round(time.perf_counter() - t0, 3)}
        for metric, value, se, m in scores:
            c.values.append(MetricValue(metric, value, se, sampler=name, cost=s.cost.to_dict(), n_samples=len(s.x),
                                        meta={**meta, **m}))
    return c.values


def target_grid(t: ComposedDensity, n: int = 200) -> Tensor:
    """The exact composed log-density on an n x n grid over the box (rows: y, columns: x)."""
    ticks = torch.linspace(t.box.low, t.box.high, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="xy")
    return t.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).float().view(n, n)


def finish(c: Composition) -> dict[str, Any]:
    """Write samples.pt, target.pt and result.json (the completion marker, last)."""
    atomic_torch_save(c.run_dir / "samples.pt", {k: s.x.detach().float().cpu() for k, s in c.samples.items()})
    atomic_torch_save(c.run_dir / "target.pt", target_grid(c.target))
    hash_ = "*".join(p.dataset_hash for p in c.components)
    for v in c.values:
        v.meta["target_s"] = round(c.target_s, 3)
    status = "ok"
    values = c.values or [MetricValue("run", None, status="failed", reason="no sampler produced samples")]
    record = {"schema_version": SCHEMA_VERSION, "run_id": c.cfg.run_id, "run_status": status,
              "rows": make_rows(run_fields(c.cfg, status, hash_), values)}
    atomic_write_json(c.run_dir / "result.json", record)
    return record


def table(c: Composition) -> pd.DataFrame:
    """The composition's rows for display in its notebook."""
    return pd.DataFrame([{"sampler": v.sampler, "metric": v.metric, "value": v.value, "stderr": v.stderr,
                          "floor": v.meta.get("floor"), "status": v.status, "nfe": (v.cost or {}).get("nfe"),
                          "reason": v.reason[:80]} for v in c.values])


# ---------------------------------------------------------------- the suite's composition rows


def load_compositions(suite_dir: Path | str) -> pd.DataFrame:
    """Every composition row of a suite (results/<suite>/compositions/*/result.json) as one tidy frame."""
    rows = []
    for path in sorted((Path(suite_dir) / FOLDER).glob("*/result.json")):
        record = read_record(path.parent)
        rows += record["rows"] if record else []
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["operation"] = frame["meta"].map(lambda m: (m or {}).get("operation"))
        frame["component_net_calls"] = frame["meta"].map(lambda m: (m or {}).get("component_net_calls"))
    return frame


def interval(values: Any) -> tuple[float, float, float]:
    """Mean and the 95 % Student-t interval over seeds (nan bounds with one seed)."""
    import scipy.stats

    v = torch.as_tensor(list(values), dtype=torch.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(scipy.stats.t.ppf(0.975, len(v) - 1) * v.std() / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def net_calls(frame: pd.DataFrame) -> pd.Series:
    """Network evaluations per sample, both components counted: the components' own counters for a product (one
    composed evaluation is two), the NFE of the one component that drew it for a mixture."""
    calls = frame["component_net_calls"].astype("float64")
    return calls.where(calls.notna(), frame["nfe"].astype("float64"))


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per composed target, method and sampler: each metric's mean [95 % interval] over seeds, its floor (exact
    samples at equal N), and the counted cost per sample (NFE, network evaluations, wall clock)."""
    ok = frame[(frame.metric_status == "ok") & frame.metric.isin(["reverse_kl", "mode_tv", "high_quality_fraction"])]
    ok = ok.assign(net_calls=net_calls(ok), floor=ok.meta.map(lambda m: (m or {}).get("floor")))
    out = []
    keys = ["dataset", "operation", "method", "sampler", "metric"]
    for key, g in ok.groupby(keys):
        mean, low, high = interval(g.value)
        out.append({**dict(zip(keys, key, strict=True)), "mean": mean, "low": low, "high": high, "seeds": len(g),
                    "floor": g.floor.astype("float64").mean(), "nfe": g.nfe.mean(), "net_calls": g.net_calls.mean(),
                    "wall_s_per_sample": g.wall_s_per_sample.mean()})
    return pd.DataFrame(out)


def not_measured(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that are not ok, with their reasons (a sampler the composed model cannot run, a failed run)."""
    bad = frame[frame.metric_status != "ok"]
    return bad[["dataset", "method", "sampler", "seed", "metric", "metric_status", "reason"]].drop_duplicates()


LIKELIHOODS = {  # metric -> (what it estimates, how its cost is counted in its meta)
    "nll_heldout": "exact: quadrature of exp(-E(x, 0)) on the box",
    "nll_ais_diffusion_forward": "lower bound: AIS along the noise levels from N(0, I)",
    "nll_ais_diffusion_reverse": "upper bound: reverse AIS along the noise levels from a grid draw",
    "nll_pf_ode": "the probability-flow ODE's density at t_min (a different density unless the scores are exact)",
}


def _likelihood_cost(metric: str, meta: dict[str, Any]) -> float | None:
    """Network evaluations of single points the estimator spent for the whole test set: quadrature nodes of the
    last two grids, AIS batched calls x chains, PF-ODE evaluations per point x points."""
    if metric == "nll_heldout":
        return None if meta.get("grid") is None else float(meta["grid"] ** 2 + (meta["grid"] // 2) ** 2)
    if metric.startswith("nll_ais_diffusion"):
        p = meta.get("ais_params") or {}
        return float(meta.get("nfe_per_chain", 0)) * p.get("runs", 0) * p.get("chains", 0) or None
    if meta.get("nfe_per_point") is None:
        return None
    return float(meta["nfe_per_point"]) * meta.get("n", 0)


def likelihood_agreement(runs: pd.DataFrame) -> pd.DataFrame:
    """energy_ddpm's test NLL by quadrature, AIS both ways and the PF-ODE, per dataset: mean [95 % interval] over
    seeds, each estimator's difference to quadrature, and its counted cost (network evaluations) and wall clock."""
    rows = runs[(runs.method == "energy_ddpm") & runs.metric.isin(list(LIKELIHOODS)) & (runs.metric_status == "ok")]
    out = []
    for (dataset, metric), g in rows.groupby(["dataset", "metric"]):
        exact = runs[(runs.dataset == dataset) & (runs.method == "energy_ddpm") & (runs.metric == "nll_heldout")
                     & (runs.metric_status == "ok")].set_index("seed").value
        diff = (g.set_index("seed").value - exact).dropna()
        mean, low, high = interval(g.value)
        d_mean, d_low, d_high = interval(diff) if len(diff) else (math.nan, math.nan, math.nan)
        cost = [_likelihood_cost(metric, m or {}) for m in g.meta]
        out.append({"dataset": dataset, "metric": metric, "what": LIKELIHOODS[metric], "nll": mean, "low": low,
                    "high": high, "minus_quadrature": d_mean, "diff_low": d_low, "diff_high": d_high,
                    "seeds": len(g), "point_evals": pd.Series(cost, dtype="float64").mean(),
                    "eval_s": pd.Series([(m or {}).get("eval_s") for m in g.meta], dtype="float64").mean()})
    return pd.DataFrame(out)
