"""Suite files -> runs; serial execution of each run's notebook with papermill; skip finished runs."""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ebmbench import config as config_mod
from ebmbench import plugins
from ebmbench.builtins import METHODS
from ebmbench.compose import compositions_from
from ebmbench.kernels import (  # noqa: F401  (re-exported: the paths and kernel settings live in kernels.py)
    KERNEL_ARGS,
    KERNEL_WARNINGS,
    LOCK,
    NOTEBOOKS_DIR,
    ROOT,
    SUITES_DIR,
    THREAD_ENV,
    UNSET_ENV,
    kernel_environment,
)
from ebmbench.params import shown
from ebmbench.results import MANIFEST, aggregate, atomic_write_json, provenance, read_result
from ebmbench.run import RESULT, failed_record, run_dir_for

SUITE_KEYS = {"name", "description", "defaults", "runs", "timeout", "compositions",  # compositions: ebmbench/compose.py
              "plugins",  # modules to import (ebmbench/plugins.py), as installed entry points are
              "sampling"}  # sampling: AIS/SMC on analytic targets, ebmbench/sampling.py
ENTRY_KEYS = {"datasets", "methods", "seeds", "params", "method_params", "timeout", "study", "label"}
DEFAULT_TIMEOUT_S = 24 * 3600  # a run's wall-clock limit unless its suite entry sets `timeout` (seconds)
MAX_LIST, MAX_RUNS = 1000, 100_000  # longest datasets/methods/seeds list of an entry, most runs of a suite
MAX_SUITE_BYTES = 1_000_000  # the committed suites are a few kB


QUIET = ("Passed unknown parameter", "Timeout waiting for execute reply", "Error occurred while starting new kernel")


class _KnownParameters(logging.Filter):
    """Drop papermill's 'Passed unknown parameter' warning: a notebook's parameters cell lists the
    common ones only, and every parameter was already validated by ``config.resolve``. Drop nbclient's
    'Timeout waiting for execute reply' too: a run past its limit is a failed row that says so; and the kernel
    start-up error, which the run's failed row states with its kernel spec."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(known in message for known in QUIET)


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
    label: str = ""  # the suite entry's `label` (a recipe name, e.g. ddpm_budget): `ebmbench run --only` selects by it

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
    """The suite file's YAML mapping; a syntax error becomes one line with its position. A file over
    ``MAX_SUITE_BYTES`` is refused before it is parsed."""
    size = path.stat().st_size
    if size > MAX_SUITE_BYTES:
        raise SuiteError(f"{path}: {size} bytes; a suite file may have at most {MAX_SUITE_BYTES} (list seeds and "
                         "runs, not their expansion)")
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
        raise SuiteError(f"{path}: name {shown(name)} is not a plain folder name; use letters, digits, '.', '_' "
                         "and '-', starting with a letter or digit (e.g. name: my-suite)")
    root = Path(results_dir).resolve()
    folder = (root / name).resolve()
    if folder.parent != root:
        raise SuiteError(f"{path}: name {name!r} resolves to {folder}, outside the results folder {root}; "
                         "rename the suite or remove the link")
    return name


def _key_problems(where: str, d: Any, allowed: set[str]) -> list[str]:
    if not isinstance(d, dict):
        return [f"{where}: expected a mapping, got {type(d).__name__} {shown(d)}"]
    unknown = sorted(map(str, set(d) - allowed))
    return [f"{where}: unknown key(s) {shown(unknown)}; allowed: {sorted(allowed)}"] if unknown else []


def _list_problems(where: str, entry: dict, key: str, kind: type, example: str) -> list[str]:
    """A list's size is checked before its items (an aliased YAML list can be huge); messages show values cut."""
    value = entry.get(key)
    if isinstance(value, list) and len(value) > MAX_LIST:
        return [f"{where}: {key!r} lists {len(value)} values; at most {MAX_LIST} are allowed in one entry"]
    if not isinstance(value, list) or not value or not all(isinstance(v, kind) and not isinstance(v, bool)
                                                           for v in value):
        return [f"{where}: {key!r} must be a non-empty list of {kind.__name__}, e.g. {key}: {example}; "
                f"got {shown(value)}"]
    return []


