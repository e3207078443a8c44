"""One run, one short function per notebook cell: configure, train, sample, evaluate, finish."""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ebmbench import config as config_mod
from ebmbench import plugins
from ebmbench.builtins import METHODS, load_dataset
from ebmbench.config import RunConfig
from ebmbench.data.base import Dataset
from ebmbench.data.convert import to_uint8
from ebmbench.devices import apply_policy, autocast, policy
from ebmbench.methods.base import MethodSpec
from ebmbench.metrics.cost import sample_with_cost
from ebmbench.metrics.derived import forward_kl_values
from ebmbench.metrics.registry import MODEL_METRICS, SAMPLE_METRICS, Metric, NotApplicable
from ebmbench.protocol import GenerativeModel, Samples
from ebmbench.results import (
    SCHEMA_VERSION,
    MetricValue,
    atomic_torch_save,
    atomic_write_json,
    make_rows,
    provenance,
    write_failed_record,
)
from ebmbench.training import CURVE_POINTS, TrainResult, load_weights, train

RESULT = "result.json"


@dataclass
class Run:
    """The state a run's notebook carries from cell to cell."""

    cfg: RunConfig
    dataset: Dataset
    spec: MethodSpec
    model: GenerativeModel
    run_dir: Path
    trained: TrainResult | None = None
    ema: dict[str, torch.Tensor] = field(default_factory=dict)
    samples: dict[str, Samples] = field(default_factory=dict)
    values: list[MetricValue] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.trained is None:
            return "failed"
        return "ok" if self.trained.status == "ok" else self.trained.status


def run_dir_for(cfg: RunConfig) -> Path:
    return Path(cfg.results_dir) / cfg.suite / "runs" / cfg.run_id


def start(namespace_or_params: dict[str, Any]) -> Run:
    """Validate parameters (a notebook's globals() or a dict), seed, build data and model."""
    params = config_mod.params_from_namespace(namespace_or_params)
    plugins.load(params.pop(plugins.PARAM, ""))  # installed plugins and the suite's plugin modules, as the suite did
    cfg = config_mod.resolve(params)
    torch.set_num_threads(cfg.threads)
    apply_policy(cfg.device, cfg.precision, cfg.deterministic)  # on the CPU at fp32: nothing changes
    torch.manual_seed(cfg.seed)
    dataset = load_dataset(cfg.dataset)
    spec = METHODS.get(cfg.method)
    model = spec.build(dataset, cfg.method_params).to(cfg.device)
    model.compile_mode = cfg.compile  # samplers.compiled: the samplers' energy-and-gradient graph
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", {"config_hash": cfg.config_hash, "run_id": cfg.run_id,
                                                **cfg.to_dict()})
    return Run(cfg, dataset, spec, model, run_dir)


def fit(run: Run, *, stop_after: int | None = None, progress: bool = True) -> TrainResult:
    """Train (resuming from the run's checkpoint) with learning-curve points, then load the evaluated weights."""
    run.trained, run.ema = train(run.model, run.spec, run.cfg, run.dataset.train, run.run_dir,
                                 stop_after=stop_after, progress=progress, curve_fn=curve_fn(run))
    if run.cfg.eval_weights == "ema":
        load_weights(run.model, run.ema)
    run.model.eval()
    return run.trained


