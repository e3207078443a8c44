"""Suite files -> runs; serial execution of each run's notebook with papermill; skip finished runs."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ebmbench import config as config_mod
from ebmbench.builtins import METHODS
from ebmbench.compose import compositions_from
from ebmbench.kernels import (  # noqa: F401  (re-exported: the paths and kernel settings live in kernels.py)
    KERNEL_ARGS,
    KERNEL_WARNINGS,
    NOTEBOOKS_DIR,
    ROOT,
    SUITES_DIR,
    THREAD_ENV,
    UNSET_ENV,
    kernel_environment,
)
from ebmbench.results import MANIFEST, aggregate, atomic_write_json, provenance, read_result
from ebmbench.run import RESULT, failed_record, run_dir_for

SUITE_KEYS = {"name", "description", "defaults", "runs", "timeout", "compositions",  # compositions: ebmbench/compose.py
              "sampling"}  # sampling: AIS/SMC on analytic targets, ebmbench/sampling.py
ENTRY_KEYS = {"datasets", "methods", "seeds", "params", "method_params", "timeout", "study"}
DEFAULT_TIMEOUT_S = 24 * 3600  # a run's wall-clock limit unless its suite entry sets `timeout` (seconds)
LOCK = ".lock"


class _KnownParameters(logging.Filter):
    """Drop papermill's 'Passed unknown parameter' warning: a notebook's parameters cell lists the
    common ones only, and every parameter was already validated by ``config.resolve``. Drop nbclient's
    'Timeout waiting for execute reply' too: a run past its limit is a failed row that says so."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "Passed unknown parameter" not in message and "Timeout waiting for execute reply" not in message


logging.getLogger("papermill").addFilter(_KnownParameters())


class SuiteError(ValueError):
    """A suite file that does not validate; the message names the file, the entry and the key."""


@dataclass
class RunSpec:
    """One run of a suite: its validated flat parameters, the notebook that executes it and its wall-clock limit."""

    params: dict[str, Any]
    cfg: config_mod.RunConfig
    notebook: Path
    timeout_s: float = DEFAULT_TIMEOUT_S
    trial: dict[str, Any] | None = None  # a study's record of this run (ebmbench/study.py): role, draw seed, budget

    @property
    def run_dir(self) -> Path:
        return run_dir_for(self.cfg)


def suite_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SuiteError(f"suite file {path} does not exist")
        return path
    path = SUITES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
        raise SuiteError(f"unknown suite {name_or_path!r}; choose one of: {known} (or pass a .yaml path)")
    return path


def read_suite_file(path: Path) -> dict[str, Any]:
    """The suite file's YAML mapping; a syntax error becomes one line with its position."""
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SuiteError(f"{path}: not valid YAML{at}: {problem}; fix the syntax there") from None
    if not isinstance(doc, dict):
        raise SuiteError(f"{path}: expected a mapping with keys {sorted(SUITE_KEYS)}, got {type(doc).__name__}")
    return doc


def suite_name(path: Path, doc: dict[str, Any], results_dir: str) -> str:
    """The suite's name: a plain folder name whose resolved folder lies directly under the results folder."""
    name = doc.get("name") or path.stem
    if not isinstance(name, str) or not config_mod.SUITE_NAME.fullmatch(name):
        raise SuiteError(f"{path}: name {name!r} is not a plain folder name; use letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit (e.g. name: my-suite)")
    root = Path(results_dir).resolve()
    folder = (root / name).resolve()
    if folder.parent != root:
        raise SuiteError(f"{path}: name {name!r} resolves to {folder}, outside the results folder {root}; "
                         "rename the suite or remove the link")
    return name


def _key_problems(where: str, d: Any, allowed: set[str]) -> list[str]:
    if not isinstance(d, dict):
        return [f"{where}: expected a mapping, got {type(d).__name__} {d!r}"]
    unknown = sorted(set(d) - allowed)
    return [f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}"] if unknown else []


def _list_problems(where: str, entry: dict, key: str, kind: type, example: str) -> list[str]:
    value = entry.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, kind) and not isinstance(v, bool)
                                                           for v in value):
        return [f"{where}: {key!r} must be a non-empty list of {kind.__name__}, e.g. {key}: {example}; "
                f"got {value!r}"]
    return []


def _timeout_problems(where: str, d: dict) -> list[str]:
    value = d.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return [f"{where}: 'timeout' is a run's wall-clock limit in seconds, a number > 0 (e.g. timeout: 3600); "
                f"got {value!r}"]
    return []


SET_BY_SUITE = {"seed": "the entry's seeds list (seeds: [0, 1, 2])", "dataset": "the entry's datasets list",
                "method": "the entry's methods list", "suite": "the suite's name", "results_dir": "--results-dir"}