def _timeout_problems(where: str, d: dict) -> list[str]:
    value = d.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return [f"{where}: 'timeout' is a run's wall-clock limit in seconds, a finite number > 0 (e.g. "
                f"timeout: 3600); got {shown(value)}"]
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
        problems.append(f"{where}: 'params' must be a mapping of parameter: value, got {shown(entry['params'])}")
    problems += _set_by_suite(f"{where}.params", entry.get("params"))
    per_method = entry.get("method_params") or {}
    # any registered method may be named (YAML anchors share one block), a misspelled one may not
    problems += _key_problems(f"{where}.method_params", per_method, set(METHODS.names()))
    if isinstance(per_method, dict):
        problems += [f"{where}.method_params.{m}: must be a mapping of parameter: value, got {shown(v)}"
                     for m, v in per_method.items() if not isinstance(v or {}, dict)]
        problems += [p for m, v in per_method.items() for p in _set_by_suite(f"{where}.method_params.{m}", v)]
    if "study" in entry:  # a random-search study (ebmbench/study.py): K drawn trials per method and seed
        from ebmbench.study import study_problems

        problems += study_problems(where, entry["study"], entry.get("methods") or [])
    if not config_mod.SUITE_NAME.fullmatch(str(entry.get("label", "x"))):
        problems.append(f"{where}: 'label' names the entry for --only: letters, digits, '.', '_', '-'; "
                        f"got {shown(entry['label'])}")
    return problems + _timeout_problems(where, entry)


def _size_problems(path: str, entries: list[Any]) -> list[str]:
    """The suite's number of runs, counted from its lists' lengths before anything is expanded."""
    total = 0
    for entry in entries[:MAX_LIST]:
        if isinstance(entry, dict):
            sizes = [len(v) if isinstance(v, list) else 1 for v in
                     (entry.get("datasets"), entry.get("methods"), entry.get("seeds", [0]))]
            total += math.prod(sizes)
    if len(entries) > MAX_LIST or total > MAX_RUNS:
        return [f"{path}: {len(entries)} entries expanding to {total} runs; at most {MAX_LIST} entries and "
                f"{MAX_RUNS} runs are allowed in one suite: split it"]
    return []


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
    plugin_params = suite_plugins(path, doc)  # a plugin that cannot be used stops the suite here, in one line
    defaults = doc.get("defaults") or {}
    problems += [] if isinstance(defaults, dict) else [f"{path}: defaults: expected a mapping, got {shown(defaults)}"]
    problems += _set_by_suite(f"{path}: defaults", defaults)
    entries = doc.get("runs") or []
    if not isinstance(entries, list):
        problems.append(f"{path}: 'runs' must be a list of entries (- datasets: [...]), got {type(entries).__name__}")
        entries = []
    size = _size_problems(str(path), entries)
    if size:  # nothing is expanded
        raise SuiteError("\n".join(size))
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
            extra = plugin_params  # the kernel imports the suite's plugin modules too (ebmbench.plugins.PARAM)
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
                try:
                    notebook = plugins.notebook_for(METHODS.get(method), NOTEBOOKS_DIR)
                    plugins.check_run(cfg)
                except plugins.PluginError as err:
                    raise SuiteError(f"{where}: {err}") from None
                runs.append(RunSpec({**cfg.flat_params(), **extra}, cfg, notebook, timeout, trial,
                                    entry.get("label", "")))
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


def suite_plugins(path: Path, doc: dict[str, Any]) -> dict[str, str]:
    """Load the installed plugins and the suite's ``plugins:`` modules; the notebook parameter that passes those
    modules to every kernel (empty when the suite names none)."""
    modules = doc.get("plugins") or []
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise SuiteError(f"{path}: 'plugins' must be a list of module names, e.g. plugins: [my_pkg.my_method]; "
                         f"got {modules!r}")
    try:
        plugins.load(modules)
    except plugins.PluginError as err:
        raise SuiteError(f"{path}: {err}") from None
    return {plugins.PARAM: ",".join(modules)} if modules else {}


