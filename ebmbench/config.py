"""Typed run configuration: validation of notebook parameters, resolution, config hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

import torch

from ebmbench import devices
from ebmbench.builtins import DATASETS, METHODS, SAMPLE_METRICS
from ebmbench.devices import DEVICES, PRECISIONS
from ebmbench.params import field_problems, meta, param, shown, spell
from ebmbench.plugins import fingerprint as plugin_fingerprint
from ebmbench.samplers.compiled import COMPILE_MODES


class ConfigError(ValueError):
    """Notebook or suite parameters that are unknown, of the wrong type or out of range: one problem a line."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


# parameters added after runs were first hashed: left out of the hash at these defaults, so old hashes hold
HASH_OMITTED_AT = {"precision": "fp32", "deterministic": False}


@dataclass
class RunConfig:
    """Everything one run depends on; ``method_params`` holds the method's own dataclass."""

    dataset: str = param(help="registered dataset name (see `ebmbench list`)")
    method: str = param(help="registered method name")
    seed: int = param(0, "seeds training, sampling and evaluation", range=">= 0")
    suite: str = param("adhoc", "results go to results/<suite>/runs/<run_id>/")
    results_dir: str = param("results", "root folder of all suites")
    device: str = param("auto", "cpu | cuda | auto (cuda when available); the resolved device is recorded",
                        choices=DEVICES)
    precision: str = param(
        "fp32", "fp32 | tf32 (TF32 matmuls and convolutions on CUDA) | bf16 (autocast in training and sampling); "
        "FID/KID/IS features are always fp32 (ebmbench/devices.py)", choices=PRECISIONS)
    deterministic: bool = param(
        False, "deterministic algorithms (torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG); "
        "false: cudnn.benchmark on CUDA")
    threads: int = param(1, "torch intra-op threads, recorded with every timing", range=">= 1")
    train_steps: int = param(1000, "optimizer steps", range=">= 1")
    batch_size: int = param(128, "training batch", range=">= 1")
    lr: float = param(1e-3, "Adam learning rate", range="> 0")
    adam_beta1: float = param(0.9, "Adam beta1 (IGEBM uses 0.0)", range="in [0, 1)")
    adam_beta2: float = param(0.999, "Adam beta2", range="in [0, 1)")
    ema_decay: float = param(0.999, "EMA of weights; evaluated weights per eval_weights", range="in [0, 1)")
    eval_weights: str = param("ema", "ema | raw: which weights are evaluated", choices=("ema", "raw"))
    checkpoint_every: int = param(250, "steps between checkpoints (resume point)", range=">= 1")
    log_every: int = param(25, "steps between curve records", range=">= 1")
    snapshot_every: int = param(0, "steps between sample snapshots of the raw weights (0 = none)", range=">= 0")
    max_loss: float = param(1e6, "divergence guard: |loss| above this stops the run", range="> 0")
    max_energy: float = param(1e6, "divergence guard: |mean energy| above this stops the run", range="> 0")
    max_grad_norm: float = param(1e8, "divergence guard: parameter gradient norm above this stops the run", range="> 0")
    grad_clip: float = param(0.0, "clip the parameter gradient norm to this (0 = off)", range=">= 0")
    n_eval_samples: int = param(1000, "samples drawn per evaluation sampler", range=">= 1")
    eval_batch_size: int = param(0, "batch for sampling at evaluation (0 = all at once)", range=">= 0")
    samplers: str = param("", 'comma-separated evaluation samplers to keep ("" = all the method evaluates)')
    skip_metrics: str = param("", "comma-separated metrics not to compute (recorded not_applicable, with this reason)")
    ais_steps: int = param(1000, "AIS: intermediate distributions K", range=">= 1")
    ais_runs: int = param(10, "AIS: independent runs R (standard errors are over runs)", range=">= 1")
    ais_chains: int = param(16, "AIS: chains per run", range=">= 1")
    likelihood_points: int = param(
        0, "the first test points every likelihood row uses (0 = the whole split)", range=">= 0")
    pf_ode_tol: float = param(
        1e-5, "probability-flow ODE: the solver's rtol = atol (Song et al. 2021: 1e-5)", range="> 0")
    elbo_t_samples: int = param(
        0, "ELBO: KL terms per point, drawn uniformly (0 = the exact sum over all T - 1)", range=">= 0")
    curve_points: int = param(
        8, "learning-curve points, at train_steps / 2^k for k < curve_points (0 = none)", range=">= 0")
    curve_samplers: str = param("", 'comma-separated evaluation samplers drawn at curve points ("" = all evaluated)')
    curve_metrics: str = param("reverse_kl,mode_tv,fid_domain", "metrics at curve points (sample or model)")
    curve_n: int = param(0, "samples per curve point (0 = n_eval_samples)", range=">= 0")
    compile: str = param(
        "off", "torch.compile mode of the samplers' energy-and-gradient graph (samplers/compiled.py): off | default | "
        "reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs. Pays one compile per run "
        "(recorded as compile_s).", choices=COMPILE_MODES)
    method_params: Any = param(None, "the method's parameter dataclass")

    def skipped(self, metric: str) -> bool:
        """Whether ``metric`` is listed in skip_metrics."""
        return metric in split_names(self.skip_metrics)

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
        """sha256 of the fully resolved config (the device resolved), minus where its results are written and the
        parameters of ``HASH_OMITTED_AT`` at their defaults."""
        d = self.to_dict()
        for k in ("suite", "results_dir"):
            d.pop(k)
        d["device"] = devices.resolve_device(d["device"])  # auto hashes as what it runs on
        for k, default in HASH_OMITTED_AT.items():
            if d[k] == default:
                d.pop(k)
        used = plugin_fingerprint(self)  # name, version, source hash of each plugin the run uses (none: unchanged)
        if used:
            d["plugins"] = used
        return digest(d)

    @property
    def run_id(self) -> str:
        return f"{self.dataset}__{self.method}__s{self.seed}__{self.config_hash[:8]}"


