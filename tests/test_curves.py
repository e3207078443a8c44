"""Learning curves in every run, and run state keyed by what produced it (issue 11; issue 14 item 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ebmbench import run, training
from ebmbench.data.convert import to_uint8
from ebmbench.results import SCHEMA_VERSION, load_results

CURVE = {"curve_metrics": "mmd2,mode_coverage", "curve_n": 100}
TINY = {"dataset": "eight_gaussians", "train_steps": 16, "checkpoint_every": 4, "log_every": 4, "batch_size": 32,
        "n_eval_samples": 64, "skip_metrics": "nll_ais_forward,nll_ais_reverse,nll_pf_ode,nll_elbo,nll_heldout"}
METHOD = {"pcd_ebm": {"buffer_size": 128, "langevin_steps": 3, "sample_steps": 5, "samplers": "langevin,replay_buffer"},
          "ddpm": {"num_train_timesteps": 50, "ddpm_steps": 10, "ddim_steps": 5, "dpm_steps": 5}}


def start(tmp: Path, suite: str, method: str = "pcd_ebm", **extra) -> run.Run:
    return run.start({**TINY, **METHOD[method], "method": method, "suite": suite, "results_dir": str(tmp), **CURVE,
                      **extra})


def points(r: run.Run) -> list[dict]:
    """Curve records without their wall clocks (timing differs between processes)."""
    recs = [json.loads(ln) for ln in (r.run_dir / training.CURVE_POINTS).read_text().splitlines()]
    for rec in recs:
        rec.pop("train_wall_s")
        rec["meta"].pop("eval_s", None)
    return recs


def test_curve_steps_are_doublings_ending_at_the_budget():
    assert training.curve_steps(800, 8) == [6, 12, 25, 50, 100, 200, 400, 800]
    assert training.curve_steps(4, 8) == [1, 2, 4]
    assert training.curve_steps(100, 0) == []


@pytest.mark.parametrize("method", ["pcd_ebm", "ddpm"])
def test_curve_points_do_not_change_training(tmp_path, method):
    plain = start(tmp_path, "plain", method, curve_points=0)
    curved = start(tmp_path, "curved", method, curve_points=8)
    run.fit(plain, progress=False)
    run.fit(curved, progress=False)
    assert not (plain.run_dir / training.CURVE_POINTS).exists()
    steps = sorted({rec["step"] for rec in points(curved)})
    assert steps == training.curve_steps(16, 8) == [1, 2, 4, 8, 16]
    for name, tensor in plain.model.state_dict().items():  # weights (EMA loaded) and the replay buffer
        assert torch.equal(tensor, curved.model.state_dict()[name]), name
    assert plain.ema.keys() == curved.ema.keys()
    assert all(torch.equal(plain.ema[k], curved.ema[k]) for k in plain.ema)


def test_resumed_run_records_the_same_curve(tmp_path):
    full = start(tmp_path, "full", curve_points=8)
    run.fit(full, progress=False)
    first = start(tmp_path, "resumed", curve_points=8)
    assert run.fit(first, stop_after=10, progress=False).status == "interrupted"  # checkpoint at 8, points to 8
    again = start(tmp_path, "resumed", curve_points=8)
    assert run.fit(again, progress=False).resumed_from == 8
    assert points(again) == points(full)


def test_stale_checkpoint_is_moved_aside_and_training_starts_fresh(tmp_path, capsys):
    fresh = start(tmp_path, "fresh")
    run.fit(fresh, progress=False)
    stale = start(tmp_path, "stale")
    run.fit(stale, progress=False)
    ckpt_path = stale.run_dir / training.CHECKPOINT
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["code_version"] = "0" * 40  # written by other code: the state of the bug report (resume at 16/16)
    torch.save(ckpt, ckpt_path)
    again = start(tmp_path, "stale")
    trained = run.fit(again, progress=False)
    assert trained.resumed_from == 0 and trained.steps == 16 and "moved aside" in trained.moved_aside
    assert str(again.run_dir) in capsys.readouterr().out  # the message names the folder and the files
    moved = sorted(p.name for p in again.run_dir.glob("checkpoint.pt.stale-*"))
    assert len(moved) == 1 and (again.run_dir / training.CHECKPOINT).exists()
    for name, tensor in fresh.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name
    assert points(again) == points(fresh)


def test_unreadable_checkpoint_is_moved_aside(tmp_path):
    r = start(tmp_path, "corrupt")
    run.fit(r, stop_after=8, progress=False)
    path = r.run_dir / training.CHECKPOINT
    path.write_bytes(path.read_bytes()[:100])  # truncated
    again = start(tmp_path, "corrupt")
    trained = run.fit(again, progress=False)
    assert trained.status == "ok" and trained.resumed_from == 0
    assert str(path) in trained.moved_aside and "could not be read" in trained.moved_aside


def test_curve_rows_carry_step_and_training_compute_and_stay_out_of_final_tables(tmp_path):
    r = start(tmp_path, "rows", curve_points=8)
    run.fit(r, progress=False)
    run.draw_samples(r)
    run.evaluate(r)
    record = run.finish(r)
    assert record["schema_version"] == SCHEMA_VERSION == 2
    curve = load_results(tmp_path / "rows", curves=True)
    final = load_results(tmp_path / "rows")
    assert final.train_step.isna().all() and curve.train_step.notna().all()
    assert sorted(curve.train_step.unique()) == [1, 2, 4, 8, 16]
    assert set(curve.metric) == {"mmd2", "mode_coverage"} and set(curve.sampler) == {"langevin", "replay_buffer"}
    per_step = r.trained.flops_per_step
    assert per_step and per_step > 0
    assert (curve.train_flops == curve.train_step * per_step).all()
    assert final.train_flops.iloc[0] == 16 * per_step
    assert curve.groupby("train_step").train_wall_s.first().is_monotonic_increasing
    assert (curve.threads == 1).all()


def test_every_evaluation_sample_is_kept(tmp_path):
    r = start(tmp_path, "keep", n_eval_samples=300, curve_points=0, buffer_size=512)
    run.fit(r, progress=False)
    run.draw_samples(r)
    run.finish(r)
    kept = torch.load(r.run_dir / "samples.pt", weights_only=True)
    assert set(kept) == {"langevin", "replay_buffer"}
    for label, x in kept.items():
        assert x.dtype == torch.float32 and torch.equal(x, r.samples[label].x.float())
        assert x.shape == (300, 2)


def test_kept_images_are_the_bytes_fid_sees():
    from ebmbench.builtins import load_dataset

    digits = load_dataset("digits")
    x = digits.test[:10] + 0.01 * torch.randn(10, *digits.shape, generator=torch.Generator().manual_seed(0))
    kept = run.kept_samples(x, digits)
    assert kept.dtype == torch.uint8 and torch.equal(kept, to_uint8(x, digits))
    x[0, 0, 0, 0] = float("nan")
    assert run.kept_samples(x, digits).dtype == torch.float32  # no byte for NaN: kept as float


def test_model_metrics_at_curve_points(tmp_path):
    r = start(tmp_path, "model", curve_points=2, curve_metrics="reverse_kl,kl_model_data", samplers="langevin")
    run.fit(r, progress=False)
    recs = points(r)
    density = [rec for rec in recs if rec["sampler"] is None]
    assert [rec["metric"] for rec in density] == ["kl_model_data", "kl_model_data"]
    assert all(rec["status"] == "ok" and rec["value"] > 0 for rec in density)
    assert {rec["metric"] for rec in recs if rec["sampler"] == "langevin"} == {"reverse_kl"}