def _expanded(params: dict[str, Any], study: dict[str, Any] | None, trials: int | None
              ) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """One run per entry combination, or a study's runs (its trials, the default and the untrained reference)."""
    if study is None:
        return [(params, None)]
    from ebmbench.study import expand

    return expand(params, study, trials)


def is_finished(spec: RunSpec, code: dict[str, Any]) -> bool:
    """Finished = an ok or diverged result from the same config hash and the same code version (a hash of the
    package and its notebooks, ``results.code_version``). An unreadable result is moved aside: not finished."""
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
    """The kernel did not start or died, or the notebook ended without its completion marker and without an error."""


class Interrupted(Exception):
    """Ctrl-C reached the notebook's kernel: the suite stops; the run keeps its checkpoint and resumes later."""


class StorageError(OSError):
    """A run's folder cannot be written (disk full, quota, read-only): every later run would fail the same way,
    so the suite stops, keeping what finished."""


KERNEL_NAME = "python3"


def kernel_problem(err: BaseException) -> str:
    """One line: which kernel spec did not start, why, and how to fix it."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        where, python = f"kernel spec {KERNEL_NAME!r} ({spec.resource_dir}/kernel.json)", spec.argv[0]
    except Exception as why:  # no such spec at all
        where, python = f"kernel spec {KERNEL_NAME!r} (not found: {shown(str(why))})", "python"
    return (f"the notebook kernel did not start: {where} runs {python}: {type(err).__name__}: {shown(str(err))}; "
            f"install ipykernel for that interpreter ({python} -m pip install ipykernel), or point the spec at this "
            f"environment ({sys.executable} -m ipykernel install --user --name {KERNEL_NAME})")


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def storage_error(err: OSError, run_dir: Path) -> StorageError:
    """The error with the path it was writing (papermill's save names none: then the run's notebook)."""
    path = err.filename or run_dir / "notebook.ipynb"
    return StorageError(err.errno, err.strerror or str(err), str(path))


def execute(spec: RunSpec, *, timeout_s: float | None = None) -> str:
    """Execute one run's notebook with papermill; returns the run status it ended with.

    A notebook error, or running past the wall-clock limit (``timeout_s``, else the spec's), is a ``failed``
    record at once; a kernel that does not start or dies, or a missing completion marker, raises
    ``InfrastructureError`` so that the caller may retry; a full or read-only disk raises ``StorageError``.
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    run_dir, limit = spec.run_dir, timeout_s or spec.timeout_s
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RESULT).unlink(missing_ok=True)
    except OSError as err:
        raise storage_error(err, run_dir) from None
    deadline = time.monotonic() + limit
    try:
        with kernel_environment(spec.cfg.threads):
            # each cell may take what is left of the run's limit (nbclient's limits are per cell)
            pm.execute_notebook(str(spec.notebook), str(run_dir / "notebook.ipynb"), parameters=spec.params,
                                progress_bar=False, kernel_name=KERNEL_NAME, cwd=str(spec.notebook.parent),
                                extra_arguments=KERNEL_ARGS,
                                timeout_func=lambda cell: max(1.0, deadline - time.monotonic()))
    except pm.PapermillExecutionError as err:
        if err.ename == "KeyboardInterrupt":  # Ctrl-C reached the kernel too: the suite stops, the run resumes later
            raise Interrupted(f"{spec.cfg.run_id} was interrupted") from None
        record_failure(spec, f"notebook raised {err.ename}: {err.evalue}")
        return "failed"
    except CellTimeoutError:
        record_failure(spec, f"the run ran past its wall-clock limit of {limit:g} s and its kernel was "
                                            "stopped; raise `timeout` in its suite entry or pass --timeout")
        return "failed"
    except DeadKernelError as err:  # papermill does not mark a dead kernel as a cell error
        raise InfrastructureError(f"the kernel died: {err}") from err
    except OSError as err:
        if err.errno in DISK_ERRNOS or err.filename and Path(err.filename).is_relative_to(run_dir):
            raise storage_error(err, run_dir) from None
        raise InfrastructureError(kernel_problem(err)) from None  # the kernel's interpreter could not be started
    except RuntimeError as err:
        if "Kernel died before replying" in str(err):
            raise InfrastructureError(kernel_problem(err)) from None
        raise
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
    """What a suite execution did, by run id; ``stopped`` says why it ended early ('' when it did not)."""

    name: str
    statuses: dict[str, str]
    wall_s: float
    suite_dir: Path
    stopped: str = ""

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
        if self.stopped:
            out.append(f"stopped early: {self.stopped}; runs not started: {counts.get(NOT_STARTED, 0)} "
                       "(rerun the same command when fixed: finished runs are skipped)")
        return out


