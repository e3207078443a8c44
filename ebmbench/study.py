"""Are EBMs created equal? Random search at equal training compute, after Lucic et al. 2018 ("Are GANs Created
Equal?"): search spaces, trial draws, the budget of each trial, and the study's tables (quality over trials,
expected best quality against the number of trials, divergence rates with Wilson intervals, sensitivity, and a
sampler sweep on the trained EBMs).

A method's search space is a ``search_space`` class attribute of its params dataclass: ``name -> (scale, low,
high)`` with scale ``log``, ``linear``, ``int`` or ``int_log``, or ``name -> ("choice", value, ...)``. A name is
a parameter of the run (common or the method's own); its bounds must satisfy the field's declared range and
choices (``ebmbench.params``). A trial is an ordinary run: its parameters are drawn from a recorded seed, which is
also the run's seed, so every trial is a row reproducible from its config.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STUDY_FILE = "study.json"  # beside the suite's manifest: run_id -> role, trial, draw seed, drawn values, budget
SCALES = ("log", "linear", "int", "int_log")
STUDY_KEYS = {"trials", "train_flops", "metric", "spaces"}
UNTRAINED_LR = 1e-12  # the untrained reference: one Adam step moves each weight by at most about this
QUALITY = "reverse_kl"  # the study's headline: KL(q||p), lower is better
FORWARD = "kl_data_model"  # KL(p||q_theta) by quadrature, where the model has a density (energy or log_prob)
KEPT_METRICS = (QUALITY, FORWARD, "mode_tv")
Z95 = 1.959963984540054  # the 97.5 % normal quantile


# ---------------------------------------------------------------- search spaces and draws


def space_of(method: str) -> dict[str, tuple]:
    """The search space declared on ``method``'s params dataclass (its own, not a parent's)."""
    from ebmbench.builtins import METHODS

    cls = METHODS.get(method).params
    space = cls.__dict__.get("search_space")
    if space is None:
        raise ValueError(f"method {method!r} declares no search space: add `search_space: ClassVar[dict[str, tuple]] "
                         f"= {{...}}` to {cls.__name__} (see ebmbench/study.py for the format)")
    return dict(space)


def _fields(method: str) -> dict[str, dataclasses.Field]:
    from ebmbench.builtins import METHODS
    from ebmbench.config import RunConfig

    own = {f.name: f for f in dataclasses.fields(METHODS.get(method).params)}
    common = {f.name: f for f in dataclasses.fields(RunConfig) if f.name != "method_params"}
    return {**common, **own}


def dimension_problems(name: str, dim: Any, field: dataclasses.Field | None) -> list[str]:
    """What is wrong with one dimension ``name: dim`` of a space (empty when nothing is)."""
    from ebmbench.params import meta, value_problem

    if field is None:
        return [f"{name!r} is not a parameter of the run or the method"]
    if not isinstance(dim, tuple) or not dim:
        return [f"{name!r}: expected a tuple (scale, low, high) or ('choice', v1, v2, ...), got {dim!r}"]
    _, range_, choices = meta(field)
    if dim[0] == "choice":
        values = dim[1:]
        bad = [p for v in values for p in [value_problem(name, v, range_, choices)] if p]
        return ([f"{name!r}: a choice needs at least two values"] if len(values) < 2 else []) + bad
    if dim[0] not in SCALES or len(dim) != 3:
        return [f"{name!r}: scale must be one of {list(SCALES)} with (scale, low, high), or 'choice'; got {dim!r}"]
    scale, low, high = dim
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        return [f"{name!r}: bounds must be numbers with low < high, got ({low!r}, {high!r})"]
    problems = []
    if scale in ("log", "int_log") and low <= 0:
        problems.append(f"{name!r}: a {scale} scale needs low > 0, got {low!r}")
    if scale.startswith("int") and not (float(low).is_integer() and float(high).is_integer()):
        problems.append(f"{name!r}: an {scale} scale needs integer bounds, got ({low!r}, {high!r})")
    problems += [p for v in (low, high) for p in [value_problem(name, v, range_, choices)] if p]
    return problems


def space_problems(method: str, space: dict[str, Any] | None = None) -> list[str]:
    """Every problem of ``method``'s space (or of ``space``), one line each, naming the method and the dimension."""
    try:
        space = space_of(method) if space is None else space
    except (ValueError, KeyError) as err:
        return [str(err).strip("'\"")]
    fields_ = _fields(method)
    return [f"search space of {method!r}: {p}" for name, dim in space.items()
            for p in dimension_problems(name, dim, fields_.get(name))]


