"""The samplers' trace (samplers/trace.py): figures see the real chains; evaluation draws are unchanged by it."""

from __future__ import annotations

import torch

import ebmbench.builtins  # noqa: F401  (registers the samplers)
from ebmbench.methods.ebm import EBM, PCDParams
from ebmbench.nets.mlp import EnergyMLP
from ebmbench.protocol import Box
from ebmbench.samplers.trace import recording


def test_trace_records_every_step_of_the_real_chain_and_changes_nothing():
    torch.manual_seed(0)
    model = EBM(EnergyMLP(2, 16, 1), Box(-4.0, 4.0, (2,)), PCDParams(buffer_size=4)).eval()
    plain = model.sample(8, generator=torch.Generator().manual_seed(1), sampler="langevin", steps=5)
    with recording() as frames:
        traced = model.sample(8, generator=torch.Generator().manual_seed(1), sampler="langevin", steps=5)
    assert torch.equal(plain.x, traced.x)
    assert [label for label, _ in frames] == [f"step {i}" for i in range(6)]
    assert torch.equal(frames[-1][1], traced.x)  # the last frame is what the sampler returned
    with recording() as outside:
        pass
    model.sample(8, generator=torch.Generator().manual_seed(1), sampler="mala", steps=3)
    assert outside == []  # nothing is kept outside the block


def test_trajectory_figures_draw_the_run_s_own_sampler_at_its_budget(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from ebmbench import run
    from ebmbench.plots import run as run_plots

    r = run.start({"dataset": "eight_gaussians", "method": "ncsn", "suite": "trace", "results_dir": str(tmp_path),
                   "n_sigmas": 3, "steps_per_sigma": 2})
    label, budget = run_plots.planned(r, "annealed_langevin")
    frames = run_plots.traced(r, "annealed_langevin", budget, 50)
    direct = r.model.sample(50, generator=torch.Generator().manual_seed(r.cfg.seed + 7), sampler="annealed_langevin",
                            **budget)
    assert torch.equal(frames[-1][1], direct.x)  # the figure's last panel is what the evaluated sampler returns
    assert frames[0][0] == "start" and frames[-1][0] == "denoised" and len(frames) == 3 + 2
    assert run_plots.annealed_trajectory(r) is not None and run_plots.denoising_trajectory(r) is None