def _set_by_suite(where: str, params: Any) -> list[str]:
    """Parameters a suite sets itself: written in defaults or params they would be silently overridden."""
    if not isinstance(params, dict):
        return []
    return [f"{where}: {k!r} is set by {SET_BY_SUITE[k]}, not as a parameter" for k in params if k in SET_BY_SUITE]


def entry_problems(where: str, entry: Any) -> list[str]:
    """Problems of one `runs` entry's structure (its keys, lists, seeds, mappings and timeout)."""
    problems = _key_problems(where, entry, ENTRY_KEYS)
    if not isinstance(entry, dict):
        return problems
    problems += _list_problems(where, entry, "datasets", str, "[eight_gaussians]")
    problems += _list_problems(where, entry, "methods", str, "[ddpm]")
    if "seeds" in entry:
        problems += _list_problems(where, entry, "seeds", int, "[0, 1, 2]")
    if not isinstance(entry.get("params") or {}, dict):
        problems.append(f"{where}: 'params' must be a mapping of parameter: value, got {entry['params']!r}")
    problems += _set_by_suite(f"{where}.params", entry.get("params"))
    per_method = entry.get("method_params") or {}
    # any registered method may be named (YAML anchors share one block), a misspelled one may not
    problems += _key_problems(f"{where}.method_params", per_method, set(METHODS.names()))
    if isinstance(per_method, dict):
        problems += [f"{where}.method_params.{m}: must be a mapping of parameter: value, got {v!r}"
                     for m, v in per_method.items() if not isinstance(v or {}, dict)]
        problems += [p for m, v in per_method.items() for p in _set_by_suite(f"{where}.method_params.{m}", v)]
    if "study" in entry:  # a random-search study (ebmbench/study.py): K drawn trials per method and seed
        from ebmbench.study import study_problems

        problems += study_problems(where, entry["study"], entry.get("methods") or [])
    return problems + _timeout_problems(where, entry)


def _problem_lines(bad: dict[tuple[str, str], list[str]]) -> list[str]:
    """One line per (entry, problem), naming its first run and how many more share it."""
    lines = []
    for (where, problem), combos in bad.items():
        more = len(combos) - 1
        runs = combos[0] if not more else f"{combos[0]}, and {more} more run{'s' if more > 1 else ''}"
        lines.append(f"{where} ({runs}): {problem}")
    return lines


def load_suite(name_or_path: str, results_dir: str = "results", overrides: dict[str, Any] | None = None,
               trials: int | None = None) -> tuple[str, list[RunSpec]]:
    """Parse and validate a suite file into runs. Every run's parameters are validated up front, and every
    problem of the file is reported at once, one line each, in one ``SuiteError``. ``trials`` overrides the K of
    every study entry."""
    path = suite_path(name_or_path)
    doc = read_suite_file(path)
    name = suite_name(path, doc, results_dir)
    problems = _key_problems(str(path), doc, SUITE_KEYS) + _timeout_problems(str(path), doc)
    defaults = doc.get("defaults") or {}
    problems += [] if isinstance(defaults, dict) else [f"{path}: defaults: expected a mapping, got {defaults!r}"]
    problems += _set_by_suite(f"{path}: defaults", defaults)
    entries = doc.get("runs") or []
    if not isinstance(entries, list):
        problems.append(f"{path}: 'runs' must be a list of entries (- datasets: [...]), got {type(entries).__name__}")
        entries = []
    runs: list[RunSpec] = []
    bad: dict[tuple[str, str], list[str]] = {}
    for i, entry in enumerate(entries):
        where = f"{path}: runs[{i}]"
        structure = entry_problems(where, entry)
        if structure:
            problems += structure
            continue
        timeout = entry.get("timeout", doc.get("timeout", DEFAULT_TIMEOUT_S))
        per_method = entry.get("method_params") or {}
        for dataset, method, seed in itertools.product(entry["datasets"], entry["methods"], entry.get("seeds", [0])):
            params = {**(defaults if isinstance(defaults, dict) else {}), **(entry.get("params") or {}),
                      **(per_method.get(method) or {}), "dataset": dataset, "method": method, "seed": seed,
                      "suite": name, "results_dir": str(Path(results_dir).resolve()), **(overrides or {})}
            try:
                expanded = _expanded(params, entry.get("study"), trials)
            except ValueError as err:  # a config problem met while measuring a trial's FLOPs
                for problem in getattr(err, "problems", [str(err)]):
                    bad.setdefault((where, problem), []).append(f"{dataset}, {method}, seed {seed}")
                continue
            for params, trial in expanded:
                try:
                    cfg = config_mod.resolve(params)
                except config_mod.ConfigError as err:
                    for problem in err.problems:
                        bad.setdefault((where, problem), []).append(f"{dataset}, {method}, seed {seed}")
                    continue
                # inject every resolved parameter: the notebook's own defaults must never apply in a suite
                runs.append(RunSpec(cfg.flat_params(), cfg, NOTEBOOKS_DIR / METHODS.get(method).notebook, timeout,
                                    trial))
    problems += _problem_lines(bad)
    if not entries:
        problems.append(f"{path}: the suite lists no runs; add entries under runs:")
    # compositions run after the runs they compose (their `needs`), from those runs' checkpoints
    compositions, composition_problems = compositions_from(doc.get("compositions"), runs, name, results_dir,
                                                           str(path), doc.get("timeout", DEFAULT_TIMEOUT_S))
    problems += composition_problems
    from ebmbench.sampling import sampling_from

    sampling, sampling_problems = sampling_from(doc.get("sampling"), name, results_dir, str(path),
                                                doc.get("timeout", DEFAULT_TIMEOUT_S))
    problems += sampling_problems
    if problems:
        raise SuiteError("\n".join(problems))
    runs = [*runs, *compositions, *sampling]  # type: ignore[list-item]
    ids = [r.cfg.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"{path}: duplicate runs (same resolved config twice)")
    return name, runs


