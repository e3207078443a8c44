"""The cost estimate (ebmbench/estimate.py): its counts against the real draws and steps, its ETA, --only and
--dry-run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ebmbench import cli, estimate
from ebmbench.builtins import METHODS, load_dataset
from ebmbench.config import resolve
from ebmbench.methods.base import training_step
from ebmbench.metrics.cost import flops_per_sample
from ebmbench.suites import load_suite
from ebmbench.training import step_flops

SMALL = {  # 2D runs with every kind of sampler: eps (DDIM, DDPM), score (annealed), energy (ULA, MALA, HMC)
    "ddpm": {"num_train_timesteps": 50, "ddpm_steps": 50, "ddim_steps": 7, "dpm_steps": 5},
    "ncsn": {"n_sigmas": 4, "steps_per_sigma": 3},
    "pcd_ebm": {"langevin_steps": 4, "sample_steps": 9, "buffer_size": 256},
}


def small_cfg(method: str, **extra):
    return resolve({"dataset": "eight_gaussians", "method": method, "batch_size": 32, "train_steps": 100,
                    **SMALL[method], **extra})


@pytest.mark.parametrize("method", sorted(SMALL))
def test_stand_in_counts_equal_the_real_draws_and_flops_equal_the_flop_counter(method):
    """The stand-in draw counts the same NFE and input gradients as a real draw, and NFE x counted FLOPs per network
    evaluation equals torch's FlopCounterMode over the real draw (metrics.cost.flops_per_sample)."""
    cfg = small_cfg(method)
    torch.manual_seed(0)
    model = METHODS.get(method).build(load_dataset("eight_gaussians"), cfg.method_params)
    _, trained = estimate.train_part(model, cfg, load_dataset("eight_gaussians").train, lambda: 1.0)
    trained.eval()
    net = estimate.network_cost(trained, cfg)
    for label, name, budget in estimate.plan(cfg):
        nfe, grads, _ = estimate.sampler_calls(trained, name, budget, n=4)
        real = trained.sample(4, generator=torch.Generator().manual_seed(1), sampler=name, **budget).cost
        assert (nfe, grads) == (real.nfe, real.grad_evals), label
        if name == "replay_buffer":
            continue
        flops, _ = estimate.per_sample((nfe, grads), net)
        assert flops == pytest.approx(flops_per_sample(trained, name, budget), rel=1e-9), label


@pytest.mark.parametrize("method, batch", [("ddpm", 3000), ("pcd_ebm", 200)])
def test_training_flops_scale_to_the_step_flops_of_the_runs_batch(method, batch, monkeypatch):
    """Counted at a smaller batch and scaled, the step's FLOPs equal training.step_flops at the run's batch."""
    monkeypatch.setattr(estimate, "CPU_STEP_FLOPS", 1e6)  # a probe batch below the run's: the count is scaled
    cfg = small_cfg(method, batch_size=batch)
    data = load_dataset("eight_gaussians").train
    torch.manual_seed(0)
    model = METHODS.get(method).build(load_dataset("eight_gaussians"), cfg.method_params)
    part, _ = estimate.train_part(model, cfg, data, lambda: 1.0)
    assert f"scaled to {batch}" in part.basis, part.basis
    step_fn, make_optimizers = training_step(METHODS.get(method), cfg.grad_clip)
    exact = step_flops(step_fn, model, make_optimizers, cfg, data)
    assert part.flops == pytest.approx(cfg.train_steps * exact, rel=1e-6)


def test_estimate_run_restores_rng_and_threads_and_adds_its_parts():
    cfg = small_cfg("ddpm", curve_points=2, curve_n=10, samplers="ddim", n_eval_samples=20)
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    est = estimate.estimate_run(cfg)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    names = [p.name for p in est.parts]
    assert names[:2] == ["start", "train"] and {"curve:ddim", "eval:ddim", "eval:nll_elbo"} <= set(names)
    curve = next(p for p in est.parts if p.name == "curve:ddim")
    one = next(p for p in est.parts if p.name == "eval:ddim")
    assert curve.flops == pytest.approx(one.flops * 2 * 10 / 20)  # 2 points x 10 samples against 20 samples
    assert est.seconds == pytest.approx(sum(p.seconds for p in est.parts)) and est.seconds > 0