def _stream(seed: int, name: str) -> np.random.Generator:
    """One random stream per (seed, dimension): a dimension shared by two methods with the same bounds takes the
    same value in their trials of the same seed (paired trials), and adding a dimension changes no other."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def draw_one(dim: tuple, rng: np.random.Generator) -> Any:
    """One value of a dimension; floats rounded to 3 significant digits (a readable, still random, config)."""
    if dim[0] == "choice":
        return dim[1:][int(rng.integers(len(dim) - 1))]
    scale, low, high = dim
    if scale == "linear":
        return float(f"{rng.uniform(low, high):.3g}")
    if scale == "log":
        return float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.3g}")
    if scale == "int":
        return int(rng.integers(int(low), int(high) + 1))
    # int_log: log-uniform on [low, high + 1), floored: each integer with mass log((v + 1) / v) / log((high + 1) / low)
    return min(int(high), int(math.exp(rng.uniform(math.log(low), math.log(high + 1)))))


def draw(space: dict[str, tuple], seed: int) -> dict[str, Any]:
    """The parameters of the trial drawn with ``seed`` (the same seed gives the same values)."""
    return {name: draw_one(dim, _stream(seed, name)) for name, dim in sorted(space.items())}


def trial_seed(study_seed: int, k: int) -> int:
    """The seed of trial ``k`` of the study seeded ``study_seed``: it draws the parameters and seeds the run."""
    return int(np.random.SeedSequence([study_seed, k]).generate_state(1)[0] % 2**31)


# ---------------------------------------------------------------- trials as runs, at equal training FLOPs


def study_problems(where: str, study: Any, methods: Iterable[str]) -> list[str]:
    """Problems of a suite entry's ``study`` mapping and of the search spaces of its methods."""
    if not isinstance(study, dict):
        return [f"{where}.study: expected a mapping {{trials: 8, train_flops: 5.0e+11}}, got {study!r}"]
    problems = [f"{where}.study: unknown key(s) {sorted(set(study) - STUDY_KEYS)}; allowed: {sorted(STUDY_KEYS)}"
                ] if set(study) - STUDY_KEYS else []
    trials, flops = study.get("trials"), study.get("train_flops")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        problems.append(f"{where}.study: 'trials' (K, trials per method and seed) must be an integer >= 1, "
                        f"got {trials!r}")
    if not isinstance(flops, (int, float)) or isinstance(flops, bool) or flops <= 0:
        problems.append(f"{where}.study: 'train_flops' (counted training FLOPs of every trial) must be a number > 0, "
                        f"e.g. 5.0e+11 (YAML needs the dot and the sign), got {flops!r}")
    metric = study.get("metric", QUALITY)
    from ebmbench.builtins import SAMPLE_METRICS

    if metric not in SAMPLE_METRICS.names():
        problems.append(f"{where}.study: 'metric' {metric!r} is not a sample metric; choose from "
                        f"{SAMPLE_METRICS.names()}")
    spaces = study.get("spaces") or {}
    if not isinstance(spaces, dict) or not all(isinstance(v, dict) for v in spaces.values()):
        return problems + [f"{where}.study: 'spaces' must map a method to {{parameter: [scale, low, high]}}, "
                           f"got {spaces!r}"]
    problems += [f"{where}.study.spaces: {m!r} is not a method of this entry" for m in spaces if m not in methods]
    return problems + [f"{where}: {p}" for m in methods for p in space_problems(m, space_for(m, study))]