def sampler_plan(run: Run) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, sampler, budget) for each evaluation sampler; a sampler used at several budgets
    is labelled by its steps (``ddim@10``), so rows never collide."""
    plan = run.spec.eval_samplers(run.cfg.method_params)
    if run.cfg.samplers:
        wanted = config_mod.split_names(run.cfg.samplers)
        known = sorted({name for name, _ in plan})
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            raise config_mod.ConfigError(f"parameter 'samplers': {unknown} not evaluated by {run.cfg.method!r}; "
                                         f"choose from {known}")
        plan = [(name, budget) for name, budget in plan if name in wanted]
    names = [name for name, _ in plan]
    return [(name if names.count(name) == 1 else f"{name}@{budget.get('steps')}", name, budget)
            for name, budget in plan]


def curve_plan(run: Run) -> list[tuple[str, str, dict[str, Any]]]:
    """The evaluation samplers drawn at learning-curve points (``curve_samplers``; empty: all of them)."""
    plan, wanted = sampler_plan(run), config_mod.split_names(run.cfg.curve_samplers)
    if not wanted:
        return plan
    known = sorted({label for label, _, _ in plan} | {name for _, name, _ in plan})
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise config_mod.ConfigError(f"parameter 'curve_samplers': {unknown} not evaluated by this run; "
                                     f"choose from {known}")
    return [(label, name, budget) for label, name, budget in plan if label in wanted or name in wanted]


def _curve_record(metric: Metric, status: str, out: Any, base: dict[str, Any], n: int, eval_s: float
                  ) -> list[dict[str, Any]]:
    """One curve point's record of a metric outcome; a metric that does not apply is left out."""
    if status == "not_applicable":
        return []
    if status == "failed":
        return [{**base, "metric": metric.name, "status": status, "reason": out}]
    value, stderr, meta = out
    meta = {k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool, type(None)))}
    return [{**base, "metric": metric.name, "status": "ok", "value": value, "stderr": stderr,
             "n": meta.get("n", n), "meta": {**meta, "eval_s": round(eval_s, 3)}}]


def curve_point(run: Run, model: GenerativeModel, step: int) -> list[dict[str, Any]]:
    """The cheap metrics (``curve_metrics``) at one training step: sample metrics of each curve sampler's
    samples, and model metrics (e.g. the 2D density's quadrature KL) of the model itself.

    Every point draws with the same seed (common random numbers across steps); a metric that does not
    apply to the dataset (reverse KL on images) is left out, one that breaks is a failed record.
    """
    cfg, records = run.cfg, []
    names = config_mod.split_names(cfg.curve_metrics)
    metrics = [SAMPLE_METRICS.get(m) for m in names if m in SAMPLE_METRICS.names()]
    n = cfg.curve_n or cfg.n_eval_samples
    for metric in (MODEL_METRICS.get(m) for m in names if m in MODEL_METRICS.names()):
        t0 = time.perf_counter()
        status, out = measure(metric, model, run.dataset, cfg=cfg)
        records += _curve_record(metric, status, out, {"sampler": None}, n, time.perf_counter() - t0)
    for label, name, budget in curve_plan(run):
        generator = torch.Generator(cfg.device).manual_seed(cfg.seed + 2)
        base = {"sampler": label}
        try:
            with autocast(cfg.device, cfg.precision):
                samples = model.sample(n, generator=generator, sampler=name,
                                       batch_size=cfg.eval_batch_size or None, **budget)
        except (FloatingPointError, ValueError, RuntimeError) as err:
            records += [{**base, "metric": m.name, "status": "failed", "reason": f"sampler {label!r} failed: {err}"}
                        for m in metrics]
            continue
        base["nfe"] = samples.cost.nfe
        x = samples.x.detach().float().cpu()
        for metric in metrics:
            t0 = time.perf_counter()
            status, out = measure(metric, x, run.dataset, cfg=cfg)
            records += _curve_record(metric, status, out, base, n, time.perf_counter() - t0)
    return records


def curve_fn(run: Run):  # -> training.CurveFn | None
    """The run's learning-curve callback, or None when ``curve_points`` is 0."""
    if run.cfg.curve_points == 0:
        return None
    return lambda model, step: curve_point(run, model, step)


def curve_values(run: Run) -> list[MetricValue]:
    """The run's learning-curve points (curve_points.jsonl) as rows with ``train_step`` set."""
    path = run.run_dir / CURVE_POINTS
    if not path.exists():
        return []
    values = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        common = {"sampler": rec["sampler"], "train_step": rec["step"], "train_wall_s": rec["train_wall_s"],
                  "train_flops": rec["train_flops"], "cost": {"nfe": rec.get("nfe")}}
        if rec["status"] == "ok":
            values.append(MetricValue(rec["metric"], rec["value"], rec["stderr"], n_samples=rec.get("n"),
                                      meta={**rec["meta"], "curve_point": True}, **common))
        else:
            values.append(MetricValue(rec["metric"], None, status=rec["status"], reason=rec["reason"],
                                      meta={"curve_point": True}, **common))
    return values


