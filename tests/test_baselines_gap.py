"""Score and diffusion baselines trained briefly close at least half of the MMD gap between their
untrained selves and the real-vs-real floor on 2D (the GANs and the flow: tests/test_gan.py, test_flow.py)."""

from __future__ import annotations

import pytest
import torch

from ebmbench import run
from ebmbench.metrics.sample_stats import mmd_with_floor

TINY = {"dataset": "eight_gaussians", "suite": "gap", "threads": 1, "batch_size": 256, "lr": 2e-3, "log_every": 100,
        "ema_decay": 0.99, "hidden": 64}
METHODS = {
    "ddpm": ({"train_steps": 600, "num_train_timesteps": 200}, "ddim", {"steps": 50, "eta": 0.0}),
    "ncsn": ({"train_steps": 600, "sigma_max": 3.0, "n_sigmas": 8}, "annealed_langevin",
             {"n_sigmas": 8, "sigma_max": 3.0, "steps_per_sigma": 20, "eps": 2e-5}),
}


def mmd_of(r: run.Run, sampler: str, budget: dict) -> dict:
    x = r.model.sample(1000, generator=torch.Generator().manual_seed(1), sampler=sampler, **budget).x
    return mmd_with_floor(x, r.dataset.test, r.dataset.train)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_trained_baseline_closes_half_the_gap_to_the_floor(tmp_path, method):
    params, sampler, budget = METHODS[method]
    r = run.start({**TINY, **params, "method": method, "results_dir": str(tmp_path)})
    r.model.eval()
    before = mmd_of(r, sampler, budget)
    assert run.fit(r, progress=False).status == "ok"
    after = mmd_of(r, sampler, budget)
    floor = before["floor"]
    print(f"{method}: untrained {before['mmd2']:.4f} trained {after['mmd2']:.4f} floor {floor:.5f}")
    assert after["mmd2"] < before["mmd2"] - 0.5 * (before["mmd2"] - floor)
