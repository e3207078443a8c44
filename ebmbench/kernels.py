"""Where the project's suites and notebooks are, and the environment a notebook kernel runs in.

Apart from suites.py so that the report, which renders notebooks, never imports the run machinery.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITES_DIR, NOTEBOOKS_DIR = ROOT / "suites", ROOT / "notebooks"
# the kernel logs only errors: its warning that ZMQ runs over local TCP unencrypted, printed once per run,
# buried the progress bar (a cell's own output and errors still land in the executed notebook)
# CRITICAL, not ERROR: jupyter_client interrupts a kernel before shutting it down, and the kernel logs that
# interrupt as an ERROR ("KeyboardInterrupt caught in kernel") after every clean run
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]
# Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 and the BLAS pools at one thread; a kernel that
# inherited that spent a third of its CPU time in the OS (a digits NCSN run: 41 s user, 20 s system) and made
# 2 workers on 2 cores barely faster than 1. Kernels get glibc's default and BLAS pools of the run's threads,
# serially and on Dask alike.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# MPLBACKEND: a user's (or CI's) MPLBACKEND=Agg would leave executed notebooks without figures; unset, the kernel
# chooses its inline backend
UNSET_ENV = ("MALLOC_TRIM_THRESHOLD_", "MPLBACKEND")
# tqdm.auto warns in every kernel without ipywidgets, and the warning printed the venv's path into the HTML
KERNEL_WARNINGS = "ignore:IProgress not found"


@contextlib.contextmanager
def kernel_environment(threads: int | None = None) -> Iterator[None]:
    """os.environ as a kernel should inherit it (see THREAD_ENV, UNSET_ENV, KERNEL_WARNINGS), restored afterwards;
    ``threads=None`` leaves the thread settings as they are."""
    names = (*THREAD_ENV, *UNSET_ENV, "PYTHONWARNINGS")
    saved = {k: os.environ.get(k) for k in names}
    if threads is not None:
        os.environ.update({k: str(threads) for k in THREAD_ENV})
    for k in UNSET_ENV:
        os.environ.pop(k, None)
    os.environ["PYTHONWARNINGS"] = ",".join(w for w in (saved["PYTHONWARNINGS"], KERNEL_WARNINGS) if w)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


LOCK = ".lock"  # held by the `ebmbench run` executing a suite (suites.suite_lock)


def lock_holder(suite_dir: Path) -> str | None:
    """Who holds the suite folder's lock ('pid N, since ...'), or None when no run is executing the suite."""
    path = Path(suite_dir) / LOCK
    if not path.exists():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "another process"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None