def space_for(method: str, study: dict[str, Any]) -> dict[str, tuple] | None:
    """``method``'s declared space with the entry's ``spaces.<method>`` dimensions over it (e.g. step sizes that
    suit images); None when the method declares none and the entry adds none."""
    given = (study.get("spaces") or {}).get(method) or {}
    extra = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    try:
        return {**space_of(method), **extra}
    except ValueError:
        return extra or None


_FLOPS_CACHE: dict[str, float] = {}


def step_flops_of(params: dict[str, Any]) -> float:
    """Counted matmul/conv FLOPs of one training step of the run ``params`` describe: built as the run builds it,
    one step on the CPU, one thread, from the run's seed (``training.step_flops``, as the run's own row)."""
    import torch

    from ebmbench import config as config_mod
    from ebmbench.builtins import METHODS, load_dataset
    from ebmbench.methods.base import training_step
    from ebmbench.training import step_flops

    cfg = config_mod.resolve({**params, "train_steps": 1, "device": "cpu"})
    key = json.dumps({k: v for k, v in cfg.to_dict().items() if k not in ("suite", "results_dir")}, sort_keys=True)
    if key not in _FLOPS_CACHE:
        threads, rng = torch.get_num_threads(), torch.get_rng_state()
        torch.set_num_threads(1)
        try:
            torch.manual_seed(cfg.seed)
            spec, dataset = METHODS.get(cfg.method), load_dataset(cfg.dataset)
            model = spec.build(dataset, cfg.method_params)
            step_fn, make_optimizers = training_step(spec, cfg.grad_clip)
            flops = step_flops(step_fn, model, make_optimizers, cfg, dataset.train)  # what the run's row records
        finally:
            torch.set_num_threads(threads)
            torch.set_rng_state(rng)
        if not flops:
            raise ValueError(f"no FLOPs counted in a training step of {cfg.method} on {cfg.dataset}, so its trials "
                             "cannot be given a FLOP budget; give this method train_steps in a plain entry")
        _FLOPS_CACHE[key] = float(flops)
    return _FLOPS_CACHE[key]


