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
from ebmbench.results import MANIFEST, aggregate, atomic_write_json, provenance, read_result
from ebmbench.run import RESULT, failed_record, run_dir_for

ROOT = Path(__file__).resolve().parent.parent
SUITES_DIR, NOTEBOOKS_DIR = ROOT / "suites", ROOT / "notebooks"
# the kernel logs only errors: its warning that ZMQ runs over local TCP unencrypted, printed once per run,
# buried the progress bar (a cell's own output and errors still land in the executed notebook)
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]
# Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 and the BLAS pools at one thread; a kernel that
# inherited that spent a third of its CPU time in the OS (a digits NCSN run: 41 s user, 20 s system) and made
# 2 workers on 2 cores barely faster than 1. Kernels get glibc's default and BLAS pools of the run's threads,
# serially and on Dask alike.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
UNSET_ENV = ("MALLOC_TRIM_THRESHOLD_",)
SUITE_KEYS = {"name", "description", "defaults", "runs"}
ENTRY_KEYS = {"datasets", "methods", "seeds", "params", "method_params"}


class _KnownParameters(logging.Filter):
    """Drop papermill's 'Passed unknown parameter' warning: a notebook's parameters cell lists the
    common ones only, and every parameter was already validated by ``config.resolve``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Passed unknown parameter" not in record.getMessage()


logging.getLogger("papermill").addFilter(_KnownParameters())


class SuiteError(ValueError):
    """A suite file that does not validate; the message names the file, the entry and the key."""


@dataclass
class RunSpec:
    """One run of a suite: its validated flat parameters and the notebook that executes it."""

    params: dict[str, Any]
    cfg: config_mod.RunConfig
    notebook: Path

    @property
    def run_dir(self) -> Path:
        return run_dir_for(self.cfg)


def suite_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise SuiteError(f"suite file {path} does not exist")
        return path
    path = SUITES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
        raise SuiteError(f"unknown suite {name_or_path!r}; choose one of: {known} (or pass a .yaml path)")
    return path


def _check_keys(where: str, d: Any, allowed: set[str]) -> None:
    if not isinstance(d, dict):
        raise SuiteError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _list(where: str, entry: dict, key: str) -> list:
    value = entry.get(key)
    if not isinstance(value, list) or not value:
        raise SuiteError(f"{where}: {key!r} must be a non-empty list")
    return value


def load_suite(name_or_path: str, results_dir: str = "results", overrides: dict[str, Any] | None = None
               ) -> tuple[str, list[RunSpec]]:
    """Parse and validate a suite file into runs; every run's parameters are validated up front."""
    path = suite_path(name_or_path)
    doc = yaml.safe_load(path.read_text()) or {}
    _check_keys(str(path), doc, SUITE_KEYS)
    name = doc.get("name") or path.stem
    defaults = doc.get("defaults") or {}
    _check_keys(f"{path}: defaults", defaults, set(defaults))
    runs: list[RunSpec] = []
    for i, entry in enumerate(doc.get("runs") or []):
        where = f"{path}: runs[{i}]"
        _check_keys(where, entry, ENTRY_KEYS)
        per_method = entry.get("method_params") or {}
        # any registered method may be named (YAML anchors share one block), a misspelled one may not
        _check_keys(f"{where}.method_params", per_method, set(METHODS.names()))
        combos = itertools.product(_list(where, entry, "datasets"), _list(where, entry, "methods"),
                                   entry.get("seeds", [0]))
        for dataset, method, seed in combos:
            params = {**defaults, **(entry.get("params") or {}), **per_method.get(method, {}),
                      "dataset": dataset, "method": method, "seed": seed, "suite": name,
                      "results_dir": str(Path(results_dir).resolve()), **(overrides or {})}
            try:
                cfg = config_mod.resolve(params)
            except (config_mod.ConfigError, KeyError) as err:
                raise SuiteError(f"{where} ({dataset}, {method}, seed {seed}): {err}") from None
            # inject every resolved parameter: the notebook's own defaults must never apply in a suite
            runs.append(RunSpec(cfg.flat_params(), cfg, NOTEBOOKS_DIR / METHODS.get(method).notebook))
    if not runs:
        raise SuiteError(f"{path}: the suite lists no runs")
    ids = [r.cfg.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"{path}: duplicate runs (same resolved config twice)")
    return name, runs