def test_eta_is_the_estimate_left_scaled_by_the_finished_runs(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: clock[0])
    with estimate.EtaBar(["a", "b", "c"], {"a": 600.0, "b": 1200.0, "c": 1800.0}, "t", disable=True) as bar:
        assert bar.eta() == "ETA by estimate 60 min"  # 3600 s estimated, nothing finished: taken as it is
        clock[0] += 1200.0  # run a took twice its estimate
        bar.done("a")
        assert bar.eta() == "ETA by estimate 1.7 h"  # 3000 s left x 2 = 100 min
    with estimate.EtaBar(["a", "x"], {"a": 60.0}, "t", disable=True) as bar:
        assert bar.eta() == "ETA by estimate 1 min + 1 run(s) without one"


def test_only_selects_by_label_method_or_run_id_and_refuses_unknown_names(tmp_path):
    _, runs = load_suite("cifar10", str(tmp_path))
    assert [r.label for r in estimate.select(runs, "ddpm_budget")] == ["ddpm_budget"]
    assert [r.cfg.method for r in estimate.select(runs, "sngan,wgan_gp")] == ["wgan_gp", "sngan"]
    assert estimate.select(runs, runs[0].cfg.run_id) == runs[:1]
    with pytest.raises(ValueError, match=r"\['ddpm_fast'\] is not a label.*labels: ddpm_budget, igebm_budget"):
        estimate.select(runs, "ddpm_fast")
    assert cli.main(["run", "cifar10", "--only", "nope", "--dry-run", "--results-dir", str(tmp_path)]) == 2


def test_dry_run_prints_hours_per_run_and_the_total(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(estimate, "MEASURE_S", 0.05)
    assert cli.main(["run", "smoke", "--dry-run", "--only", "ddpm", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("  eight_gaussians__ddpm") or
            line.startswith("  digits__ddpm") or line.startswith("  total")]
    assert len(rows) == 3 and "H100 h (assumed 40 TFLOP/s)" in out and "an assumption, not a measurement" in out
    hours = [float(r.split(" | ")[5]) for r in rows]
    assert hours[2] == pytest.approx(hours[0] + hours[1], rel=0.01) and hours[0] > 0


def test_seed_free_key_shares_one_estimate_across_seeds():
    a, b = small_cfg("ddpm"), dataclasses.replace(small_cfg("ddpm"), seed=3)
    assert a.run_id != b.run_id and estimate.seed_free_key(a) == estimate.seed_free_key(b)


def test_table_sums_parts_and_prices_flops_at_the_assumed_rates(monkeypatch):
    est = estimate.RunEstimate("r1", "ddpm", "cpu", [estimate.Part("train", 7.2e15, 3600.0, ""),
                                                   estimate.Part("curve:x", 0.0, 1800.0, ""),
                                                   estimate.Part("eval:x", 3.6e15, 5400.0, "")])
    monkeypatch.setenv(estimate.ASSUMED_ENV, "A=1, B=2")
    lines = estimate.table({"r1": est}, labels={"r1": "ddpm_budget"})
    assert lines[0].endswith("A h (assumed 1 TFLOP/s) | B h (assumed 2 TFLOP/s)")
    assert lines[1] == "ddpm_budget: r1 | cpu | 1 | 0.5 | 1.5 | 3 | 10.8 | 3 | 1.5"  # 1.08e16 FLOPs / 1e12 / 3600
    assert lines[2] == "total |  |  |  |  | 3 | 10.8 | 3 | 1.5"
    monkeypatch.setenv(estimate.ASSUMED_ENV, "H100")
    with pytest.raises(ValueError, match="write name=TFLOP/s pairs"):
        estimate.assumed_rates()
