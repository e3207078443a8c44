"""Suite execution: infrastructure deaths are retried a bounded number of times, notebook errors
are not; Dask execution gives the same rows as serial execution."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pandas as pd
import yaml

from ebmbench import suites
from ebmbench.results import load_results

TINY = {"train_steps": 5, "checkpoint_every": 5, "log_every": 5, "batch_size": 32, "n_eval_samples": 32,
        "threads": 1}
TINY_METHOD = {"pcd_ebm": {"buffer_size": 64, "langevin_steps": 3, "sample_steps": 5},
               "ddpm": {"ddpm_steps": 10, "ddim_steps": 3, "num_train_timesteps": 50}}


def suite_file(tmp_path: Path, methods: list[str]) -> str:
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "defaults": TINY, "runs": [
        {"datasets": ["eight_gaussians"], "methods": methods,
         "method_params": {m: TINY_METHOD[m] for m in methods}}]}))
    return str(path)


def plant(tmp_path: Path, notebook: str, source: str) -> Path:
    """Copy the notebooks; append a planted cell at the top of ``notebook`` (after parameters)."""
    nb_dir = tmp_path / "notebooks"
    if not nb_dir.exists():
        shutil.copytree(suites.NOTEBOOKS_DIR, nb_dir)
    nb = nbformat.read(nb_dir / notebook, as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell(source))
    nbformat.write(nb, nb_dir / notebook)
    return nb_dir


def test_a_dead_kernel_is_retried_then_recorded_as_failed(tmp_path, monkeypatch):
    attempts = tmp_path / "attempts.txt"
    monkeypatch.setattr(suites, "NOTEBOOKS_DIR", plant(
        tmp_path, "train_ebm.ipynb", f"import os\nopen({str(attempts)!r}, 'a').write('x')\nos._exit(1)"))
    name, runs = suites.load_suite(suite_file(tmp_path, ["pcd_ebm"]), str(tmp_path / "res"))
    summary = suites.run_suite(runs, name, retries=1, progress=False)
    assert attempts.read_text() == "xx"  # one try and one retry, no more
    assert summary.failed == [runs[0].cfg.run_id]
    frame = load_results(tmp_path / "res" / "t")
    assert "infrastructure failure after 2 attempts" in frame.iloc[0].reason


def test_a_missing_completion_marker_is_an_infrastructure_death(tmp_path, monkeypatch):
    nb_dir = plant(tmp_path, "train_ebm.ipynb", "pass")
    nb = nbformat.read(nb_dir / "train_ebm.ipynb", as_version=4)
    nb.cells = nb.cells[:3]  # parameters, planted cell, imports: no result.json written
    nbformat.write(nb, nb_dir / "train_ebm.ipynb")
    monkeypatch.setattr(suites, "NOTEBOOKS_DIR", nb_dir)
    name, runs = suites.load_suite(suite_file(tmp_path, ["pcd_ebm"]), str(tmp_path / "res"))
    summary = suites.run_suite(runs, name, retries=0, progress=False)
    assert summary.failed and "without writing result.json" in load_results(tmp_path / "res" / "t").iloc[0].reason


def test_dask_rows_equal_serial_rows(tmp_path):
    path = suite_file(tmp_path, ["pcd_ebm"])
    name, serial = suites.load_suite(path, str(tmp_path / "serial"))
    assert not suites.run_suite(serial, name, progress=False).failed
    _, parallel = suites.load_suite(path, str(tmp_path / "dask"))
    summary = suites.run_suite(parallel, name, workers=1, progress=False)
    assert not summary.failed and set(summary.statuses.values()) == {"ok"}
    cols = ["run_id", "sampler", "metric", "value", "nfe", "threads", "config_hash"]
    a, b = (load_results(tmp_path / d / "t")[cols].sort_values(["run_id", "sampler", "metric"])
            .reset_index(drop=True) for d in ("serial", "dask"))
    assert len(a) > 5
    pd.testing.assert_frame_equal(a, b)
