"""Sampling runs: AIS and SMC (``samplers/smc.py``) on the analytic targets (``data/targets.py``), against exact log Z.

A sampling run is a suite entry (``sampling:`` in a suite file, ``SamplingSpec``) executed by
``notebooks/sampling_run.ipynb``: one target, one algorithm (ais | smc), one kernel (ula | mala | hmc), every K of its
list, R replicates per K (one batch). Nothing is trained. Rows go to ``results/<suite>/sampling/<run_id>/result.json``
(``load_sampling``), one per replicate (its ``seed`` column) and metric:

- ``log_z_error``: log Z_hat - log Z (exact); meta has the estimate, the ESS, resamplings, acceptance.
- ``ess``: normalized ESS of the final weights.
- ``emc``: mode-coverage entropy of the weighted final particles, -sum_m p_m log p_m / log M (Blessing et al. 2024),
  M the target's modes; not_applicable on the unimodal funnel.
- ``reverse_kl`` and ``mode_tv`` of the final particles resampled by their weights (2D targets: gmm40), by the 2D
  metrics of ``metrics/sample_metrics.py`` with their exact-sample floors; not_applicable in d > 2.

Cost on every row: gradient evaluations per particle (``grad_evals``, counted by the sampler), FLOPs per particle
(the matmul FLOPs that torch's counter sees in one (E, grad E) evaluation, times the evaluations: elementwise work is
not counted, so the funnel and the many-well count 0), wall clock per particle.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ebmbench import config as config_mod
from ebmbench.data.registry import load_dataset
from ebmbench.data.targets import PLANAR, TARGETS, get_target
from ebmbench.kernels import NOTEBOOKS_DIR
from ebmbench.metrics import sample_metrics
from ebmbench.metrics.base import NotApplicable
from ebmbench.metrics.cost import count_flops
from ebmbench.results import SCHEMA_VERSION, MetricValue, atomic_write_json, make_rows, provenance, write_failed_record
from ebmbench.results import read_result as read_record
from ebmbench.samplers.smc import KERNELS, SMCParams, SMCResult, resample_final, smc

FOLDER, NOTEBOOK = "sampling", "sampling_run.ipynb"
ALGORITHMS = ("ais", "smc")


@dataclass(frozen=True)
class SamplingConfig:
    """One sampling run: target, algorithm, kernel, the K list, particles, replicates, step settings (JSON)."""

    target: str
    algorithm: str
    kernel: str
    steps: str  # comma-separated K, e.g. "64,128,256,512"
    particles: int = 2000
    replicates: int = 30
    seed: int = 0
    step_times: str = "0,1"  # beta at which step_sizes are given
    step_sizes: str = "0.1,0.1"  # HMC h or MALA/ULA eps (linear in beta between step_times)
    leapfrog_steps: int = 10
    adapt_rate: float = 0.0
    target_accept: float = 0.65
    ess_threshold: float = 0.3
    settings: str = ""  # where the settings come from, in words
    threads: int = 1
    suite: str = "adhoc"
    results_dir: str = "results"

    @property
    def config_hash(self) -> str:
        return config_mod.spec_hash(self)

    @property
    def run_id(self) -> str:
        return f"{self.target}__{self.algorithm}_{self.kernel}__s{self.seed}__{self.config_hash[:8]}"

    @property
    def run_dir(self) -> Path:
        return Path(self.results_dir) / self.suite / FOLDER / self.run_id

    @property
    def method(self) -> str:  # the rows' method column (and ``ebmbench run --methods``)
        return self.algorithm

    @property
    def dataset(self) -> str:  # the rows' dataset column (and ``ebmbench run --datasets``)
        return self.target

    def ks(self) -> list[int]:
        return [int(k) for k in self.steps.split(",")]

    def params(self, k: int) -> SMCParams:
        t = get_target(self.target)
        return SMCParams(n_steps=k, particles=self.particles, replicates=self.replicates, kernel=self.kernel,
                         resample=self.algorithm == "smc", ess_threshold=self.ess_threshold,
                         init_scale=t.init_scale, step_times=_floats(self.step_times),
                         step_sizes=_floats(self.step_sizes), leapfrog_steps=self.leapfrog_steps,
                         target_accept=self.target_accept, adapt_rate=self.adapt_rate, seed=self.seed + k)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def sampling_config(params: dict[str, Any]) -> SamplingConfig:
    """Validate a sampling run's flat parameters: unknown names, types and choices are errors naming them."""
    known = {f.name: f for f in fields(SamplingConfig)}
    unknown = sorted(set(params) - set(known))
    missing = sorted(k for k, f in known.items() if k not in params and f.default is MISSING)
    problems = [f"unknown parameter(s) {unknown}; a sampling run takes {sorted(known)}"] if unknown else []
    problems += [f"missing parameter(s) {missing}"] if missing else []
    for k, v in params.items():
        if k in known:
            want = {"str": (str,), "int": (int,), "float": (int, float)}[known[k].type]
            if not isinstance(v, want) or isinstance(v, bool):
                problems.append(f"{k}={v!r}: expected {known[k].type}")
    if params.get("target") not in TARGETS:
        problems.append(f"target {params.get('target')!r}: choose one of {TARGETS.names()}")
    if params.get("algorithm") not in ALGORITHMS:
        problems.append(f"algorithm {params.get('algorithm')!r}: choose one of {ALGORITHMS}")
    if params.get("kernel") not in KERNELS:
        problems.append(f"kernel {params.get('kernel')!r}: choose one of {KERNELS}")
    if problems:
        raise config_mod.ConfigError(problems)
    cfg = SamplingConfig(**params)
    try:
        for k in cfg.ks():
            cfg.params(k).check()
    except ValueError as err:
        raise config_mod.ConfigError([f"{cfg.run_id}: {err}"]) from None
    return cfg


