"""Score and diffusion baselines trained briefly close at least half of the MMD gap between their
untrained selves and the real-vs-real floor on 2D (the GANs and the flow: tests/test_gan.py, test_flow.py)."""

from __future__ import annotations

import pytest
from conftest import mmd_before_and_after

TINY = {"dataset": "eight_gaussians", "suite": "gap", "threads": 1, "batch_size": 256, "lr": 2e-3, "log_every": 100,
        "ema_decay": 0.99, "hidden": 64}
METHODS = {
    "ddpm": ({"train_steps": 600, "num_train_timesteps": 200}, "ddim", {"steps": 50, "eta": 0.0}),
    "ncsn": ({"train_steps": 600, "sigma_max": 3.0, "n_sigmas": 8}, "annealed_langevin",
             {"n_sigmas": 8, "sigma_max": 3.0, "steps_per_sigma": 20, "eps": 2e-5}),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_trained_baseline_closes_half_the_gap_to_the_floor(tmp_path, method):
    params, sampler, budget = METHODS[method]
    before, after, _ = mmd_before_and_after(tmp_path, {**TINY, **params, "method": method}, sampler, budget,
                                            eval_untrained=True)
    floor = before["floor"]
    assert after["mmd2"] < before["mmd2"] - 0.5 * (before["mmd2"] - floor)
