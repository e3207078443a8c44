"""Typed run configuration: validation of notebook parameters, resolution, config hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

import torch

from ebmbench.builtins import DATASETS, METHODS, SAMPLE_METRICS


class ConfigError(ValueError):
    """A notebook or suite parameter that is unknown or of the wrong type."""


@dataclass
class RunConfig:
    """Everything one run depends on; ``method_params`` holds the method's own dataclass."""

    dataset: str  # registered dataset name (see `ebmbench list`)
    method: str  # registered method name
    seed: int = 0  # seeds training, sampling and evaluation
    suite: str = "adhoc"  # results go to results/<suite>/runs/<run_id>/
    results_dir: str = "results"  # root folder of all suites
    device: str = "cpu"  # cpu | cuda | auto (cuda when available)
    threads: int = 1  # torch intra-op threads, recorded with every timing
    train_steps: int = 1000  # optimizer steps
    batch_size: int = 128  # training batch
    lr: float = 1e-3  # Adam learning rate
    adam_beta1: float = 0.9  # Adam beta1 (IGEBM uses 0.0)
    adam_beta2: float = 0.999  # Adam beta2
    ema_decay: float = 0.999  # EMA of weights; evaluated weights per eval_weights
    eval_weights: str = "ema"  # ema | raw: which weights are evaluated
    checkpoint_every: int = 250  # steps between checkpoints (resume point)
    log_every: int = 25  # steps between curve records
    snapshot_every: int = 0  # steps between sample snapshots of the raw weights (0 = none)
    max_loss: float = 1e6  # divergence guard: |loss| above this stops the run
    max_energy: float = 1e6  # divergence guard: |mean energy| above this stops the run
    max_grad_norm: float = 1e8  # divergence guard: parameter gradient norm above this stops the run
    grad_clip: float = 0.0  # clip the parameter gradient norm to this (0 = off)
    n_eval_samples: int = 1000  # samples drawn per evaluation sampler
    eval_batch_size: int = 0  # batch for sampling at evaluation (0 = all at once)
    samplers: str = ""  # comma-separated evaluation samplers to keep ("" = all the method evaluates)
    skip_metrics: str = ""  # comma-separated metrics not to compute (recorded not_applicable, with this reason)
    ais_steps: int = 1000  # AIS: intermediate distributions K
    ais_runs: int = 10  # AIS: independent runs R (standard errors are over runs)
    ais_chains: int = 16  # AIS: chains per run
    likelihood_points: int = 0  # the first test points every likelihood row uses (0 = the whole split)
    pf_ode_tol: float = 1e-5  # probability-flow ODE: the solver's rtol = atol (Song et al. 2021: 1e-5)
    elbo_t_samples: int = 0  # ELBO: KL terms per point, drawn uniformly (0 = the exact sum over all T - 1)
    curve_points: int = 8  # learning-curve points, at train_steps / 2^k for k < curve_points (0 = none)
    curve_samplers: str = ""  # comma-separated evaluation samplers drawn at curve points ("" = all evaluated)
    curve_metrics: str = "reverse_kl,mode_tv,fid_domain"  # sample metrics at curve points (inapplicable: skipped)
    curve_n: int = 0  # samples per curve point (0 = n_eval_samples)
    method_params: Any = field(default=None)  # the method's parameter dataclass

    def skipped(self, metric: str) -> bool:
        """Whether ``metric`` is listed in skip_metrics."""
        return metric in [m.strip() for m in self.skip_metrics.split(",")]

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "method_params"}
        d["method_params"] = dataclasses.asdict(self.method_params)
        return d

    def flat_params(self) -> dict[str, Any]:
        """Every parameter, common and the method's own, as the flat dict a notebook takes."""
        d = self.to_dict()
        return {**{k: v for k, v in d.items() if k != "method_params"}, **d["method_params"]}

    @property
    def config_hash(self) -> str:
        """sha256 of the fully resolved config, minus where its results are written."""
        d = self.to_dict()
        for k in ("suite", "results_dir"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def run_id(self) -> str:
        return f"{self.dataset}__{self.method}__s{self.seed}__{self.config_hash[:8]}"


COMMON = {f.name for f in fields(RunConfig) if f.name != "method_params"}


def field_types(cls: type) -> dict[str, type]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def check_type(name: str, value: Any, expected: type) -> Any:
    """Return ``value`` as ``expected`` (int is accepted for float), or raise naming the parameter."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(
            f"parameter {name!r} must be {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"parameter 'device' must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA device; use device='cpu' or 'auto'")
    return device


def resolve(params: dict[str, Any]) -> RunConfig:
    """Validate flat parameters (common + the method's own) into a RunConfig."""
    for required in ("dataset", "method"):
        if required not in params:
            raise ConfigError(f"parameter {required!r} is required")
    DATASETS.get(check_type("dataset", params["dataset"], str))
    spec = METHODS.get(check_type("method", params["method"], str))
    method_types = field_types(spec.params)
    common_types = {k: v for k, v in field_types(RunConfig).items() if k != "method_params"}
    unknown = sorted(set(params) - set(common_types) - set(method_types))
    if unknown:
        valid = sorted(set(common_types) | set(method_types))
        raise ConfigError(
            f"unknown parameter(s) {unknown} for method {spec.name!r}; valid parameters: {', '.join(valid)}"
        )
    common = {k: check_type(k, v, common_types[k]) for k, v in params.items() if k in common_types}
    own = {k: check_type(k, v, method_types[k]) for k, v in params.items() if k in method_types}
    cfg = RunConfig(**common, method_params=spec.params(**own))
    cfg.device = resolve_device(cfg.device)
    if cfg.eval_weights not in ("ema", "raw"):
        raise ConfigError(f"parameter 'eval_weights' must be 'ema' or 'raw', got {cfg.eval_weights!r}")
    for k in ("train_steps", "batch_size", "threads", "n_eval_samples", "checkpoint_every", "log_every"):
        if getattr(cfg, k) < 1:
            raise ConfigError(f"parameter {k!r} must be >= 1, got {getattr(cfg, k)}")
    for k in ("curve_points", "curve_n"):
        if getattr(cfg, k) < 0:
            raise ConfigError(f"parameter {k!r} must be >= 0, got {getattr(cfg, k)}")
    unknown = sorted({m.strip() for m in cfg.curve_metrics.split(",") if m.strip()} - set(SAMPLE_METRICS.names()))
    if unknown:
        raise ConfigError(f"parameter 'curve_metrics': unknown sample metric(s) {unknown}; "
                          f"choose from {sorted(SAMPLE_METRICS.names())}")
    return cfg


IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def params_from_namespace(namespace: dict[str, Any]) -> dict[str, Any]:
    """The notebook's parameters: every public non-module global, so a misspelled one is caught."""
    return {
        k: v for k, v in namespace.items()
        if not k.startswith("_") and k not in IPYTHON_NAMES
        and not isinstance(v, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type))
    }