def is_finished(spec: RunSpec, code: dict[str, Any]) -> bool:
    """Finished = an ok or diverged result from the same config hash and the same code version
    (the commit, plus a hash of any uncommitted changes)."""
    record = read_result(spec.run_dir)
    if not record or record.get("run_status") not in ("ok", "diverged"):
        return False
    row = record["rows"][0]
    return row["config_hash"] == spec.cfg.config_hash and row["versions"].get("code") == code["versions"]["code"]


class InfrastructureError(RuntimeError):
    """The kernel died, or the notebook ended without its completion marker and without an error."""


@contextlib.contextmanager
def kernel_environment(threads: int) -> Iterator[None]:
    """os.environ as a run's kernel should inherit it (see THREAD_ENV), restored afterwards."""
    saved = {k: os.environ.get(k) for k in (*THREAD_ENV, *UNSET_ENV)}
    os.environ.update({k: str(threads) for k in THREAD_ENV})
    for k in UNSET_ENV:
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(spec: RunSpec, *, timeout_s: int | None = None) -> str:
    """Execute one run's notebook with papermill; returns the run status it ended with.

    A notebook error or a timeout is a ``failed`` record at once; a dead kernel or a
    missing completion marker raises ``InfrastructureError`` so that the caller may retry.
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    run_dir = spec.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT).unlink(missing_ok=True)
    try:
        with kernel_environment(spec.cfg.threads):
            pm.execute_notebook(str(spec.notebook), str(run_dir / "notebook.ipynb"), parameters=spec.params,
                                progress_bar=False, kernel_name="python3", execution_timeout=timeout_s,
                                cwd=str(spec.notebook.parent), extra_arguments=KERNEL_ARGS)
    except pm.PapermillExecutionError as err:
        failed_record(spec.params, run_dir, f"notebook raised {err.ename}: {err.evalue}")
        return "failed"
    except CellTimeoutError as err:
        failed_record(spec.params, run_dir, f"a cell ran past the timeout of {timeout_s} s: {err}")
        return "failed"
    except DeadKernelError as err:  # papermill does not mark a dead kernel as a cell error
        raise InfrastructureError(f"the kernel died: {err}") from err
    record = read_result(run_dir)
    if record is None:
        raise InfrastructureError("the notebook ended without writing result.json (its last cell)")
    return record["run_status"]


def execute_with_retries(spec: RunSpec, retries: int = 2, timeout_s: int | None = None) -> str:
    """``execute``, retrying infrastructure deaths up to ``retries`` times, then a failed record."""
    for _ in range(retries + 1):
        try:
            return execute(spec, timeout_s=timeout_s)
        except InfrastructureError as err:
            last = err
    failed_record(spec.params, spec.run_dir, f"infrastructure failure after {retries + 1} attempts: {last}")
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
              retries: int = 2, timeout_s: int | None = None, progress: bool = True,
              manifest: list[str] | None = None) -> SuiteSummary:
    """Execute every unfinished run, serially (workers=0) or as Dask tasks, then aggregate.

    Dask: a ``LocalCluster`` of ``workers`` processes, or the scheduler at ``scheduler``
    (e.g. a dask-jobqueue cluster's address). Rerunning skips runs whose config hash and
    commit match a finished (ok or diverged) result.
    """
    code = provenance("cpu")
    t0 = time.perf_counter()
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
              timeout_s: int | None, progress: bool) -> dict[str, str]:
    """One Dask task per run; Dask retries infrastructure deaths (and lost workers)."""
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
    statuses: dict[str, str] = {}
    with Client(scheduler or cluster) as client:
        futures = {client.submit(execute, spec, timeout_s=timeout_s, retries=retries, pure=False,
                                 key=f"{name}-{spec.cfg.run_id}"): spec for spec in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"suite {name}", unit="run",
                           disable=not progress):
            spec = futures[future]
            try:
                statuses[spec.cfg.run_id] = future.result()
            except Exception as err:  # retries exhausted: the run is a failed row, never a gap
                failed_record(spec.params, spec.run_dir,
                              f"infrastructure failure after {retries + 1} attempts: {type(err).__name__}: {err}")
                statuses[spec.cfg.run_id] = "failed"
    if cluster is not None:
        cluster.close()
    return statuses