@dataclass
class SamplingSpec:
    """A sampling run as a suite run (``suites.execute`` runs its notebook)."""

    cfg: SamplingConfig
    timeout_s: float
    notebook: Path = NOTEBOOKS_DIR / NOTEBOOK
    trial: None = None
    needs: tuple[str, ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        return asdict(self.cfg)

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    def failed_record(self, reason: str) -> dict[str, Any]:
        return write_failed(self.cfg, reason)


ENTRY_KEYS = {"targets", "algorithms", "kernels", "steps", "particles", "replicates", "seed", "settings", "timeout"}
SETTING_KEYS = {"step_times", "step_sizes", "leapfrog_steps", "adapt_rate", "target_accept", "ess_threshold",
                "settings", "particles"}


def _csv(values: Any) -> str:
    return ",".join(str(v) for v in values) if isinstance(values, list) else str(values)


def sampling_from(entries: Any, suite: str, results_dir: str, where: str, default_timeout: float
                  ) -> tuple[list[SamplingSpec], list[str]]:
    """Expand a suite's ``sampling:`` entries: targets x algorithms x kernels, each with its K list and
    ``settings[target][kernel]`` (step_times, step_sizes, leapfrog_steps, adapt_rate, target_accept, settings)."""
    if entries is None:
        return [], []
    if not isinstance(entries, list):
        return [], [f"{where}: sampling must be a list of entries, got {type(entries).__name__}"]
    specs, problems = [], []
    for i, entry in enumerate(entries):
        at = f"{where}: sampling[{i}]"
        if not isinstance(entry, dict) or set(entry) - ENTRY_KEYS:
            problems.append(f"{at}: expected a mapping with keys from {sorted(ENTRY_KEYS)}, got {entry!r}")
            continue
        for target, algorithm, kernel in itertools.product(entry.get("targets", []), entry.get("algorithms", []),
                                                           entry.get("kernels", [])):
            chosen = ((entry.get("settings") or {}).get(target) or {}).get(kernel) or {}
            bad = sorted(set(chosen) - SETTING_KEYS)
            if bad:
                problems.append(f"{at}.settings.{target}.{kernel}: unknown key(s) {bad}; "
                                f"allowed {sorted(SETTING_KEYS)}")
                continue
            params = {"target": target, "algorithm": algorithm, "kernel": kernel, "steps": _csv(entry.get("steps")),
                      "particles": int(chosen.get("particles", entry.get("particles", 2000))),
                      "replicates": int(entry.get("replicates", 30)), "seed": int(entry.get("seed", 0)),
                      **{k: _csv(v) if k in ("step_times", "step_sizes") else v for k, v in chosen.items()
                         if k != "particles"},
                      "suite": suite, "results_dir": str(Path(results_dir).resolve())}
            try:
                specs.append(SamplingSpec(sampling_config(params), float(entry.get("timeout", default_timeout))))
            except config_mod.ConfigError as err:
                problems += [f"{at} ({target}, {algorithm}, {kernel}): {p}" for p in err.problems]
    return specs, problems


# ---------------------------------------------------------------- a run


@dataclass
class SamplingRun:
    """What the sampling notebook carries from cell to cell."""

    cfg: SamplingConfig
    results: dict[int, SMCResult] = field(default_factory=dict)
    wall_s: dict[int, float] = field(default_factory=dict)
    values: list[MetricValue] = field(default_factory=list)


def start(namespace_or_params: dict[str, Any]) -> SamplingRun:
    """Validate parameters (a notebook's globals() or a dict) and write config.json."""
    cfg = sampling_config(config_mod.params_from_namespace(namespace_or_params))
    torch.set_num_threads(cfg.threads)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg.run_dir / "config.json", {"config_hash": cfg.config_hash, "run_id": cfg.run_id,
                                                    **asdict(cfg)})
    return SamplingRun(cfg)