NOT_STARTED = "not started"
CLUSTER_CLOSE_S, INTERRUPTED_CLOSE_S = 60, 10
TEMP_PATTERNS = (".*.tmp", "runs/*/.*.tmp", ".results.*.parquet")  # atomic writes' (older: aggregate's own)


def remove_temp_files(suite_dir: Path) -> list[Path]:
    """Remove what an interrupted atomic write left in the suite folder (only while this process holds its lock)."""
    gone = [p for pattern in TEMP_PATTERNS for p in suite_dir.glob(pattern) if p.is_file()]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def record_storage_failure(spec: RunSpec, err: StorageError) -> str:
    """The one line that stops the suite; the run's failed row when it can still be written."""
    line = f"{err.filename}: {err.strerror}; free space there (or pass another --results-dir)"
    with contextlib.suppress(OSError):
        record_failure(spec, f"could not write its results: {line}")
    return line


def run_suite(runs: list[RunSpec], name: str, *, workers: int = 0, scheduler: str | None = None,
              retries: int = 2, timeout_s: float | None = None, progress: bool = True,
              manifest: list[str] | None = None, estimates: dict[str, float] | None = None) -> SuiteSummary:
    """Execute every unfinished run, serially (workers=0) or as Dask tasks, then aggregate.

    Dask: a ``LocalCluster`` of ``workers`` processes, or the scheduler at ``scheduler``
    (e.g. a dask-jobqueue cluster's address). Rerunning skips runs whose config hash and
    code version match a finished (ok or diverged) result. ``timeout_s`` overrides every run's wall-clock limit.
    The manifest (every run of the suite) is written first, so a report rendered meanwhile knows what is pending.
    A full or read-only disk stops the suite: the run that hit it is a failed row, later runs are not started.
    ``estimates`` (seconds by run id, ebmbench/estimate.py) give the progress bar its ETA.
    """
    code = provenance("cpu")
    t0 = time.perf_counter()
    suite_dir = runs[0].run_dir.parent.parent
    remove_temp_files(suite_dir)
    atomic_write_json(suite_dir / MANIFEST, {"name": name, "run_ids": manifest or [s.cfg.run_id for s in runs]})
    if any(s.trial for s in runs):  # a study: which run is which trial (ebmbench/study.py), written before any runs
        from ebmbench.study import write_study

        write_study(suite_dir, {s.cfg.run_id: s.trial for s in runs if s.trial})
    statuses = {s.cfg.run_id: "skipped (finished)" for s in runs if is_finished(s, code)}
    todo = [s for s in runs if s.cfg.run_id not in statuses]
    if workers or scheduler:
        done, stopped = _run_dask(todo, name, workers, scheduler, retries, timeout_s, progress, estimates)
    else:
        done, stopped = _run_serial(todo, name, retries, timeout_s, progress, estimates)
    statuses.update(done)
    try:
        aggregate(suite_dir)
    except OSError as err:
        stopped = stopped or f"{err.filename}: {err.strerror}"
        print(f"error: results.parquet not written: {err.filename}: {err.strerror}", file=sys.stderr)
    ordered = {s.cfg.run_id: statuses.get(s.cfg.run_id, NOT_STARTED) for s in runs}
    return SuiteSummary(name, ordered, time.perf_counter() - t0, suite_dir, stopped)