def draw_samples(run: Run) -> dict[str, Samples]:
    """Draw n_eval_samples with each of the method's evaluation samplers, with their cost."""
    if run.status != "ok":
        return {}
    cfg = run.cfg
    for label, name, budget in sampler_plan(run):
        generator = torch.Generator(cfg.device).manual_seed(cfg.seed + 1)
        try:
            with autocast(cfg.device, cfg.precision):
                run.samples[label] = sample_with_cost(run.model, cfg.n_eval_samples, sampler=name, budget=budget,
                                                      generator=generator, batch_size=cfg.eval_batch_size or None)
        except (FloatingPointError, ValueError, RuntimeError) as err:
            reason = f"sampler {label!r} failed: {type(err).__name__}: {err}"
            run.values += [MetricValue(m, None, status="failed", reason=reason, sampler=label)
                           for m in SAMPLE_METRICS.names()]
    return run.samples


def measure(metric: Metric, *args: Any, cfg: RunConfig | None = None) -> tuple[str, Any]:
    """Run one metric; ('ok', result) or ('not_applicable' | 'failed', reason)."""
    if cfg is not None and cfg.skipped(metric.name):
        return "not_applicable", f"skipped by the run's skip_metrics parameter ({cfg.skip_metrics})"
    try:
        return "ok", metric(*args, **metric.kwargs(cfg))  # NotApplicable from metric.requires first
    except NotApplicable as why:
        return "not_applicable", str(why)
    except Exception as err:  # a metric that breaks is a failed row, never a silent gap
        return "failed", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"


def sample_meta(samples: Samples) -> dict[str, Any]:
    return {"sampler_params": samples.params, "temperature": samples.temperature, "tempered": samples.tempered,
            "peak_mem_bytes": samples.cost.peak_mem_bytes, **samples.info}


def evaluate(run: Run) -> list[MetricValue]:
    """Every registered metric on every sampler's samples, and every model metric."""
    if run.status != "ok":
        return run.values
    for name, samples in run.samples.items():
        x = samples.x.detach().float().cpu()
        for metric in (SAMPLE_METRICS.get(m) for m in SAMPLE_METRICS.names()):
            t0 = time.perf_counter()
            status, out = measure(metric, x, run.dataset, cfg=run.cfg)
            run.values.append(to_value(metric.name, status, out, sampler=name, samples=samples,
                                       eval_s=time.perf_counter() - t0))
    for metric in (MODEL_METRICS.get(m) for m in MODEL_METRICS.names()):
        t0 = time.perf_counter()
        status, out = measure(metric, run.model, run.dataset, cfg=run.cfg)
        run.values.append(to_value(metric.name, status, out, eval_s=time.perf_counter() - t0))
    run.values.extend(forward_kl_values(run.values))  # KL(p||q) = NLL - H(p), paired on each row's test points
    return run.values


def to_value(name: str, status: str, out: Any, sampler: str | None = None,
             samples: Samples | None = None, eval_s: float | None = None) -> MetricValue:
    """A metric's outcome as a row value; ``eval_s`` (seconds the metric itself took) goes into meta."""
    cost = samples.cost.to_dict() if samples is not None else None
    base_meta = sample_meta(samples) if samples is not None else {}
    if eval_s is not None:
        base_meta["eval_s"] = round(eval_s, 3)
    if status != "ok":
        return MetricValue(name, None, status=status, reason=out, sampler=sampler, cost=cost, meta=base_meta)
    value, stderr, meta = out
    return MetricValue(name, value, stderr, sampler=sampler, cost=cost, n_samples=meta.get("n"),
                       meta={**base_meta, **meta})


def run_fields(cfg: RunConfig, dataset_hash: str, run_status: str, trained: TrainResult | None,
               family: str) -> dict[str, Any]:
    return {
        "run_id": cfg.run_id, "suite": cfg.suite, "dataset": cfg.dataset, "dataset_hash": dataset_hash,
        "family": family, "method": cfg.method, "seed": cfg.seed, "run_status": run_status,
        "train_steps": trained.steps if trained else 0, "train_wall_s": trained.wall_s if trained else None,
        "train_flops": trained.flops if trained else None,
        "threads": cfg.threads, "config_hash": cfg.config_hash, **provenance(cfg.device),
    }