def estimate(run: SamplingRun) -> dict[int, SMCResult]:
    """Every K: R replicates of AIS or SMC, timed."""
    target = get_target(run.cfg.target)
    for k in run.cfg.ks():
        t0 = time.perf_counter()
        run.results[k] = smc(target.energy, target.dim, run.cfg.params(k), energy_and_grad=target.energy_and_grad)
        run.wall_s[k] = time.perf_counter() - t0
    return run.results


def emc(mode_ids: torch.Tensor, log_weights: torch.Tensor, n_modes: int) -> float:
    """-sum_m p_m log p_m / log M with p_m the weight in mode m (Blessing et al. 2024, entropic mode coverage;
    their targets/gmm40.py ``entropy`` @ 32de6218 counts unweighted samples, here the final normalized weights)."""
    p = torch.zeros(n_modes, dtype=torch.float64).index_add_(0, mode_ids, log_weights.double().softmax(0))
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(n_modes))


def flops_per_eval(target_name: str) -> int:
    """Matmul FLOPs torch's counter sees in one (E, grad E) evaluation of one particle."""
    t = get_target(target_name)
    x = t.sample(64, torch.Generator().manual_seed(0))
    return count_flops(lambda: t.energy_and_grad(x)) // 64


def _sample_metric(name: str, x: torch.Tensor, dataset: Any) -> tuple[float | None, float | None, dict, str, str]:
    fn = {"reverse_kl": sample_metrics.reverse_kl, "mode_tv": sample_metrics.mode_tv}[name]
    try:
        value, se, meta = fn(x.float(), dataset)
        return value, se, meta, "ok", ""
    except NotApplicable as err:
        return None, None, {}, "not_applicable", str(err)
    except ValueError as err:
        return None, None, {}, "failed", str(err)


def evaluate(run: SamplingRun) -> list[MetricValue]:
    """The rows of every K and replicate (module docstring)."""
    cfg, target = run.cfg, get_target(run.cfg.target)
    flops = flops_per_eval(cfg.target)
    dataset = load_dataset(cfg.target) if cfg.target in PLANAR else None
    run.values = []
    for k, r in run.results.items():
        sampler = f"{cfg.algorithm}_{cfg.kernel}@{k}"
        cost = {"nfe": r.grad_evals, "grad_evals": r.grad_evals, "flops_per_sample": float(flops * r.grad_evals),
                "wall_s_per_sample": run.wall_s[k] / (cfg.particles * cfg.replicates), "batch_size":
                cfg.particles * cfg.replicates, "threads": cfg.threads}
        base = {"K": k, "particles": cfg.particles, "replicates": cfg.replicates, "log_z_exact": target.log_z,
                "algorithm": cfg.algorithm, "kernel": cfg.kernel, "settings": cfg.settings,
                "step_times": cfg.step_times, "step_sizes": cfg.step_sizes, "adapt_rate": cfg.adapt_rate,
                "leapfrog_steps": cfg.leapfrog_steps if cfg.kernel == "hmc" else None, "init_scale": target.init_scale,
                "wall_s": run.wall_s[k], "flops_per_eval": flops,
                "flops_note": "matmul FLOPs only (torch's counter); elementwise energies count 0"}
        resampled = resample_final(r, torch.Generator().manual_seed(cfg.seed + 7 * k))
        for i in range(cfg.replicates):
            lz = float(r.log_z[i])
            meta = {**base, "replicate": i, "log_z": lz, "min_ess": float(r.min_ess[i]),
                    "resamplings": int(r.resamplings[i]), "step_multiplier": float(r.step_multiplier[i]),
                    "acceptance": None if r.acceptance is None else float(r.acceptance[i])}
            common = {"sampler": sampler, "cost": cost, "n_samples": cfg.particles}
            if math.isfinite(lz):
                run.values.append(MetricValue("log_z_error", lz - target.log_z, meta=meta, **common))
            else:
                run.values.append(MetricValue("log_z_error", None, status="failed", meta=meta, **common,
                                              reason=f"log Z_hat is {lz} (a weight or energy overflowed)"))
            run.values.append(MetricValue("ess", float(r.ess[i]), meta={**base, "replicate": i}, **common))
            _mode_rows(run, target, r, i, resampled[i], dataset, common, base)
    return run.values


