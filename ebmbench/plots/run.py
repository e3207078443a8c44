"""Figures of one run, drawn from its ``Run`` inside the run's notebook: samples, landscapes, the samplers' chains.

The trajectory figures record the run's own samplers (``samplers.trace``) at the budgets the run evaluated
(``run.sampler_plan``): what they show is what was measured, final denoise step and projection included.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # no backend forced: notebooks draw inline, headless savers choose Agg
import torch
from torch import Tensor

from ebmbench.plots.common import grid_2d, show_samples
from ebmbench.run import Run, sampler_plan
from ebmbench.samplers.trace import recording
from ebmbench.serialization import load_tensors


def not_drawn(run: Run, what: str) -> bool:
    """True, with a line saying why, when training stopped early (diverged): that model's figures would show NaNs
    or raise, and its result row already says where and why it stopped. An untrained model is drawn."""
    trained = run.trained
    if trained is None or trained.status == "ok":
        return False
    print(f"no {what}: the run {trained.status} at step {trained.steps}: {trained.reason}")
    return True


def samples_figure(run: Run, path: Path | None = None) -> plt.Figure:
    """Test data beside each evaluation sampler's samples; saved as the run's samples.png."""
    panels = [("test data", run.dataset.test)] + [
        (f"{k} (NFE {s.cost.nfe:g})", s.x) for k, s in run.samples.items()
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.3), squeeze=False)
    for ax, (title, x) in zip(axes[0], panels):
        show_samples(ax, x[:2000], title, run.dataset.support)
    fig.suptitle(f"{run.cfg.method} on {run.cfg.dataset}, seed {run.cfg.seed}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path or run.run_dir / "samples.png", dpi=110)
    return fig


def energy_landscape(run: Run) -> plt.Figure | None:
    """exp(-E) of the model beside the true density on the support box (2D energies only)."""
    if not_drawn(run, "energy landscape"):
        return None
    if not run.model.has("energy") or run.model.support.dim != 2:
        return None
    box, n = run.model.support, 200
    pts = grid_2d(box, n)
    with torch.no_grad():
        model_logp = -run.model.energy(pts.to(run.model.device)).cpu()
    panels = [("model exp(-E) (unnormalized)", model_logp)]
    if run.dataset.density is not None:
        panels.append(("true density", run.dataset.density.log_prob(pts)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.3), squeeze=False)
    for ax, (title, logp) in zip(axes[0], panels):
        img = torch.exp(logp - logp.max()).view(n, n)
        ax.imshow(img.numpy(), origin="lower", extent=(box.low, box.high, box.low, box.high), cmap="magma")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig



def planned(run: Run, sampler: str) -> tuple[str, dict] | None:
    """(label, budget) of the run's first evaluation of ``sampler``, or None when the run does not evaluate it."""
    for label, name, budget in sampler_plan(run):
        if name == sampler:
            return label, budget
    return None


def traced(run: Run, sampler: str, budget: dict, n: int, seed_offset: int = 7) -> list[tuple[str, Tensor]]:
    """Every state the run's ``sampler`` emits while drawing ``n`` samples at ``budget`` (its own generator)."""
    gen = torch.Generator(run.model.device).manual_seed(run.cfg.seed + seed_offset)
    with recording() as frames:
        run.model.sample(n, generator=gen, sampler=sampler, **budget)
    return frames


def pick(frames: list[tuple[str, Tensor]], n_frames: int) -> list[tuple[str, Tensor]]:
    """``n_frames`` evenly spaced frames, the first and the last included."""
    idx = torch.linspace(0, len(frames) - 1, min(n_frames, len(frames))).round().long().unique().tolist()
    return [frames[i] for i in idx]


def frames_figure(run: Run, frames: list[tuple[str, Tensor]], title: str) -> plt.Figure:
    fig, axes = plt.subplots(1, len(frames), figsize=(2.4 * len(frames), 2.6), squeeze=False)
    for ax, (label, xs) in zip(axes[0], frames):
        show_samples(ax, xs, label, run.dataset.support)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _n(run: Run) -> int:
    return 500 if run.model.support.dim <= 2 else 16