def finish(run: Run) -> dict[str, Any]:
    """Write result.json, the completion marker: metric rows, or one row saying why there are none."""
    values = run.values
    if run.status != "ok":
        reason = run.trained.reason if run.trained else "training did not run"
        step = run.trained.steps if run.trained else 0
        values = [MetricValue("run", None, status="failed", reason=f"{run.status} at step {step}: {reason}")]
    save_artifacts(run)
    weights = (f"EMA (decay {run.cfg.ema_decay}) at step {run.trained.steps}" if run.cfg.eval_weights == "ema"
               else f"raw weights at step {run.trained.steps}") if run.trained else "none"
    numerics = policy(run.cfg.device, run.cfg.precision, run.cfg.deterministic)
    for v in values:
        v.meta.update(weights=weights, numerics=numerics)
    if run.trained is not None:
        for v in values:
            v.meta.update(train_flops_per_step=run.trained.flops_per_step, resumed_from_step=run.trained.resumed_from)
            if run.trained.moved_aside:
                v.meta["moved_aside"] = run.trained.moved_aside
    curve = curve_values(run)
    for v in curve:
        v.meta["weights"] = "EMA" if run.cfg.eval_weights == "ema" else "raw"
    fields = run_fields(run.cfg, run.dataset.content_hash, run.status, run.trained, run.spec.family)
    record = {"schema_version": SCHEMA_VERSION, "run_id": run.cfg.run_id, "run_status": run.status,
              "rows": make_rows(fields, values + curve), "weights": weights}
    atomic_write_json(run.run_dir / RESULT, record)
    return record


def log_density_grid(model: GenerativeModel, n: int = 100) -> torch.Tensor | None:
    """Unnormalized log-density (-E, or log p) of a 2D model on an n x n grid over its box."""
    box = model.support
    if box.dim != 2 or not (model.has("energy") or model.has("log_prob")):
        return None
    ticks = torch.linspace(box.low, box.high, n)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="xy")
    pts = torch.stack([gx.flatten(), gy.flatten()], dim=1).to(model.device)
    with torch.no_grad():
        values = model.log_prob(pts) if model.has("log_prob") else -model.energy(pts)
    return values.detach().float().cpu().view(n, n)


def kept_samples(x: Tensor, dataset: Dataset) -> Tensor:
    """Samples as kept on disk: uint8 bytes for images (``to_uint8``, what FID sees), float32 otherwise."""
    x = x.detach().cpu()
    if x.dim() == 4 and not torch.isnan(x).any():  # NaN images have no byte: they are kept as float32
        return to_uint8(x, dataset)
    return x.float()


def save_artifacts(run: Run) -> None:
    """samples.pt (every evaluation sample of each sampler: any sample metric can be recomputed from disk)
    and, for 2D densities, landscape.pt, for the report."""
    if run.samples:
        atomic_torch_save(run.run_dir / "samples.pt",
                          {k: kept_samples(s.x[: run.cfg.n_eval_samples], run.dataset) for k, s in run.samples.items()})
    if run.status == "ok":
        grid = log_density_grid(run.model)
        if grid is not None:
            atomic_torch_save(run.run_dir / "landscape.pt", grid)


def failed_record(params: dict[str, Any], run_dir: Path, error: str, family: str = "") -> dict[str, Any]:
    """The record of a run whose notebook raised: one row with the error, so it is never a gap."""
    cfg = config_mod.resolve({k: v for k, v in params.items() if k != plugins.PARAM})
    fields = run_fields(cfg, "", "failed", None, family or METHODS.get(cfg.method).family)
    return write_failed_record(run_dir, fields, error)


def table(run: Run):  # -> pandas.DataFrame
    """The run's rows as a small DataFrame for display in its notebook."""
    import pandas as pd

    rows = [{"sampler": v.sampler, "metric": v.metric, "value": v.value, "stderr": v.stderr, "status": v.status,
             "nfe": (v.cost or {}).get("nfe"), "reason": v.reason[:80]} for v in run.values]
    return pd.DataFrame(rows)
