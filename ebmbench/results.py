"""Result records: versioned tidy schema, provenance, atomic writes, loading into pandas."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ebmbench.devices import cuda_provenance

SCHEMA_VERSION = 2  # 2: learning-curve rows (train_step set) and counted training FLOPs (train_flops)
COLUMNS = [
    "schema_version", "run_id", "suite", "dataset", "dataset_hash", "family", "method", "sampler", "seed",
    "metric", "value", "stderr", "metric_status", "reason", "run_status", "n_samples", "nfe", "grad_evals",
    "flops_per_sample", "wall_s_per_sample", "batch_size", "threads", "train_steps", "train_wall_s", "train_step",
    "train_flops",
    "config_hash", "git_commit", "git_dirty", "versions", "device", "created_at", "meta",
]
METRIC_STATUSES = ("ok", "not_applicable", "failed")
RUN_STATUSES = ("ok", "diverged", "failed")
PACKAGES = ("torch", "torchvision", "diffusers", "torch-fidelity", "numpy", "scipy", "scikit-learn", "ebmbench")


@dataclass
class MetricValue:
    """One measured (or honestly not measured) number, before provenance is attached."""

    metric: str
    value: float | None
    stderr: float | None = None
    status: str = "ok"
    reason: str = ""
    sampler: str | None = None
    cost: dict[str, Any] | None = None  # protocol.Cost.to_dict() of the samples measured
    n_samples: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    train_step: int | None = None  # set on learning-curve rows: the step the model was evaluated at
    train_wall_s: float | None = None  # learning-curve rows: training wall clock up to train_step
    train_flops: float | None = None  # learning-curve rows: counted training FLOPs up to train_step

    def __post_init__(self) -> None:
        if self.status not in METRIC_STATUSES:
            raise ValueError(f"metric_status {self.status!r}: choose one of {METRIC_STATUSES}")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"metric {self.metric!r} is {self.status} but states no reason")


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str:
    """The checked-out commit of the package's repository ('unknown' outside one)."""
    return _git("rev-parse", "HEAD") or "unknown"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


CODE_FOLDERS = ("ebmbench", "notebooks")  # what a run executes: the package and the notebooks papermill runs


def code_files() -> list[Path]:
    """The files that make up the code: tracked files of the package and the notebooks, plus the package's own
    untracked files (git's ignore rules apply); without git, every file under those folders but caches."""
    root = Path(__file__).resolve().parent.parent
    tracked = _git("ls-files", "-z", "--", *CODE_FOLDERS)
    if tracked is None:
        return sorted(p for folder in CODE_FOLDERS for p in (root / folder).rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts)
    untracked = _git("ls-files", "-z", "--others", "--exclude-standard", "--", CODE_FOLDERS[0]) or ""
    names = {n for n in (tracked + "\0" + untracked).split("\0") if n}
    return sorted(p for p in (root / n for n in names) if p.is_file())


def code_version() -> str:
    """A hash of the code as it is on disk (``code_files``: the package and its notebooks), never of results
    folders, suite files or anything else in the checkout, so a run's identity (config hash + code version)
    changes only when the code does (the commit is recorded beside it, as ``git_commit``)."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in code_files():
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return f"code-{h.hexdigest()[:16]}"


def provenance(device: str) -> dict[str, Any]:
    """Git commit (and whether tracked files differ), the exact code version, package versions, the device, and
    CUDA's runtime, cuDNN and driver versions with the TF32 and determinism flags in force (``versions.cuda``)."""
    commit = git_commit()
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "versions": {**package_versions(), "code": code_version(), "cuda": cuda_provenance()},
        "device": device_name(device),
    }


def make_rows(run: dict[str, Any], values: list[MetricValue]) -> list[dict[str, Any]]:
    """Tidy rows: the run's fields (ids, status, provenance) joined with each metric value."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    rows = []
    for v in values:
        cost = v.cost or {}
        row = {
            **run,
            "schema_version": SCHEMA_VERSION, "sampler": v.sampler, "metric": v.metric, "value": v.value,
            "stderr": v.stderr, "metric_status": v.status, "reason": v.reason, "n_samples": v.n_samples,
            "nfe": cost.get("nfe"), "grad_evals": cost.get("grad_evals"),
            "flops_per_sample": cost.get("flops_per_sample"), "wall_s_per_sample": cost.get("wall_s_per_sample"),
            "batch_size": cost.get("batch_size"), "threads": cost.get("threads", run.get("threads")),
            "created_at": created, "meta": v.meta, "train_step": v.train_step,
            "train_flops": run.get("train_flops"),  # counted training FLOPs of the run (None: not counted)
        }
        if v.train_step is not None:  # a learning-curve point: training compute up to that step
            row.update(train_wall_s=v.train_wall_s, train_flops=v.train_flops)
        missing = set(COLUMNS) - set(row)
        if missing:
            raise ValueError(f"result row lacks columns {sorted(missing)}")
        rows.append({k: row[k] for k in COLUMNS})
    return rows


def _publish(tmp: str, path: Path) -> None:
    """Give a temporary file the permissions of a normally created one, then rename it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[str]:
    """A temporary file beside ``path`` to write, renamed onto ``path`` when the block ends: readers never see a
    partial file. On any error the temporary file is removed, and an OSError that names no file names ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        _publish(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None:  # a write on a full disk names no file: name the one being written
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_path``), synced to disk."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_failed_record(run_dir: Path, fields: dict[str, Any], reason: str) -> dict[str, Any]:
    """``result.json`` of a run that could not produce rows: one failed row with ``reason``, never a gap. ``fields``
    are the run's columns (``run_id`` among them, ``run_status`` failed)."""
    rows = make_rows(fields, [MetricValue("run", None, status="failed", reason=reason)])
    record = {"schema_version": SCHEMA_VERSION, "run_id": fields["run_id"], "run_status": "failed", "rows": rows}
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(run_dir) / "result.json", record)
    return record


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to a result record")