def _mode_rows(run: SamplingRun, target: Any, r: SMCResult, i: int, x: torch.Tensor, dataset: Any,
               common: dict, base: dict) -> None:
    meta = {**base, "replicate": i}
    if target.n_modes > 1:
        value = emc(target.mode_of(r.x[i]), r.log_weights[i], target.n_modes)
        cap = math.log(min(target.n_modes, run.cfg.particles)) / math.log(target.n_modes)
        run.values.append(MetricValue("emc", value, meta={**meta, "n_modes": target.n_modes, "max_reachable": cap},
                                      **common))
    else:
        run.values.append(MetricValue("emc", None, status="not_applicable", meta=meta, **common,
                                      reason=f"{target.name} has one mode: mode coverage is trivially 1"))
    for name in ("reverse_kl", "mode_tv"):
        if dataset is None:
            run.values.append(MetricValue(name, None, status="not_applicable", meta=meta, **common,
                                          reason=f"{name} needs an exact 2D density; {target.name} is {target.dim}D"))
            continue
        value, se, m, status, reason = _sample_metric(name, x, dataset)
        run.values.append(MetricValue(name, value, se, status=status, reason=reason, meta={**meta, **m}, **common))


def run_fields(cfg: SamplingConfig, run_status: str) -> dict[str, Any]:
    return {"run_id": cfg.run_id, "suite": cfg.suite, "dataset": cfg.target, "dataset_hash": "",
            "family": "sampler", "method": cfg.algorithm, "seed": cfg.seed, "run_status": run_status,
            "train_steps": 0, "train_wall_s": None, "train_flops": None, "threads": cfg.threads,
            "config_hash": cfg.config_hash, **provenance("cpu")}


def write_failed(cfg: SamplingConfig, reason: str) -> dict[str, Any]:
    return write_failed_record(cfg.run_dir, run_fields(cfg, "failed"), reason)


def finish(run: SamplingRun) -> dict[str, Any]:
    """Write result.json (the completion marker); each row's seed is its replicate."""
    rows = make_rows(run_fields(run.cfg, "ok"), run.values)
    for row, v in zip(rows, run.values, strict=True):
        row["seed"] = v.meta.get("replicate", run.cfg.seed)
    record = {"schema_version": SCHEMA_VERSION, "run_id": run.cfg.run_id, "run_status": "ok", "rows": rows}
    atomic_write_json(run.cfg.run_dir / "result.json", record)
    return record


def table(run: SamplingRun) -> pd.DataFrame:
    """Per K: mean, median and IQR over replicates of the log Z error, with the cost."""
    frame = pd.DataFrame([{"sampler": v.sampler, "metric": v.metric, "value": v.value, "grad_evals":
                           (v.cost or {}).get("grad_evals")} for v in run.values if v.status == "ok"])
    return summarize(frame)


def summarize(frame: pd.DataFrame, metric: str = "log_z_error") -> pd.DataFrame:
    """Mean, std, median, quartiles and count of ``metric`` per sampler (rows of one or many runs)."""
    rows = frame[frame.metric == metric]
    if rows.empty:
        return rows
    keys = [c for c in ("dataset", "method", "sampler") if c in rows.columns]
    g = rows.groupby(keys)["value"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(), "median": g.median(), "q25": g.quantile(0.25),
                        "q75": g.quantile(0.75), "n": g.count(), "grad_evals": rows.groupby(keys)["grad_evals"].max()})
    return out.reset_index()


def load_sampling(suite_dir: Path | str) -> pd.DataFrame:
    """Every sampling row of a suite (results/<suite>/sampling/*/result.json) as one tidy frame."""
    rows: list[dict[str, Any]] = []
    for path in sorted((Path(suite_dir) / FOLDER).glob("*/result.json")):
        record = read_record(path.parent)
        rows += record["rows"] if record else []
    frame = pd.DataFrame(rows)
    if len(frame):
        for col in ("value", "stderr", "grad_evals", "flops_per_sample", "wall_s_per_sample"):
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
        frame["K"] = frame["meta"].map(lambda m: (m or {}).get("K"))
        frame["kernel"] = frame["meta"].map(lambda m: (m or {}).get("kernel"))
        frame["particles"] = frame["meta"].map(lambda m: (m or {}).get("particles"))
    return frame