def digest(d: dict[str, Any]) -> str:
    """The config hash of a resolved parameter dict: 16 hex of the sha256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def spec_hash(spec: Any) -> str:
    """The config hash of a suite entry's spec dataclass (a composition, a sampling run): every field but where its
    results are written (suite, results_dir)."""
    d = dataclasses.asdict(spec)
    for k in ("suite", "results_dir"):
        d.pop(k)
    return digest(d)


COMMON = {f.name for f in fields(RunConfig) if f.name != "method_params"}

SUGGEST = re.compile(r"([-+]?\d+)(?:\.(\d*))?[eE]([-+]?)(\d+)")


def field_types(cls: type) -> dict[str, type]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _number_hint(value: str, expected: type) -> str:
    """How to write a number that YAML (1.1, as PyYAML reads it) took for a string."""
    try:
        float(value)
    except ValueError:
        return ""
    m = SUGGEST.fullmatch(value.strip())
    if m and expected is float:
        return (f"; YAML reads {value} as a string: write it with a decimal point and a signed exponent, "
                f"{m[1]}.{m[2] or '0'}e{m[3] or '+'}{m[4]}")
    return "; write the number without quotes"


def check_type(name: str, value: Any, expected: type) -> Any:
    """Return ``value`` as ``expected`` (int is accepted for float), or raise naming the parameter."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if not ok:
        hint = _number_hint(value, expected) if isinstance(value, str) and expected in (int, float) else ""
        raise ConfigError(
            f"parameter {name!r} must be {expected.__name__}, got {type(value).__name__} {shown(value)}{hint}"
        )
    return value


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when torch sees one, else cpu; a named device must exist."""
    if device == "auto":
        return devices.resolve_device(device)
    if device not in DEVICES:
        raise ConfigError(f"parameter 'device' must be {spell(DEVICES)}, got {shown(device)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA device; use device='cpu' or 'auto'")
    return device


def split_names(csv: str) -> list[str]:
    """The names of a comma-separated parameter (samplers, skip_metrics, curve_*), blanks dropped."""
    return [s.strip() for s in csv.split(",") if s.strip()]


def _typed(params: dict[str, Any], types_: dict[str, type], problems: list[str]) -> dict[str, Any]:
    """The parameters of ``types_`` that have the right type; each wrong one is a problem."""
    out = {}
    for k, v in params.items():
        if k in types_:
            try:
                out[k] = check_type(k, v, types_[k])
            except ConfigError as err:
                problems += err.problems
    return out


def ranges() -> dict[str, str]:
    """The declared range of every numeric parameter with one, common or a method's own, by name (from the fields'
    metadata; the same name has the same range in every params dataclass that has it)."""
    out: dict[str, str] = {}
    for cls in (RunConfig, *(METHODS.get(m).params for m in METHODS.names())):
        for f in fields(cls):
            range_ = meta(f)[1]
            if range_ is not None:
                out.setdefault(f.name, range_)
    return out


def choices() -> dict[tuple[str, str], tuple]:
    """The declared choices of every parameter with a fixed set of values, by (params class name, field name)."""
    return {(cls.__name__, f.name): meta(f)[2] for cls in (RunConfig, *(METHODS.get(m).params for m in METHODS.names()))
            for f in fields(cls) if meta(f)[2] is not None}


def name_problems(cfg: RunConfig, spec: Any) -> list[str]:
    """Names that must be registered: curve_metrics and skip_metrics, samplers and curve_samplers."""
    from ebmbench.metrics.registry import MODEL_METRICS

    problems = []
    every = set(SAMPLE_METRICS.names()) | set(MODEL_METRICS.names())
    for key, known, kind in (("curve_metrics", every, "metric"), ("skip_metrics", every, "metric")):
        unknown = sorted(set(split_names(getattr(cfg, key))) - known)
        if unknown:
            problems.append(f"parameter {key!r}: unknown {kind}(s) {unknown}; choose from {sorted(known)}")
    try:
        plan = spec.eval_samplers(cfg.method_params)
    except (ValueError, TypeError, KeyError) as err:
        return problems + [f"the evaluation samplers of method {cfg.method!r} cannot be planned: {err}"]
    known = sorted({name for name, _ in plan})
    unknown = sorted(set(split_names(cfg.samplers)) - set(known))
    if unknown:
        problems.append(f"parameter 'samplers': {unknown} not evaluated by {cfg.method!r}; choose from {known}")
    kept = [(n, b) for n, b in plan if not split_names(cfg.samplers) or n in split_names(cfg.samplers)]
    names = [n for n, _ in kept]  # a sampler kept at several budgets is labelled by its steps (run.sampler_plan)
    labels = set(names) | {f"{n}@{b.get('steps')}" for n, b in kept if names.count(n) > 1}
    unknown = sorted(set(split_names(cfg.curve_samplers)) - labels)
    if unknown:
        problems.append(f"parameter 'curve_samplers': {unknown} not evaluated by this run; "
                        f"choose from {sorted(labels)}")
    return problems


SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # one folder under results_dir


def resolve(params: dict[str, Any]) -> RunConfig:
    """Validate flat parameters (common + the method's own) into a RunConfig; every problem is reported at
    once, one line each, in one ``ConfigError``."""
    missing = [f"parameter {k!r} is required" for k in ("dataset", "method") if k not in params]
    if missing:
        raise ConfigError(missing)
    problems: list[str] = []
    try:
        DATASETS.get(check_type("dataset", params["dataset"], str))
    except (ConfigError, KeyError) as err:
        problems.append(str(err))
    try:
        spec = METHODS.get(check_type("method", params["method"], str))
    except (ConfigError, KeyError) as err:
        raise ConfigError([*problems, str(err)]) from None
    method_types = field_types(spec.params)
    common_types = {k: v for k, v in field_types(RunConfig).items() if k != "method_params"}
    shared = sorted(set(method_types) & set(common_types))
    if shared:  # one name would set both (the old grad_clip: optimizer clip and Langevin clip at once)
        raise ConfigError([f"method {spec.name!r}: its parameter(s) {shared} are also run parameters; one name, one "
                           f"meaning: rename them in {spec.params.__name__}"])
    unknown = sorted(set(params) - set(common_types) - set(method_types))
    if unknown:
        valid = sorted(set(common_types) | set(method_types))
        problems.append(f"unknown parameter(s) {unknown} for method {spec.name!r}; valid parameters: "
                        f"{', '.join(valid)}")
    common, own = _typed(params, common_types, problems), _typed(params, method_types, problems)
    problems += field_problems(RunConfig, common) + field_problems(spec.params, own)  # ranges and choices
    try:
        cfg = RunConfig(**common, method_params=spec.params(**own))
        if cfg.device in DEVICES:  # else it is a problem already
            cfg.device = resolve_device(cfg.device)
    except TypeError as err:  # a required field of the wrong type, already a problem
        raise ConfigError(problems or [str(err)]) from None
    except (ConfigError, ValueError) as err:
        raise ConfigError([*problems, str(err)]) from None
    if not SUITE_NAME.fullmatch(cfg.suite):
        problems.append(f"parameter 'suite' must be a plain folder name (letters, digits, '.', '_', '-', starting "
                        f"with a letter or digit), got {shown(cfg.suite)}")
    problems += name_problems(cfg, spec)
    if problems:
        raise ConfigError(problems)
    return cfg


IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def params_from_namespace(namespace: dict[str, Any]) -> dict[str, Any]:
    """The notebook's parameters: every public non-module global, so a misspelled one is caught."""
    return {
        k: v for k, v in namespace.items()
        if not k.startswith("_") and k not in IPYTHON_NAMES
        and not isinstance(v, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type))
    }