def result_problem(record: Any) -> str:
    """Why a parsed result.json cannot be used ('' when it can): a record with its run status and its rows."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    if record.get("run_status") not in RUN_STATUSES:
        return f"run_status {record.get('run_status')!r} is not one of {RUN_STATUSES}"
    rows = record.get("rows")
    if not isinstance(rows, list) or not rows:
        return "it holds no result rows"
    if not all(isinstance(r, dict) and "metric" in r and "config_hash" in r for r in rows):
        return "a row lacks its metric or config_hash"
    return ""


def move_result_aside(path: Path, why: str) -> None:
    """Rename an unusable result file to ``<name>.corrupt-<UTC time>`` (kept for a person) and say so on stderr."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        path.rename(dest)
        done = f"moved it aside to {dest.name}: the run reruns"
    except OSError as err:
        done = f"could not move it aside ({err.strerror}): delete it to rerun the run"
    print(f"warning: {path} is not a usable result ({why}); {done}", file=sys.stderr)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result record, or None: when there is none, and when it cannot be used (garbage, no rows),
    in which case the file is moved aside with its path in the message, so that the run reruns."""
    path = Path(run_dir) / "result.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:  # ValueError: bad JSON and bad UTF-8 alike
        why = f"{type(err).__name__}: {err}"
    else:
        why = result_problem(record)
        if not why:
            return record
    move_result_aside(path, why)
    return None


MANIFEST = "suite.json"


def current_run_ids(suite_dir: Path | str) -> set[str] | None:
    """The run ids of the suite as last executed (its manifest), or None without a (readable) manifest."""
    path = Path(suite_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        return set(json.loads(path.read_text())["run_ids"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"warning: {path} cannot be read ({type(err).__name__}: {err}); every run folder is reported, "
              "and the next `ebmbench run` rewrites it", file=sys.stderr)
        return None


def load_results(suite_dir: Path | str, curves: bool = False):  # -> pandas.DataFrame
    """Every final row of the suite's runs (``runs/*/result.json``) as one DataFrame; with ``curves=True``
    the learning-curve rows instead (``train_step`` set), which never mix into the final tables.

    When the suite folder has a manifest, runs left over from an earlier definition of
    the suite (another config hash) are not part of it and are left out. Samples scored from a file
    (``external/*/result.json``, ebmbench/evaluate.py) are read too.
    """
    import pandas as pd

    rows, wanted = [], current_run_ids(suite_dir)
    for path in sorted(Path(suite_dir).glob("runs/*/result.json")):
        record = read_result(path.parent) if wanted is None or path.parent.name in wanted else None
        if record is not None:  # an unusable file was moved aside, with its path on stderr
            rows.extend(r for r in record["rows"] if (r.get("train_step") is not None) == curves)
    for path in sorted(Path(suite_dir).glob("external/*/result.json")):  # `ebmbench evaluate --suite` (evaluate.py)
        record = read_result(path.parent)
        if record is not None and not curves:
            rows.extend(record["rows"])
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("value", "stderr", "nfe", "grad_evals", "flops_per_sample", "wall_s_per_sample", "train_step",
                "train_flops", "train_wall_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def aggregate(suite_dir: Path | str) -> Path:
    """Write ``results.parquet`` for a suite (meta and versions as JSON strings): final rows, then curve rows."""
    import pandas as pd

    parts = [f for f in (load_results(suite_dir), load_results(suite_dir, curves=True)) if len(f)]
    frame = pd.concat(parts, ignore_index=True) if parts else load_results(suite_dir)
    flat = frame.copy()
    for col in ("meta", "versions"):
        flat[col] = flat[col].map(lambda v: json.dumps(v, sort_keys=True, default=str))
    out = Path(suite_dir) / "results.parquet"
    with atomic_path(out) as tmp:
        flat.to_parquet(tmp, index=False)
    return out