def _expanded(params: dict[str, Any], study: dict[str, Any] | None, trials: int | None
              ) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """One run per entry combination, or a study's runs (its trials, the default and the untrained reference)."""
    if study is None:
        return [(params, None)]
    from ebmbench.study import expand

    return expand(params, study, trials)


def is_finished(spec: RunSpec, code: dict[str, Any]) -> bool:
    """Finished = an ok or diverged result from the same config hash and the same code version
    (the commit, plus a hash of any uncommitted changes). An unreadable result is moved aside: not finished."""
    record = read_result(spec.run_dir)
    if not record or record.get("run_status") not in ("ok", "diverged"):
        return False
    row = record["rows"][0]
    return (row.get("config_hash") == spec.cfg.config_hash
            and (row.get("versions") or {}).get("code") == code["versions"]["code"])


@contextlib.contextmanager
def suite_lock(suite_dir: Path) -> Iterator[None]:
    """Hold ``<suite_dir>/.lock`` while a suite runs: a second ``ebmbench run`` on the same folder is refused
    (the lock is the kernel's: it goes with the process, also when the process is killed)."""
    import fcntl

    suite_dir.mkdir(parents=True, exist_ok=True)
    with open(suite_dir / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise SuiteError(f"{suite_dir} is in use by another `ebmbench run` ({holder}); wait for it to end, "
                             "or pass another --results-dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class InfrastructureError(RuntimeError):
    """The kernel died, or the notebook ended without its completion marker and without an error."""


def execute(spec: RunSpec, *, timeout_s: float | None = None) -> str:
    """Execute one run's notebook with papermill; returns the run status it ended with.

    A notebook error, or running past the wall-clock limit (``timeout_s``, else the spec's), is a ``failed``
    record at once; a dead kernel or a missing completion marker raises ``InfrastructureError`` so that the
    caller may retry.
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    run_dir, limit = spec.run_dir, timeout_s or spec.timeout_s
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT).unlink(missing_ok=True)
    deadline = time.monotonic() + limit
    try:
        with kernel_environment(spec.cfg.threads):
            # each cell may take what is left of the run's limit (nbclient's limits are per cell)
            pm.execute_notebook(str(spec.notebook), str(run_dir / "notebook.ipynb"), parameters=spec.params,
                                progress_bar=False, kernel_name="python3", cwd=str(spec.notebook.parent),
                                extra_arguments=KERNEL_ARGS,
                                timeout_func=lambda cell: max(1.0, deadline - time.monotonic()))
    except pm.PapermillExecutionError as err:
        record_failure(spec, f"notebook raised {err.ename}: {err.evalue}")
        return "failed"
    except CellTimeoutError:
        record_failure(spec, f"the run ran past its wall-clock limit of {limit:g} s and its kernel was "
                                            "stopped; raise `timeout` in its suite entry or pass --timeout")
        return "failed"
    except DeadKernelError as err:  # papermill does not mark a dead kernel as a cell error
        raise InfrastructureError(f"the kernel died: {err}") from err
    record = read_result(run_dir)
    if record is None:
        raise InfrastructureError("the notebook ended without writing result.json (its last cell)")
    return record["run_status"]


def execute_after(spec: RunSpec, *needed: str, timeout_s: float | None = None) -> str:
    """``execute`` once the runs it needs have ended (Dask passes their statuses; a composition whose component
    failed records that itself, from the component's result)."""
    return execute(spec, timeout_s=timeout_s)


def record_failure(spec: RunSpec, reason: str) -> None:
    """The failed record of a run, or of a composition (which writes its own kind of row)."""
    own = getattr(spec, "failed_record", None)
    if own is not None:
        own(reason)
    else:
        failed_record(spec.params, spec.run_dir, reason)


def execute_with_retries(spec: RunSpec, retries: int = 2, timeout_s: float | None = None) -> str:
    """``execute``, retrying infrastructure deaths up to ``retries`` times, then a failed record."""
    last: InfrastructureError | None = None
    for _ in range(max(retries, 0) + 1):
        try:
            return execute(spec, timeout_s=timeout_s)
        except InfrastructureError as err:
            last = err
    record_failure(spec, f"infrastructure failure after {retries + 1} attempts: {last}")
    return "failed"


@dataclass
class SuiteSummary:
    """What a suite execution did, by run id."""

    name: str
    statuses: dict[str, str]
    wall_s: float
    suite_dir: Path

    @property
    def failed(self) -> list[str]:
        return [k for k, v in self.statuses.items() if v == "failed"]

    def lines(self) -> list[str]:
        counts: dict[str, int] = {}
        for status in self.statuses.values():
            counts[status] = counts.get(status, 0) + 1
        out = [f"suite {self.name}: {len(self.statuses)} runs in {self.wall_s:.0f} s: "
               + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))]
        out += [f"  failed: {run_id}" for run_id in self.failed]
        out += [f"  diverged: {k}" for k, v in self.statuses.items() if v == "diverged"]
        return out


def run_suite(runs: list[RunSpec], name: str, *, workers: int = 0, scheduler: str | None = None,
              retries: int = 2, timeout_s: float | None = None, progress: bool = True,
              manifest: list[str] | None = None) -> SuiteSummary:
    """Execute every unfinished run, serially (workers=0) or as Dask tasks, then aggregate.

    Dask: a ``LocalCluster`` of ``workers`` processes, or the scheduler at ``scheduler``
    (e.g. a dask-jobqueue cluster's address). Rerunning skips runs whose config hash and
    commit match a finished (ok or diverged) result. ``timeout_s`` overrides every run's wall-clock limit.
    """
    code = provenance("cpu")
    t0 = time.perf_counter()
    if any(s.trial for s in runs):  # a study: which run is which trial (ebmbench/study.py), written before any runs
        from ebmbench.study import write_study

        write_study(runs[0].run_dir.parent.parent, {s.cfg.run_id: s.trial for s in runs if s.trial})
    statuses = {s.cfg.run_id: "skipped (finished)" for s in runs if is_finished(s, code)}
    todo = [s for s in runs if s.cfg.run_id not in statuses]
    if workers or scheduler:
        statuses.update(_run_dask(todo, name, workers, scheduler, retries, timeout_s, progress))
    else:
        from tqdm.auto import tqdm

        for spec in tqdm(todo, desc=f"suite {name}", unit="run", disable=not progress):
            statuses[spec.cfg.run_id] = execute_with_retries(spec, retries, timeout_s)
    suite_dir = runs[0].run_dir.parent.parent
    atomic_write_json(suite_dir / MANIFEST, {"name": name, "run_ids": manifest or [s.cfg.run_id for s in runs]})
    aggregate(suite_dir)
    ordered = {s.cfg.run_id: statuses[s.cfg.run_id] for s in runs}
    return SuiteSummary(name, ordered, time.perf_counter() - t0, suite_dir)


def _run_dask(todo: list[RunSpec], name: str, workers: int, scheduler: str | None, retries: int,
              timeout_s: float | None, progress: bool) -> dict[str, str]:
    """One Dask task per run; Dask retries infrastructure deaths (and lost workers)."""
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
    statuses: dict[str, str] = {}
    with Client(scheduler or cluster) as client:
        futures: dict[Any, RunSpec] = {}
        by_id: dict[str, Any] = {}
        for spec in todo:  # a composition waits for the futures of the runs it needs (finished ones have none)
            needs = [by_id[i] for i in getattr(spec, "needs", ()) if i in by_id]
            future = client.submit(execute_after, spec, *needs, timeout_s=timeout_s, retries=retries, pure=False,
                                   key=f"{name}-{spec.cfg.run_id}")
            futures[future], by_id[spec.cfg.run_id] = spec, future
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"suite {name}", unit="run",
                           disable=not progress):
            spec = futures[future]
            try:
                statuses[spec.cfg.run_id] = future.result()
            except Exception as err:  # retries exhausted: the run is a failed row, never a gap
                why = f"{type(err).__name__}: {err}"
                record_failure(spec, f"infrastructure failure after {retries + 1} attempts: {why}")
                statuses[spec.cfg.run_id] = "failed"
    if cluster is not None:
        cluster.close()
    return statuses
