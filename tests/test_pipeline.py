"""The run pipeline end to end: resume equality, divergence rows, failed notebooks, the smoke suite."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch
import yaml

from ebmbench import cli, run, suites
from ebmbench.builtins import METHODS
from ebmbench.results import COLUMNS, load_results

TINY = {"train_steps": 20, "checkpoint_every": 10, "log_every": 5, "batch_size": 32, "n_eval_samples": 64,
        "threads": 1, "ais_steps": 20, "ais_runs": 2, "ais_chains": 4, "likelihood_points": 50}
TINY_METHOD = {"pcd_ebm": {"buffer_size": 256, "langevin_steps": 5, "sample_steps": 10},
               "ddpm": {"ddpm_steps": 20, "ddim_steps": 5, "num_train_timesteps": 100}}


def tiny_run(tmp_path: Path, method: str, suite: str, **extra) -> run.Run:
    params = {"dataset": "eight_gaussians", "method": method, "suite": suite, "results_dir": str(tmp_path),
              **TINY, **TINY_METHOD[method], **extra}
    return run.start(params)


def values(r: run.Run) -> dict:
    return {(v.sampler, v.metric): (v.value, v.status) for v in r.values}


@pytest.mark.parametrize("method", ["pcd_ebm", "ddpm"])
def test_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path, method):
    full = tiny_run(tmp_path, method, "full")
    run.fit(full, progress=False)
    run.draw_samples(full)
    run.evaluate(full)

    first = tiny_run(tmp_path, method, "resumed")
    assert run.fit(first, stop_after=15, progress=False).status == "interrupted"  # "crash" after step 15
    again = tiny_run(tmp_path, method, "resumed")  # a new process: rebuilt from the step-10 checkpoint
    assert run.fit(again, progress=False).status == "ok"
    run.draw_samples(again)
    run.evaluate(again)

    assert values(again) == values(full)
    for name, tensor in full.model.state_dict().items():  # weights, EMA-loaded, and the replay buffer
        assert torch.equal(tensor, again.model.state_dict()[name]), name
    curves = [json.loads(ln)["step"] for ln in (again.run_dir / "curves.jsonl").read_text().splitlines()]
    assert curves == [5, 10, 15, 20]  # records after the checkpoint were replayed, not duplicated


def test_divergence_is_a_row_with_its_step_and_reason(tmp_path):
    r = tiny_run(tmp_path, "pcd_ebm", "div", max_loss=1e-9)
    assert run.fit(r, progress=False).status == "diverged"
    run.draw_samples(r)
    run.evaluate(r)
    record = run.finish(r)
    assert record["run_status"] == "diverged"
    (row,) = record["rows"]
    assert row["run_status"] == "diverged" and "diverged at step 0" in row["reason"]
    assert "exceeds max_loss" in row["reason"]


def test_planted_nan_trips_the_guard_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from ebmbench.methods import ebm

    real_loss, calls = ebm.pcd_loss, {"n": 0}

    def nan_at_step_13(model, x, generator, params):
        calls["n"] += model is r.model  # the FLOP-counting step on a copy of the model is not a training step
        loss, diag = real_loss(model, x, generator, params)
        return (loss * float("nan"), diag) if calls["n"] == 13 else (loss, diag)

    r = tiny_run(tmp_path, "pcd_ebm", "nan")
    monkeypatch.setattr(r, "spec", dataclasses.replace(r.spec, objective=nan_at_step_13))
    result = run.fit(r, progress=False)
    assert result.status == "diverged" and result.steps == 12 and "non-finite" in result.reason
    ckpt = torch.load(r.run_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 10  # the last good checkpoint, untouched by the NaN step
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    record = run.finish(r)
    assert record["run_status"] == "diverged" and "non-finite" in record["rows"][0]["reason"]


def test_finished_run_writes_tidy_rows(tmp_path):
    r = tiny_run(tmp_path, "pcd_ebm", "rows")
    run.fit(r, progress=False)
    run.draw_samples(r)
    run.evaluate(r)
    run.finish(r)
    frame = load_results(tmp_path / "rows")
    assert list(frame.columns) == COLUMNS
    assert set(frame.sampler.dropna()) == {"langevin", "mala", "hmc", "replay_buffer"}
    mala = frame[(frame.sampler == "mala") & (frame.metric == "mmd2")].iloc[0]
    assert 0 <= mala.meta["acceptance"] <= 1  # one gradient at the start, then one per proposal:
    assert mala.nfe == mala.meta["sampler_params"]["steps"] + 1
    nll = frame[frame.metric == "nll_heldout"].iloc[0]
    assert nll.metric_status == "ok" and nll.meta["likelihood_kind"] == "exact"
    assert nll.meta["quadrature_error"] < 1e-3
    lang = frame[(frame.sampler == "langevin") & (frame.metric == "mmd2")].iloc[0]
    assert lang.nfe == 10 and lang.grad_evals == 10 and lang.flops_per_sample > 0
    assert lang.meta["floor"] is not None and lang.n_samples == 64
    buf = frame[(frame.sampler == "replay_buffer") & (frame.metric == "mmd2")].iloc[0]
    assert buf.meta["amortized_nfe"] > 0 and buf.nfe == 0


@pytest.mark.slow
def test_digits_metrics_without_a_density_say_why(tmp_path):
    r = run.start({"dataset": "digits", "method": "ddpm", "suite": "dig", "results_dir": str(tmp_path),
                   **TINY, **TINY_METHOD["ddpm"], "skip_metrics": "nll_pf_ode"})
    run.fit(r, progress=False)
    run.draw_samples(r)
    run.evaluate(r)
    by_metric = {(v.sampler, v.metric): v for v in r.values}
    assert by_metric[("ddim", "mode_coverage")].status == "not_applicable"
    assert "no exact density" in by_metric[("ddim", "mode_coverage")].reason
    assert by_metric[(None, "nll_heldout")].status == "not_applicable"
    assert "needs capability 'energy'" in by_metric[(None, "nll_heldout")].reason
    assert by_metric[("ddim", "mmd2")].status == "ok" and by_metric[("ddim", "mmd2")].n_samples == 64
    assert by_metric[(None, "nll_pf_ode")].status == "not_applicable"
    assert "skipped by the run's skip_metrics" in by_metric[(None, "nll_pf_ode")].reason


def planted_notebooks(tmp_path: Path) -> Path:
    """A copy of the notebooks in which the EBM notebook raises in a cell after training."""
    nb_dir = tmp_path / "notebooks"
    shutil.copytree(suites.NOTEBOOKS_DIR, nb_dir)
    nb = nbformat.read(nb_dir / "train_ebm.ipynb", as_version=4)
    nb.cells.insert(5, nbformat.v4.new_code_cell('raise RuntimeError("planted failure")'))
    nbformat.write(nb, nb_dir / "train_ebm.ipynb")
    return nb_dir


@pytest.mark.slow
def test_failing_notebook_is_a_failed_row_and_nonzero_exit(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suites, "NOTEBOOKS_DIR", planted_notebooks(tmp_path))
    suite = tmp_path / "planted.yaml"
    suite.write_text(yaml.safe_dump({"name": "planted", "defaults": {**TINY, "train_steps": 5},
                                     "runs": [{"datasets": ["eight_gaussians"], "methods": ["pcd_ebm", "ddpm"],
                                               "method_params": TINY_METHOD}]}))
    code = cli.main(["run", str(suite), "--results-dir", str(tmp_path / "res"), "--no-report"])
    out = capsys.readouterr().out
    assert code == 1
    assert "1 failed, 1 ok" in out and "failed: eight_gaussians__pcd_ebm" in out
    frame = load_results(tmp_path / "res" / "planted")
    failed = frame[frame.run_status == "failed"]
    assert len(failed) == 1 and "planted failure" in failed.iloc[0].reason
    assert (frame[frame.method == "ddpm"].run_status == "ok").all()  # the suite went on


@pytest.mark.slow
def test_smoke_suite_runs_every_notebook_and_the_report(smoke_serial, capsys):
    code, out, res = smoke_serial
    assert code == 0, out
    suite_dir = res / "smoke"
    assert "report: " in out and (suite_dir / "report.html").stat().st_size > 10_000
    assert (suite_dir / "reproduce.html").exists()
    for name in ("quality_vs_cost", "sample_grids", "training_curves", "landscapes", "learning_curves"):
        assert (suite_dir / "figures" / f"{name}.png").exists() and (suite_dir / "figures" / f"{name}.svg").exists()
    frame = pd.read_parquet(suite_dir / "results.parquet")
    assert (frame.run_status == "ok").all()
    assert sorted(frame.train_step.dropna().unique()) == [20, 40]  # curve rows at both curve points
    # every evaluated metric row says how long the metric itself took (the evaluation's own cost)
    eval_s = [json.loads(m).get("eval_s") for m in frame.meta]
    assert all(isinstance(t, float) and t >= 0 for t in eval_s), eval_s[:5]
    notebooks = {suites.NOTEBOOKS_DIR / METHODS.get(m).notebook for m in frame.method.unique()}
    assert {p.name for p in notebooks} == {p.name for p in suites.NOTEBOOKS_DIR.glob("train_*.ipynb")}
    for run_dir in (suite_dir / "runs").iterdir():
        for name in ("config.json", "curves.jsonl", "curve_points.jsonl", "result.json", "checkpoint.pt",
                     "samples.png", "samples.pt", "notebook.ipynb"):
            assert (run_dir / name).exists(), (run_dir.name, name)
    # a second invocation runs nothing and says so
    assert cli.main(["run", "smoke", "--results-dir", str(res), "--no-report"]) == 0
    assert "8 skipped (finished)" in capsys.readouterr().out


def test_cli_list_and_dry_run(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "method pcd_ebm" in out and "sampler ddim" in out and "eight_gaussians" in out
    assert cli.main(["run", "quick", "--dry-run", "--no-estimate"]) == 0  # the estimate: tests/test_estimate.py
    assert "digits__ddpm__s2" in capsys.readouterr().out
    assert cli.main(["run", "nope"]) == 2


@pytest.mark.parametrize("every", [1, 7])
def test_guard_read_every_k_steps_finds_the_same_diverged_step(tmp_path, monkeypatch, every):
    """On an accelerator the diagnostics are read every log_every steps (no host sync per step); every step is
    still checked in order, so the run stops at the same step with the same last good checkpoint."""
    from ebmbench import training
    from ebmbench.methods import diffusion

    real_loss, calls = diffusion.ddpm_loss, {"n": 0}

    def nan_at_step_13(model, x, generator, params):
        calls["n"] += model is r.model
        loss, diag = real_loss(model, x, generator, params)
        return (loss * float("nan"), diag) if calls["n"] == 13 else (loss, diag)

    monkeypatch.setattr(training, "guard_every", lambda device, cfg: every)
    r = tiny_run(tmp_path, "ddpm", f"guard{every}", log_every=20)
    monkeypatch.setattr(r, "spec", dataclasses.replace(r.spec, objective=nan_at_step_13))
    result = run.fit(r, progress=False)
    assert result.status == "diverged" and result.steps == 12 and "non-finite" in result.reason
    assert torch.load(r.run_dir / "checkpoint.pt", weights_only=False)["step"] == 10


def test_a_non_finite_gradient_skips_the_update_on_the_device():
    from ebmbench.methods.base import adam, clipped_step

    w = torch.nn.Parameter(torch.ones(3))
    opt = adam([w], 0.1, (0.9, 0.999))
    (w * torch.tensor([1.0, float("nan"), 2.0])).sum().backward()
    norm = clipped_step(opt, [w], 0.0)
    assert not torch.isfinite(norm) and torch.equal(w.detach(), torch.ones(3))
    assert float(opt.state[w]["step"]) == 0  # the fused kernel's found_inf undid the step count too
    opt.zero_grad()
    (w * 2.0).sum().backward()
    clipped_step(opt, [w], 0.0)
    assert (w.detach() < 1).all() and float(opt.state[w]["step"]) == 1
