"""Suite execution: infrastructure deaths are retried a bounded number of times, notebook errors
are not; Dask execution gives the same rows as serial execution."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from ebmbench import suites
from ebmbench.results import load_results

TINY = {"train_steps": 5, "checkpoint_every": 5, "log_every": 5, "batch_size": 32, "n_eval_samples": 32,
        "threads": 1, "ais_steps": 20, "ais_runs": 2, "ais_chains": 4, "likelihood_points": 50}
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


@pytest.mark.slow
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


TIMING = ["wall_s_per_sample", "train_wall_s", "created_at", "meta", "versions", "device"]


def comparable_rows(suite_dir: Path) -> pd.DataFrame:
    """Result rows without timing and provenance-of-execution columns, in a fixed order."""
    frame = load_results(suite_dir).drop(columns=TIMING)
    return frame.sort_values(["run_id", "sampler", "metric"], na_position="first").reset_index(drop=True)


@pytest.mark.slow
def test_smoke_on_two_dask_workers_equals_serial(smoke_serial, tmp_path, capfd):
    _, _, serial_res = smoke_serial
    name, runs = suites.load_suite("smoke", str(tmp_path / "dask"))
    summary = suites.run_suite(runs, name, workers=2, progress=False)
    assert set(summary.statuses.values()) == {"ok"}
    assert "still alive" not in capfd.readouterr().err  # issue 22: workers close, none is killed at shutdown
    a, b = comparable_rows(serial_res / "smoke"), comparable_rows(tmp_path / "dask" / "smoke")
    assert len(a) == len(b) > 50
    pd.testing.assert_frame_equal(a.drop(columns=["suite"]), b.drop(columns=["suite"]))


@pytest.mark.slow
def test_a_worker_killed_on_its_first_attempt_is_retried_once(tmp_path, monkeypatch):
    attempts, marker = tmp_path / "attempts.txt", tmp_path / "killed-once"
    source = ("import os, pathlib, signal\n"
              f"open({str(attempts)!r}, 'a').write('x')\n"
              f"if not pathlib.Path({str(marker)!r}).exists():\n"
              f"    pathlib.Path({str(marker)!r}).write_text('x')\n"
              "    os.kill(os.getppid(), signal.SIGKILL)  # the kernel's parent: the Dask worker process")
    monkeypatch.setattr(suites, "NOTEBOOKS_DIR", plant(tmp_path, "train_ebm.ipynb", source))
    name, runs = suites.load_suite(suite_file(tmp_path, ["pcd_ebm", "ddpm"]), str(tmp_path / "res"))
    summary = suites.run_suite(runs, name, workers=1, retries=2, progress=False)
    assert set(summary.statuses.values()) == {"ok"}
    assert attempts.read_text() == "xx"  # killed once, retried once
    frame = load_results(tmp_path / "res" / "t")
    assert frame.run_id.nunique() == 2
    assert not frame.duplicated(["run_id", "sampler", "metric"]).any()


@pytest.mark.slow
def test_an_existing_scheduler_runs_the_suite(tmp_path):
    from dask.distributed import LocalCluster

    name, runs = suites.load_suite(suite_file(tmp_path, ["ddpm"]), str(tmp_path / "res"))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True) as cluster:
        summary = suites.run_suite(runs, name, scheduler=cluster.scheduler_address, progress=False)
    assert list(summary.statuses.values()) == ["ok"]
    assert load_results(tmp_path / "res" / "t").metric_status.isin(["ok", "not_applicable"]).all()


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_reruns_only_changed_ones(tmp_path):
    path = suite_file(tmp_path, ["pcd_ebm", "ddpm"])
    name, runs = suites.load_suite(path, str(tmp_path / "res"))
    assert set(suites.run_suite(runs, name, progress=False).statuses.values()) == {"ok"}
    again = suites.run_suite(runs, name, progress=False)
    assert set(again.statuses.values()) == {"skipped (finished)"}
    assert "2 skipped (finished)" in again.lines()[0]
    doc = yaml.safe_load(Path(path).read_text())
    doc["runs"][0]["method_params"]["ddpm"]["ddim_steps"] = 4
    Path(path).write_text(yaml.safe_dump(doc))
    name, changed = suites.load_suite(path, str(tmp_path / "res"))
    statuses = suites.run_suite(changed, name, progress=False).statuses
    assert sorted(statuses.values()) == ["ok", "skipped (finished)"]
    assert statuses[next(r.cfg.run_id for r in changed if r.cfg.method == "ddpm")] == "ok"
    # the report covers the suite as now defined: the old ddpm run is not in it
    assert set(load_results(tmp_path / "res" / "t").run_id) == {r.cfg.run_id for r in changed}


def test_invalid_suite_fails_before_any_run(tmp_path, capsys):
    from ebmbench import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "runs": [
        {"datasets": ["eight_gaussians"], "methods": ["pcd_ebm"]},
        {"datasets": ["eight_gaussians"], "methods": ["pcd_ebm"], "params": {"train_steps": "many"}}]}))
    assert cli.main(["run", str(bad), "--results-dir", str(tmp_path / "res")]) == 2
    assert not (tmp_path / "res").exists()  # nothing ran
    assert "runs[1] (eight_gaussians, pcd_ebm, seed 0): parameter 'train_steps' must be int" in capsys.readouterr().err


def test_kernels_get_the_runs_threads_and_not_dasks_malloc_setting(monkeypatch):
    """A Dask nanny exports MALLOC_TRIM_THRESHOLD_ and one-thread BLAS pools; a run's kernel sees neither."""
    import os

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with suites.kernel_environment(3):
        assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
        assert [os.environ[k] for k in suites.THREAD_ENV] == ["3", "3", "3"]
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536" and os.environ["OMP_NUM_THREADS"] == "1"
    assert "MKL_NUM_THREADS" not in os.environ