def _run_serial(todo: list[RunSpec], name: str, retries: int, timeout_s: float | None, progress: bool,
                estimates: dict[str, float] | None = None) -> tuple[dict[str, str], str]:
    """Each run in this process, in order; a storage error ends the loop."""
    from ebmbench.estimate import EtaBar

    statuses: dict[str, str] = {}
    with EtaBar([s.cfg.run_id for s in todo], estimates, f"suite {name}", disable=not progress) as bar:
        for spec in todo:
            try:
                statuses[spec.cfg.run_id] = execute_with_retries(spec, retries, timeout_s)
            except Interrupted:
                raise KeyboardInterrupt from None
            except StorageError as err:
                statuses[spec.cfg.run_id] = "failed"
                return statuses, record_storage_failure(spec, err)
            bar.done(spec.cfg.run_id)
    return statuses, ""


async def _close_nannies(nannies: list[Any], timeout_s: float) -> None:
    import asyncio

    await asyncio.gather(*(n.close(timeout=timeout_s) for n in nannies))


def _ignore_sigint() -> None:
    """In a Dask worker: Ctrl-C in the terminal reaches every process of its group; the worker leaves it to the
    suite's process (which closes the cluster in order) and to the notebook's kernel (which stops its cell)."""
    import signal

    with contextlib.suppress(ValueError):  # not the worker's main thread: nothing to change
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_dask(todo: list[RunSpec], name: str, workers: int, scheduler: str | None, retries: int,
              timeout_s: float | None, progress: bool, estimates: dict[str, float] | None = None
              ) -> tuple[dict[str, str], str]:
    """One Dask task per run; Dask retries infrastructure deaths (and lost workers); a storage error cancels the
    runs not yet finished. The client closes before the cluster, also on Ctrl-C (then quietly, and at once)."""
    from dask.distributed import Client, as_completed

    from ebmbench.devices import local_cluster
    from ebmbench.estimate import EtaBar

    cluster = None if scheduler else local_cluster(workers)  # one GPU per worker on a multi-GPU node
    statuses: dict[str, str] = {}
    stopped, interrupted = "", False
    client = Client(scheduler or cluster)
    futures: dict[Any, RunSpec] = {}
    try:
        if cluster is not None:
            client.run(_ignore_sigint)
        by_id: dict[str, Any] = {}
        for spec in todo:  # a composition waits for the futures of the runs it needs (finished ones have none)
            needs = [by_id[i] for i in getattr(spec, "needs", ()) if i in by_id]
            future = client.submit(execute_after, spec, *needs, timeout_s=timeout_s, retries=retries, pure=False,
                                   key=f"{name}-{spec.cfg.run_id}")
            futures[future], by_id[spec.cfg.run_id] = spec, future
        with EtaBar([s.cfg.run_id for s in todo], estimates, f"suite {name}", disable=not progress,
                    workers=workers or None) as bar:
            for future in as_completed(futures):
                spec = futures[future]
                try:
                    statuses[spec.cfg.run_id] = future.result()
                except StorageError as err:
                    statuses[spec.cfg.run_id] = "failed"
                    stopped = record_storage_failure(spec, err)
                    client.cancel([f for f in futures if not f.done()])
                    break
                except Interrupted:
                    raise KeyboardInterrupt from None
                except Exception as err:  # retries exhausted: the run is a failed row, never a gap
                    why = f"{type(err).__name__}: {err}"
                    record_failure(spec, f"infrastructure failure after {retries + 1} attempts: {why}")
                    statuses[spec.cfg.run_id] = "failed"
                bar.done(spec.cfg.run_id)
    except KeyboardInterrupt:
        interrupted = True
        for logger in ("distributed", "tornado", "asyncio"):  # the shutdown of an interrupted cluster is noisy
            logging.getLogger(logger).setLevel(logging.CRITICAL)
        with contextlib.suppress(Exception):
            client.cancel(list(futures))
        raise
    finally:
        client.close()
        if cluster is not None:
            # a worker that has run torch takes seconds to exit on a small, loaded machine (library teardown, no
            # Python frame left); LocalCluster.close lets each nanny's worker 4 s, then kills it with a warning on
            # every run: close the nannies first, each with a longer grace
            with contextlib.suppress(Exception):
                cluster.sync(_close_nannies, list(cluster.workers.values()),
                             INTERRUPTED_CLOSE_S if interrupted else CLUSTER_CLOSE_S)
            cluster.close()
    return statuses, stopped