def at_budget(params: dict[str, Any], train_flops: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """``params`` with train_steps = floor(train_flops / FLOPs per step) (at least 1), and what was measured."""
    per_step = step_flops_of(params)
    steps = max(1, int(train_flops // per_step))
    return {**params, "train_steps": steps}, {"train_flops_budget": train_flops, "flops_per_step": per_step,
                                              "train_steps": steps}


def expand(base: dict[str, Any], study: dict[str, Any], trials: int | None = None
           ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The runs of one (dataset, method, study seed): K drawn trials at the FLOP budget, the suite's own setting
    of the method at the same budget (``default``), and that setting untrained (``untrained``: one step at
    lr 1e-12, the reference a trial must beat not to count as diverged). Returns (params, study record) pairs."""
    method, study_seed, budget = base["method"], base["seed"], float(study["train_flops"])
    space = space_for(method, study) or space_of(method)
    metric = study.get("metric", QUALITY)
    out = []
    for k in range(trials or study["trials"]):
        seed = trial_seed(study_seed, k)
        drawn = draw(space, seed)
        params, spent = at_budget({**base, **drawn, "seed": seed}, budget)
        out.append((params, {"role": "trial", "trial": k, "study_seed": study_seed, "draw_seed": seed,
                             "drawn": drawn, "space": {n: list(d) for n, d in space.items()}, "metric": metric,
                             **spent}))
    params, spent = at_budget(base, budget)
    out.append((params, {"role": "default", "study_seed": study_seed, "metric": metric, **spent}))
    untrained = {**base, "train_steps": 1, "lr": UNTRAINED_LR, "curve_points": 0}
    out.append((untrained, {"role": "untrained", "study_seed": study_seed, "metric": metric, "train_steps": 1}))
    return out


def write_study(suite_dir: Path, records: dict[str, dict[str, Any]]) -> Path:
    """Merge ``run_id -> study record`` into ``<suite_dir>/study.json`` (a slice of a suite keeps the others)."""
    from ebmbench.results import atomic_write_json

    path = Path(suite_dir) / STUDY_FILE
    old = json.loads(path.read_text()) if path.exists() else {}
    atomic_write_json(path, {**old, **records})
    return path


# ---------------------------------------------------------------- the trial table


def _config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def primary_value(rows: pd.DataFrame, metric: str) -> float:
    """A run's value of ``metric`` from its primary sampler (the cheapest one evaluated: fewest NFE); NaN when the
    run has no ok row of it; +inf for a non-finite value."""
    ok = rows[(rows.metric == metric) & (rows.metric_status == "ok")]
    if ok.empty:
        return float("nan")
    row = ok.sort_values("nfe", na_position="first").iloc[0]
    value = float(row["value"])
    return value if math.isfinite(value) else float("inf")


def trial_table(suite_dir: Path | str, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per study run: role, trial, draw seed, drawn values (columns ``p.<name>``), planned and done steps,
    run status and reason, final quality (reverse KL) and forward KL; empty when the suite is no study."""
    from ebmbench.results import load_results

    suite_dir = Path(suite_dir)
    path = suite_dir / STUDY_FILE
    if not path.exists():
        return pd.DataFrame()
    study = json.loads(path.read_text())
    frame = load_results(suite_dir) if frame is None else frame
    by_run = dict(iter(frame.groupby("run_id"))) if len(frame) else {}
    out = []
    for run_id, rec in study.items():
        rows = by_run.get(run_id)
        cfg = _config(suite_dir / "runs" / run_id)
        if rows is None:  # not run (yet): no row, so not part of the study's table
            continue
        first = rows.iloc[0]
        reason = next((r for r in rows.reason if isinstance(r, str) and r and first.run_status != "ok"), "")
        out.append({"run_id": run_id, "dataset": first.dataset, "method": first.method, "family": first.family,
                    "seed": first.seed, "role": rec["role"], "trial": rec.get("trial"),
                    "study_seed": rec.get("study_seed"),
                    "planned_steps": cfg.get("train_steps", rec.get("train_steps")),
                    "steps_done": first.train_steps, "train_flops": first.train_flops,
                    "train_wall_s": first.train_wall_s, "run_status": first.run_status, "reason": reason,
                    "metric": rec.get("metric", QUALITY), "quality": primary_value(rows, rec.get("metric", QUALITY)),
                    "forward_kl": primary_value(rows, FORWARD),
                    "space": rec.get("space") or {}, **{f"p.{k}": v for k, v in (rec.get("drawn") or {}).items()}})
    return classify(pd.DataFrame(out))


OUTCOMES = ("ok", "guard", "non_finite", "worse_than_untrained", "failed")
DIVERGED = ("guard", "non_finite", "worse_than_untrained")
RULE = ("a trial diverged when (1) a divergence guard stopped it: |loss| or |mean energy| above 1e6, or the "
        "parameter gradient norm above 1e8 (guard); (2) its loss, energy or gradient norm became non-finite, or its "
        "final reverse KL is not finite or could not be computed (non_finite); or (3) it trained to the end but its "
        "final reverse KL is worse than the mean over seeds of the same method untrained (worse_than_untrained). "
        "A run that raised is failed, "
        "counted apart.")


def outcome(row: pd.Series, untrained: float) -> str:
    """The outcome of one trial by the divergence rule (``RULE``)."""
    if row.run_status == "failed":
        return "failed"
    if row.run_status == "diverged":
        return "non_finite" if "non-finite" in str(row.reason) else "guard"
    if pd.isna(row.quality) or not math.isfinite(row.quality):
        return "non_finite"
    return "worse_than_untrained" if math.isfinite(untrained) and row.quality > untrained else "ok"


def classify(trials: pd.DataFrame) -> pd.DataFrame:
    """Add ``untrained`` (the reference quality), ``outcome`` and ``diverged_at`` (fraction of the planned steps
    done when a guard stopped the run; 1 for a run worse than untrained at its end)."""
    if trials.empty:
        return trials
    ref = (trials[trials.role == "untrained"].groupby(["dataset", "method"]).quality
           .apply(lambda q: float(np.mean(q[np.isfinite(q)])) if np.isfinite(q).any() else float("nan")))
    trials = trials.copy()
    trials["untrained"] = [ref.get((d, m), float("nan")) for d, m in zip(trials.dataset, trials.method)]
    trials["outcome"] = [outcome(r, r.untrained) if r.role != "untrained" else "reference"
                         for r in trials.itertuples()]
    done = trials.steps_done.astype(float) / trials.planned_steps.astype(float)
    trials["diverged_at"] = np.where(trials.outcome.isin(DIVERGED), done, np.nan)
    return trials


# ---------------------------------------------------------------- statistics


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k / n (Wilson 1927); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def expected_best(values: Iterable[float], k: int, lower_is_better: bool = True) -> float:
    """E[best of k trials drawn without replacement from ``values``], exactly, by order statistics: with the
    values sorted best first, the best of k is the i-th with probability C(n - i, k - 1) / C(n, k)
    (Lucic et al. 2018's budget curve, without the resampling noise)."""
    x = np.sort(np.asarray(list(values), dtype=float))
    x = x if lower_is_better else x[::-1]
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"expected_best: k must be in [1, {n}] (the number of trials), got {k}")
    i = np.arange(1, n + 1)
    log_w = np.array([math.lgamma(n - j + 1) - math.lgamma(k) - math.lgamma(n - j - k + 2) if n - j >= k - 1
                      else -np.inf for j in i]) - (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1))
    w = np.exp(log_w)
    possible = w > 0  # a diverged trial (+inf) that can be the best makes the expectation +inf
    return float(np.dot(w[possible], x[possible]))


def bootstrap_best(values: Iterable[float], k: int, n_boot: int = 2000, seed: int = 0,
                   lower_is_better: bool = True) -> np.ndarray:
    """Best of k trials drawn without replacement, ``n_boot`` times (Lucic et al. 2018's bootstrap)."""
    x = np.asarray(list(values), dtype=float)
    rng = np.random.default_rng(seed)
    picks = np.argsort(rng.random((n_boot, len(x))), axis=1)[:, :k]
    chosen = x[picks]
    return chosen.min(axis=1) if lower_is_better else chosen.max(axis=1)


def budget_curves(trials: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per dataset and method, for k = 1..n trials: the expected best reverse KL (exact) and the bootstrap's
    median and 2.5-97.5 % band. A diverged or failed trial counts as a wasted trial (+inf)."""
    rows = []
    tried = trials[trials.role == "trial"]
    for (dataset, method), g in tried.groupby(["dataset", "method"]):
        q = np.where(g.outcome.isin(["ok", "worse_than_untrained"]), g.quality, np.inf)
        for k in range(1, len(q) + 1):
            boot = bootstrap_best(q, k, n_boot, seed)
            lo, med, hi = np.quantile(boot, [0.025, 0.5, 0.975], method="inverted_cdf")  # inf-safe: no lerp
            rows.append({"dataset": dataset, "method": method, "k": k, "expected_best": expected_best(q, k),
                         "median": med, "low": lo, "high": hi, "n_trials": len(q)})
    return pd.DataFrame(rows)


def divergence_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and method: trials, each outcome's count, the divergence rate with its Wilson 95 % interval,
    and the median fraction of training done when a diverged run stopped."""
    rows = []
    for (dataset, method), g in trials[trials.role == "trial"].groupby(["dataset", "method"]):
        counts = g.outcome.value_counts()
        n = int(len(g) - counts.get("failed", 0))
        k = int(sum(counts.get(o, 0) for o in DIVERGED))
        lo, hi = wilson(k, n)
        rows.append({"dataset": dataset, "method": method, "trials": n,
                     **{o: int(counts.get(o, 0)) for o in OUTCOMES}, "diverged": k,
                     "rate": k / n if n else float("nan"), "wilson_low": lo, "wilson_high": hi,
                     "median_diverged_at": float(g.diverged_at.median()) if k else float("nan")})
    return pd.DataFrame(rows)


def trial_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and method: trials by outcome, the best and median final reverse KL over trials that did not
    diverge, the suite's own setting (default) and the untrained reference, and the steps the budget bought."""
    if trials.empty:
        return trials
    rows = []
    for (dataset, method), g in trials.groupby(["dataset", "method"]):
        tried = g[g.role == "trial"]
        good = tried[tried.outcome == "ok"].quality
        rows.append({"dataset": dataset, "method": method, "trials": len(tried),
                     "ok": int((tried.outcome == "ok").sum()), "diverged": int(tried.outcome.isin(DIVERGED).sum()),
                     "failed": int((tried.outcome == "failed").sum()),
                     "best": good.min() if len(good) else float("nan"),
                     "median": good.median() if len(good) else float("nan"),
                     "default": g[g.role == "default"].quality.mean(), "untrained": g.untrained.iloc[0],
                     "steps_min": tried.planned_steps.min(), "steps_max": tried.planned_steps.max(),
                     "train_wall_s_median": tried.train_wall_s.median()})
    return pd.DataFrame(rows)


def sensitivity(trials: pd.DataFrame) -> pd.DataFrame:
    """Long table: (method, parameter, value, quality, outcome) for every drawn value of every trial."""
    tried = trials[trials.role == "trial"]
    cols = [c for c in tried.columns if c.startswith("p.")]
    long = tried.melt(id_vars=["dataset", "method", "quality", "outcome"], value_vars=cols, var_name="parameter",
                      value_name="value").dropna(subset=["value"])
    long["parameter"] = long.parameter.str.removeprefix("p.")
    space = {m: sp for m, sp in zip(tried.method, tried.space)} if "space" in tried else {}
    dims = [space.get(m, {}).get(p, [None]) for m, p in zip(long.method, long.parameter)]
    long["scale"] = [d[0] for d in dims]  # as declared (or widened by the suite entry): log, linear, int, ...
    long["low"] = [d[1] if len(d) == 3 and d[0] != "choice" else None for d in dims]
    long["high"] = [d[2] if len(d) == 3 and d[0] != "choice" else None for d in dims]
    return long


def spread(values: pd.Series) -> float:
    """The spread of per-method qualities: the range of log10 reverse KL (a ratio scale; NaN with < 2 finite)."""
    v = np.log10(values[np.isfinite(values) & (values > 0)].astype(float))
    return float(v.max() - v.min()) if len(v) >= 2 else float("nan")


# ---------------------------------------------------------------- the trained EBMs under other samplers


def load_trained(run_dir: Path) -> tuple[Any, Any]:
    """(model, dataset) of a finished run: rebuilt from its config.json and loaded with its evaluated weights."""
    import torch

    from ebmbench import config as config_mod
    from ebmbench.builtins import METHODS, load_dataset
    from ebmbench.serialization import load_checkpoint
    from ebmbench.training import CHECKPOINT, load_weights

    saved = _config(run_dir)
    flat = {k: v for k, v in saved.items() if k not in ("config_hash", "run_id", "method_params")}
    cfg = config_mod.resolve({**flat, **saved["method_params"], "device": "cpu"})
    torch.manual_seed(cfg.seed)
    dataset = load_dataset(cfg.dataset)
    model = METHODS.get(cfg.method).build(dataset, cfg.method_params)
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    if cfg.eval_weights == "ema":
        load_weights(model, ckpt["ema"])
    else:
        model.load_state_dict(ckpt["model"])
    return model.eval(), dataset


def sweep_budgets(steps: tuple[int, ...] = (25, 100, 400), eps: tuple[float, ...] = (0.003, 0.01, 0.03),
                  leapfrog: int = 5) -> list[tuple[str, dict[str, Any]]]:
    """ULA at every (eps, steps); MALA and HMC at the middle eps: MALA at the same steps, HMC with ``leapfrog``
    leapfrog steps of size sqrt(2 eps) (one leapfrog step then moves as far as one Langevin step) and steps /
    ``leapfrog`` transitions, so that all three spend about the same gradient evaluations per sample at each
    ``steps``; all at T = 1."""
    mid = eps[len(eps) // 2]
    out = []
    for s in steps:
        out += [("langevin", {"steps": s, "eps": e, "temperature": 1.0}) for e in eps]
        out.append(("mala", {"steps": s, "eps": mid, "temperature": 1.0}))
        out.append(("hmc", {"steps": max(1, s // leapfrog), "leapfrog_steps": leapfrog,
                            "step_size": float(f"{math.sqrt(2 * mid):.3g}"), "temperature": 1.0, "eps": mid}))
    return out


def best_runs(trials: pd.DataFrame, family: str = "ebm") -> pd.DataFrame:
    """Per dataset and method of ``family``, the trial of best final quality among those that did not diverge."""
    ok = trials[(trials.role == "trial") & (trials.outcome == "ok") & (trials.family == family)
                & (trials.metric == QUALITY)]  # the sweep's reverse KL needs the 2D densities
    return ok.sort_values("quality").groupby(["dataset", "method"], as_index=False).head(1)


def sampler_sweep(suite_dir: Path | str, trials: pd.DataFrame, n: int = 500, seed: int = 0,
                  budgets: list[tuple[str, dict[str, Any]]] | None = None) -> pd.DataFrame:
    """Reverse KL of the best trained EBM of each method under each sampler budget, with the gradient
    evaluations per sample the samplers were counted to spend (the model's ``CountingNet``; no FLOP count, which
    would replay every chain under a FLOP counter)."""
    import torch

    from ebmbench.metrics.registry import SAMPLE_METRICS

    kl = SAMPLE_METRICS.get(QUALITY)
    rows = []
    for best in best_runs(trials).itertuples():
        model, dataset = load_trained(Path(suite_dir) / "runs" / best.run_id)
        for sampler, labelled in budgets or sweep_budgets():
            budget = {k: v for k, v in labelled.items() if not (sampler == "hmc" and k == "eps")}
            generator = torch.Generator().manual_seed(seed)
            try:
                samples = model.sample(n, generator=generator, sampler=sampler, **budget)
                value, stderr, _ = kl(samples.x.detach().float().cpu(), dataset)
                status = "ok"
            except (FloatingPointError, ValueError, RuntimeError) as err:
                samples, value, stderr, status = None, float("nan"), float("nan"), f"{type(err).__name__}: {err}"
            rows.append({"dataset": best.dataset, "method": best.method, "run_id": best.run_id, "sampler": sampler,
                         **{f"b.{k}": v for k, v in budget.items()}, "eps": labelled.get("eps"),
                         "grad_evals": samples.cost.grad_evals if samples else float("nan"),
                         "reverse_kl": value, "stderr": stderr, "status": status})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the study's findings, from rows

NOT_ENOUGH = "not enough rows"


def long_run_pairs(trials: pd.DataFrame, frame: pd.DataFrame, method: str = "short_run_ebm") -> pd.DataFrame:
    """Per trained run of ``method`` that did not diverge: reverse KL of its fresh K-step chains and of chains
    ``long_run_factor`` times longer from the same energy (rows ``langevin@K`` and ``langevin@L``)."""
    runs = trials[(trials.method == method) & (trials.role != "untrained") & (trials.outcome == "ok")]
    rows = frame[frame.run_id.isin(runs.run_id) & (frame.metric == QUALITY) & (frame.metric_status == "ok")
                 & frame.sampler.fillna("").str.match(r"^langevin@\d+$")]
    out = []
    for run_id, g in rows.groupby("run_id"):
        g = g.sort_values("nfe")
        if len(g) >= 2:
            out.append({"run_id": run_id, "K": g.nfe.iloc[0], "kl_K": g.value.iloc[0], "L": g.nfe.iloc[-1],
                        "kl_L": g.value.iloc[-1], "degrades": bool(g.value.iloc[-1] > g.value.iloc[0])})
    return pd.DataFrame(out)


def finding_long_run(trials: pd.DataFrame, frame: pd.DataFrame) -> dict[str, Any]:
    """Nijkamp et al. 2019: a short-run EBM's fresh K-step chains sample well and its long-run chains degrade.
    Holds when most non-diverged short-run trials have a worse reverse KL at L steps than at K, and the best of
    them at K beats the untrained model."""
    pairs = long_run_pairs(trials, frame) if len(trials) else pd.DataFrame()
    if len(pairs) < 2:
        return {"finding": "short-run EBM: long-run chains degrade", "holds": NOT_ENOUGH, "n": len(pairs)}
    untrained = trials[(trials.method == "short_run_ebm")].untrained.iloc[0]
    frac = float(pairs.degrades.mean())
    return {"finding": "short-run EBM: long-run chains degrade", "n": len(pairs), "fraction_degrading": frac,
            "median_kl_K": float(pairs.kl_K.median()), "median_kl_L": float(pairs.kl_L.median()),
            "best_kl_K": float(pairs.kl_K.min()), "untrained_kl": float(untrained),
            "holds": bool(frac > 0.5 and pairs.kl_K.min() < untrained)}


def finding_pcd_diverges_less(trials: pd.DataFrame) -> dict[str, Any]:
    """PCD with a replay buffer diverges less often than fresh short-run training at equal step size (trial k of
    both draws the same langevin_eps and lr). Holds when its rate is lower; ``clear`` when the Wilson intervals
    do not overlap."""
    table = divergence_table(trials) if len(trials) else pd.DataFrame()
    name = "PCD diverges less often than short-run training"
    need = {"pcd_ebm", "short_run_ebm"}
    if table.empty or not need <= set(table.method) or (table[table.method.isin(need)].trials < 2).any():
        return {"finding": name, "holds": NOT_ENOUGH}
    pcd, sr = (table[table.method == m].iloc[0] for m in ("pcd_ebm", "short_run_ebm"))
    return {"finding": name, "pcd_rate": pcd.rate, "pcd_interval": (pcd.wilson_low, pcd.wilson_high),
            "pcd_trials": int(pcd.trials), "short_run_rate": sr.rate,
            "short_run_interval": (sr.wilson_low, sr.wilson_high), "short_run_trials": int(sr.trials),
            "holds": bool(pcd.rate < sr.rate), "clear": bool(pcd.wilson_high < sr.wilson_low)}


def finding_lucic(trials: pd.DataFrame) -> dict[str, Any]:
    """Lucic et al. 2018 on this benchmark: with the same number of trials, the spread between the methods'
    best configurations is smaller than the spread at default settings (spread: range of log10 reverse KL over
    methods; a diverged default counts as missing). The ranges are reported beside it: bests that are all
    equally bad are close too, so read the spread with them."""
    name = "the best configurations are closer than the defaults"
    if trials.empty:
        return {"finding": name, "holds": NOT_ENOUGH}
    tried = trials[(trials.role == "trial") & trials.outcome.isin(["ok", "worse_than_untrained"])]
    best = tried.groupby("method").quality.min()
    default = trials[(trials.role == "default") & trials.outcome.isin(["ok", "worse_than_untrained"])]
    default = default.groupby("method").quality.mean()
    common = best.index.intersection(default.index)
    per_method = trials[trials.role == "trial"].groupby("method").size()
    if len(common) < 2 or per_method.min() < 2:  # a best of one trial is no search
        return {"finding": name, "holds": NOT_ENOUGH, "methods": len(common),
                "trials_per_method": int(per_method.min())}
    s_best, s_default = spread(best[common]), spread(default[common])
    return {"finding": name, "methods": len(common), "trials_per_method": int(per_method.min()),
            "spread_best_log10": s_best, "spread_default_log10": s_default,
            "best_range": (float(best[common].min()), float(best[common].max())),
            "default_range": (float(default[common].min()), float(default[common].max())),
            "holds": bool(s_best < s_default)}


def _spelled(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_spelled(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def findings(trials: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """The study's three findings: whether each holds (or not enough rows), and its measured numbers, one line."""
    rows = [finding_long_run(trials, frame), finding_pcd_diverges_less(trials), finding_lucic(trials)]
    return pd.DataFrame([{"finding": r["finding"], "holds": r["holds"],
                          "measured": "; ".join(f"{k} = {_spelled(v)}" for k, v in r.items()
                                                if k not in ("finding", "holds"))} for r in rows])