def trajectory(run: Run, sampler: str, n_frames: int, title: str) -> plt.Figure | None:
    """``n_frames`` evenly spaced states of the run's ``sampler`` at its evaluated budget (None: not evaluated);
    ``title`` may use {label} and the budget's keys."""
    if not_drawn(run, "sampler trajectory"):
        return None
    plan = planned(run, sampler)
    if plan is None:
        return None
    label, budget = plan
    frames = pick(traced(run, sampler, budget, _n(run)), n_frames)
    return frames_figure(run, frames, title.format(label=label, budget=", ".join(f"{k}={v}" for k, v in
                                                                                budget.items()), **budget))


def chain_snapshots(run: Run, n_frames: int = 6) -> plt.Figure | None:
    """The run's fresh Langevin chains from noise, at evenly spaced steps up to the evaluated length."""
    return trajectory(run, "langevin", n_frames, "{label}: {budget}")


def energy_histograms(run: Run, n: int = 500) -> plt.Figure | None:
    """Energies of test data against energies of the model's own samples (default sampler)."""
    if not_drawn(run, "energy histograms"):
        return None
    if not run.model.has("energy"):
        return None
    gen = torch.Generator(run.model.device).manual_seed(run.cfg.seed + 11)
    label, name, budget = sampler_plan(run)[0]  # the method's first evaluation sampler, at its budget
    samples = run.model.sample(n, generator=gen, sampler=name, **budget).x
    with torch.no_grad():
        e_data = run.model.energy(run.dataset.test[:n].to(run.model.device)).cpu()
        e_model = run.model.energy(samples).cpu()
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    ax.hist(e_data.numpy(), bins=40, alpha=0.6, density=True, label="test data")
    ax.hist(e_model.numpy(), bins=40, alpha=0.6, density=True, label=f"samples ({label})")
    ax.set_xlabel("energy E(x)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig



def long_run_chains(run: Run, factors: tuple[int, ...] = (1, 4, 16)) -> plt.Figure | None:
    """The run's Langevin chains far beyond the evaluated length: short-run models degrade, persistent ones hold."""
    if not_drawn(run, "long-run chains"):
        return None
    plan = planned(run, "langevin")
    if plan is None:
        return None
    _, budget = plan
    steps = int(budget.get("steps", 0))
    if steps < 1:
        return None
    frames = dict(traced(run, "langevin", {**budget, "steps": steps * max(factors)}, _n(run)))
    shown = [(f"step {steps * f} ({f}x)", frames[f"step {steps * f}"]) for f in factors]
    return frames_figure(run, shown, f"long-run chains: {', '.join(f'{f}x' for f in factors)} the evaluated length")


def denoising_trajectory(run: Run, n_frames: int = 6) -> plt.Figure | None:
    """x_t along the run's DDIM trajectory (its evaluated steps) from noise to data (models with eps prediction)."""
    return trajectory(run, "ddim", n_frames, "DDIM denoising trajectory ({steps} steps, as evaluated)")


def samples_over_training(run: Run) -> plt.Figure | None:
    """Samples of the raw weights at each snapshot step (same noise each time), if snapshots were taken."""
    path = run.run_dir / "snapshots.pt"
    if not path.exists():
        return None
    snaps = load_tensors(path)
    fig, axes = plt.subplots(1, len(snaps), figsize=(2.4 * len(snaps), 2.6), squeeze=False)
    for ax, (step, x) in zip(axes[0], sorted(snaps.items())):
        show_samples(ax, x, f"step {step}", run.dataset.support)
    fig.suptitle("samples over training (raw weights, fixed noise)", fontsize=10)
    fig.tight_layout()
    return fig




def annealed_trajectory(run: Run, n_frames: int = 6) -> plt.Figure | None:
    """The run's annealed Langevin chains (Song & Ermon 2019) at the end of evenly chosen noise levels, then after
    its final denoise step and projection, as evaluated."""
    if not_drawn(run, "annealed Langevin trajectory"):
        return None
    plan = planned(run, "annealed_langevin")
    if plan is None:
        return None
    _, budget = plan
    frames = traced(run, "annealed_langevin", budget, _n(run))
    shown = pick(frames[:-1], n_frames - 1) + frames[-1:]
    return frames_figure(run, shown, f"annealed Langevin: {budget.get('steps_per_sigma')} steps per level, "
                                     f"eps = {budget.get('eps')}")
