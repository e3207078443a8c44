"""Figures: samples, energy landscapes, chains, denoising trajectories, quality vs cost.

Pictures branch on the data's shape (2D points or images) and on declared
capabilities, never on model family.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt  # no backend forced: notebooks draw inline, headless savers choose Agg
import pandas as pd
import torch
from torch import Tensor

from ebmbench.curves import floor_of
from ebmbench.run import Run, sampler_plan


def _show(ax, x: Tensor, title: str, box) -> None:
    """Scatter 2D points, or a grid of images (uint8 bytes as kept in samples.pt, or model space), on ``ax``."""
    if x.dtype == torch.uint8:
        x = box.low + (box.high - box.low) * x.float() / 255
    x = x.detach().float().cpu()
    if x.dim() == 2 and x.shape[1] == 2:
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_xlim(box.low, box.high)
        ax.set_ylim(box.low, box.high)
        ax.set_aspect("equal")
    else:
        from torchvision.utils import make_grid  # lazy: torchvision's import costs seconds, 2D runs skip it

        imgs = (x[:64] - box.low) / (box.high - box.low)
        grid = make_grid(imgs.clamp(0, 1), nrow=8, padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    ax.set_title(title, fontsize=9)


def samples_figure(run: Run, path: Path | None = None) -> plt.Figure:
    """Test data beside each evaluation sampler's samples; saved as the run's samples.png."""
    panels = [("test data", run.dataset.test)] + [
        (f"{k} (NFE {s.cost.nfe:g})", s.x) for k, s in run.samples.items()
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.3), squeeze=False)
    for ax, (title, x) in zip(axes[0], panels):
        _show(ax, x[:2000], title, run.dataset.support)
    fig.suptitle(f"{run.cfg.method} on {run.cfg.dataset}, seed {run.cfg.seed}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path or run.run_dir / "samples.png", dpi=110)
    return fig


def grid_2d(box, n: int = 200) -> Tensor:
    ticks = torch.linspace(box.low, box.high, n)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="xy")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


def energy_landscape(run: Run) -> plt.Figure | None:
    """exp(-E) of the model beside the true density on the support box (2D energies only)."""
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


def _langevin_frames(run: Run, marks: list[int]) -> list[tuple[int, Tensor]]:
    """States of fresh ULA chains from noise at the given step counts (the run's eps and T)."""
    from ebmbench.samplers.langevin import ula

    p, box = run.cfg.method_params, run.model.support
    gen = torch.Generator(run.model.device).manual_seed(run.cfg.seed + 7)
    x = box.uniform(16 if box.dim > 2 else 500, gen, run.model.device)
    frames, done = [], 0
    for k in sorted(marks):
        x, _ = ula(run.model.energy, x, steps=k - done, eps=p.langevin_eps, temperature=p.langevin_T,
                   generator=gen, box=box, support_mode=p.support_mode)
        frames.append((k, x))
        done = k
    return frames


def _frames_figure(run: Run, frames: list[tuple[int, Tensor]], title: str) -> plt.Figure:
    fig, axes = plt.subplots(1, len(frames), figsize=(2.4 * len(frames), 2.6), squeeze=False)
    for ax, (k, xs) in zip(axes[0], frames):
        _show(ax, xs, f"step {k}", run.dataset.support)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def chain_snapshots(run: Run, n_frames: int = 6) -> plt.Figure | None:
    """Fresh Langevin chains from noise at evenly spaced steps up to the evaluation length."""
    if not run.model.has("energy"):
        return None
    p = run.cfg.method_params
    steps = p.sample_steps
    marks = sorted({max(1, round(steps * i / (n_frames - 1))) for i in range(n_frames)})
    return _frames_figure(run, _langevin_frames(run, marks),
                          f"Langevin chains (eps={p.langevin_eps}, T={p.langevin_T})")


def energy_histograms(run: Run, n: int = 500) -> plt.Figure | None:
    """Energies of test data against energies of the model's own samples (default sampler)."""
    if not run.model.has("energy") or run.status != "ok":
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
    """The same chains far beyond the evaluation length: short-run models degrade, persistent ones hold."""
    if not run.model.has("energy"):
        return None
    steps = run.cfg.method_params.sample_steps
    return _frames_figure(run, _langevin_frames(run, [steps * f for f in factors]),
                          f"long-run chains: {', '.join(f'{f}x' for f in factors)} the evaluation length")


def denoising_trajectory(run: Run, n: int = 500, n_frames: int = 6) -> plt.Figure | None:
    """x_t along a DDIM trajectory from noise to data (models with eps prediction)."""
    if not run.model.has("eps_prediction"):
        return None
    scheduler = run.model.make_ddim_scheduler()
    scheduler.set_timesteps(50)
    gen = torch.Generator(run.model.device).manual_seed(run.cfg.seed + 7)
    n = n if run.model.support.dim <= 2 else 16
    x = torch.randn((n, *run.model.support.shape), generator=gen, device=run.model.device)
    keep = set(torch.linspace(0, len(scheduler.timesteps) - 1, n_frames).round().long().tolist())
    frames = []
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            if i in keep:
                frames.append((int(t), x))
            x = scheduler.step(run.model.eps(x, t.expand(n).to(x.device)), t, x).prev_sample
    frames.append((0, x))
    fig, axes = plt.subplots(1, len(frames), figsize=(2.4 * len(frames), 2.6), squeeze=False)
    for ax, (t, xs) in zip(axes[0], frames):
        _show(ax, xs, f"t = {t}" if t else "x_0", run.dataset.support)
    fig.suptitle("DDIM denoising trajectory (50 steps)", fontsize=10)
    fig.tight_layout()
    return fig


def samples_over_training(run: Run) -> plt.Figure | None:
    """Samples of the raw weights at each snapshot step (same noise each time), if snapshots were taken."""
    path = run.run_dir / "snapshots.pt"
    if not path.exists():
        return None
    snaps = torch.load(path, weights_only=True)
    fig, axes = plt.subplots(1, len(snaps), figsize=(2.4 * len(snaps), 2.6), squeeze=False)
    for ax, (step, x) in zip(axes[0], sorted(snaps.items())):
        _show(ax, x, f"step {step}", run.dataset.support)
    fig.suptitle("samples over training (raw weights, fixed noise)", fontsize=10)
    fig.tight_layout()
    return fig


def annealed_trajectory(run: Run, n_frames: int = 6) -> plt.Figure | None:
    """Annealed Langevin (Song & Ermon 2019) shown at the end of evenly chosen noise levels (score models)."""
    from ebmbench.noise import geometric_sigmas
    from ebmbench.samplers.annealed import initial_state, step_sizes

    if not run.model.has("score"):
        return None
    p, box = run.cfg.method_params, run.model.support
    sigmas = geometric_sigmas(p.sigma_max, p.sigma_min, p.n_sigmas)
    alphas = step_sizes(sigmas, p.eps)
    gen = torch.Generator(run.model.device).manual_seed(run.cfg.seed + 7)
    x = initial_state(run.model, 500 if box.dim <= 2 else 16, gen, p.init, p.sigma_max)
    keep = set(torch.linspace(0, len(sigmas) - 1, min(n_frames, len(sigmas))).round().long().tolist())
    frames = []
    with torch.no_grad():
        for i, (sigma, alpha) in enumerate(zip(sigmas.tolist(), alphas.tolist())):
            for _ in range(p.steps_per_sigma):
                z = torch.randn(x.shape, generator=gen, device=x.device)
                x = x + 0.5 * alpha * run.model.score(x, sigma) + alpha**0.5 * z
            if i in keep:
                frames.append((f"sigma = {sigma:.3g}", x))
    fig, axes = plt.subplots(1, len(frames), figsize=(2.4 * len(frames), 2.6), squeeze=False)
    for ax, (title, xs) in zip(axes[0], frames):
        _show(ax, xs, title, run.dataset.support)
    fig.suptitle(f"annealed Langevin: {p.steps_per_sigma} steps per level, eps = {p.eps}", fontsize=10)
    fig.tight_layout()
    return fig


def training_curves(run_dir: Path, keys: tuple[str, ...] = ("loss",)) -> plt.Figure:
    """Curves recorded in curves.jsonl against the step."""
    recs = [json.loads(ln) for ln in (Path(run_dir) / "curves.jsonl").read_text().splitlines() if ln]
    frame = pd.DataFrame(recs)
    keys = tuple(k for k in keys if k in frame) or ("loss",)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        ax.plot(frame["step"], frame[k])
        ax.set_xlabel("step")
        ax.set_title(k, fontsize=9)
    fig.tight_layout()
    return fig


# headline quality: FID where measured, else the 2D reverse KL (the ladder-validated metrics; MMD^2 for old rows)
QUALITY_PREFERENCE = ("fid_inception", "fid_domain", "reverse_kl", "mmd2")


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not dominated by another with lower-or-equal cost and quality (both minimized)."""
    ordered = points.sort_values([x, y])
    front, best = [], float("inf")
    for _, row in ordered.iterrows():
        if row[y] < best:
            front.append(row)
            best = row[y]
    return pd.DataFrame(front)


def _headline_points(frame: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, str]:
    rows = frame[(frame.dataset == dataset) & (frame.metric_status == "ok")]
    metric = next((m for m in QUALITY_PREFERENCE if (rows.metric == m).any()), QUALITY_PREFERENCE[-1])
    rows = rows[rows.metric == metric].copy()
    rows["nfe_cost"] = [max(m.get("amortized_nfe", n) if isinstance(m, dict) else n, 1)
                        for m, n in zip(rows["meta"], rows["nfe"])]
    rows["floor"] = [floor_of(m) for m in rows["meta"]]
    points = rows.groupby(["family", "method", "sampler"], as_index=False).agg(
        value=("value", "mean"), nfe_cost=("nfe_cost", "mean"), flops=("flops_per_sample", "mean"),
        floor=("floor", "mean"))
    points["setting"] = points["method"] + " / " + points["sampler"]
    return points, metric


def quality_vs_training_compute(table: pd.DataFrame, budgets: pd.DataFrame | None = None) -> plt.Figure | None:
    """Learning curves: each dataset's headline metric against counted training FLOPs, one line per
    method / sampler (band: +-1 standard error over seeds and samples), the floor dashed, budgets marked."""
    if table.empty:
        return None
    datasets = sorted(table.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 4.0), squeeze=False)
    methods = sorted(table.method.unique())
    colours = dict(zip(methods, plt.get_cmap("tab10").colors))
    for ax, ds in zip(axes[0], datasets):
        d = table[table.dataset == ds]
        for (method, sampler), c in d.groupby(["method", "sampler"]):
            c = c.sort_values("train_step")
            style = "-" if sampler == d[d.method == method].sampler.iloc[0] else "--"
            x = c.train_flops if c.train_flops.notna().all() else c.train_step
            ax.plot(x, c.value, style, marker="o", ms=3, c=colours[method], label=f"{method} / {sampler}")
            ax.fill_between(x, c.value - c.se, c.value + c.se, color=colours[method], alpha=0.15, lw=0)
            if budgets is not None:
                b = budgets[(budgets.dataset == ds) & (budgets.method == method) & (budgets.sampler == sampler)]
                for _, row in b.iterrows():
                    at = c[c.train_step == row.budget_steps]
                    ax.plot(x[at.index], at.value, "*", ms=12, c=colours[method], mec="k")
        if d.floor.notna().any():
            ax.axhline(d.floor.mean(), ls=":", c="gray", lw=1, label="floor (exact samples / real data)")
        ax.set_xscale("log")
        ax.set_yscale("log" if (d.value > 0).all() else "linear")
        ax.set_xlabel("counted training FLOPs" if d.train_flops.notna().all() else "training steps")
        ax.set_ylabel(f"{d.metric.iloc[0]} (lower is better)")
        ax.set_title(ds, fontsize=10)
        ax.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    return fig


def quality_vs_cost(frame: pd.DataFrame, path: Path | None = None) -> plt.Figure:
    """Headline: sample quality against NFE and against FLOPs per sample, every family, Pareto front marked."""
    import seaborn as sns  # lazy, like every heavy import here: run notebooks never draw suite figures

    datasets = sorted(frame.dataset.dropna().unique()) or ["(no rows)"]
    fig, axes = plt.subplots(2, len(datasets), figsize=(4.4 * len(datasets), 8.5), squeeze=False)
    for j, ds in enumerate(datasets):
        points, metric = _headline_points(frame, ds)
        for i, (x, label) in enumerate([("nfe_cost", "NFE per sample (buffer: amortized)"),
                                        ("flops", "matmul/conv FLOPs per sample")]):
            ax = axes[i][j]
            if len(points):
                shown = points[points[x] > 0]  # a log axis cannot show zero cost; those settings are named below
                # the same colour and marker for a setting in both rows, whichever points a row can show
                sns.scatterplot(data=shown, x=x, y="value", hue="setting", style="family", ax=ax, s=60,
                                hue_order=list(points["setting"]), style_order=sorted(points["family"].unique()),
                                legend=(i == 1))
                front = pareto_front(shown.dropna(subset=[x]), x, "value")
                if len(front):
                    ax.step(front[x], front["value"], where="post", c="k", lw=0.8, label="Pareto front")
                if points["floor"].notna().any():
                    ax.axhline(points["floor"].mean(), ls="--", c="gray", lw=1, label="real-vs-real floor")
                ax.set_xscale("log")
                zero = sorted(points.loc[points[x] == 0, "setting"])
                if zero:
                    ax.text(0.01, 0.99, "0 at draw time, not shown: " + ", ".join(zero), transform=ax.transAxes,
                            fontsize=6, va="top")
                if i == 1:  # one legend per dataset, under its panels, so that it hides no point
                    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
            ax.set_xlabel(label)
            ax.set_ylabel(f"{metric} (lower is better)")
            ax.set_title(ds, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _run_dirs(suite_dir: Path, frame: pd.DataFrame, dataset: str, seed: int | None = None) -> list[tuple[str, Path]]:
    runs = frame[(frame.dataset == dataset) & (frame.run_status == "ok")].drop_duplicates("run_id")
    if seed is not None and (runs.seed == seed).any():
        runs = runs[runs.seed == seed]
    runs = runs.drop_duplicates("method").sort_values("method")
    return [(m, Path(suite_dir) / "runs" / r) for m, r in zip(runs.method, runs.run_id)]


def suite_sample_grids(suite_dir: Path, frame: pd.DataFrame) -> plt.Figure | None:
    """All methods' samples side by side, one row per dataset (first seed, every sampler)."""
    from ebmbench.builtins import load_dataset

    rows = []
    for ds in sorted(frame.dataset.dropna().unique()):
        panels = []
        for method, run_dir in _run_dirs(suite_dir, frame, ds, seed=0):
            if (run_dir / "samples.pt").exists():
                saved = torch.load(run_dir / "samples.pt", weights_only=True)
                panels += [(f"{method} / {k}", v) for k, v in saved.items()]
        if panels:
            rows.append((ds, panels))
    if not rows:
        return None
    width = max(len(p) for _, p in rows) + 1
    fig, axes = plt.subplots(len(rows), width, figsize=(2.6 * width, 2.8 * len(rows)), squeeze=False)
    for i, (ds, panels) in enumerate(rows):
        data = load_dataset(ds)
        _show(axes[i][0], data.test[:256], f"{ds}: test data", data.support)
        for j, (title, x) in enumerate(panels, start=1):
            _show(axes[i][j], x, title, data.support)
        for j in range(len(panels) + 1, width):
            axes[i][j].axis("off")
    fig.tight_layout()
    return fig


def suite_training_curves(suite_dir: Path, frame: pd.DataFrame) -> plt.Figure | None:
    """Training loss of every method (first seed), one panel per dataset."""
    datasets = sorted(frame.dataset.dropna().unique())
    if not datasets:
        return None
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for method, run_dir in _run_dirs(suite_dir, frame, ds, seed=0):
            path = run_dir / "curves.jsonl"
            if path.exists():
                recs = pd.DataFrame([json.loads(ln) for ln in path.read_text().splitlines() if ln])
                ax.plot(recs["step"], recs["loss"], label=method)
        ax.set_title(ds, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (method's own objective)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def suite_landscapes(suite_dir: Path, frame: pd.DataFrame) -> plt.Figure | None:
    """2D: each method's density (exp(-E) or p where declared, else a histogram of its samples) beside the truth."""
    from ebmbench.builtins import load_dataset
    from ebmbench.data.toy2d import DENSITIES

    rows = []
    for ds in sorted(frame.dataset.dropna().unique()):
        if ds not in DENSITIES:  # only the 2D densities have a landscape (and need no data files)
            continue
        data = load_dataset(ds)
        panels = [("true density", data.density.log_prob(grid_2d(data.support, 100)).view(100, 100).exp())]
        for method, run_dir in _run_dirs(suite_dir, frame, ds, seed=0):
            if (run_dir / "landscape.pt").exists():
                grid = torch.load(run_dir / "landscape.pt", weights_only=True)
                panels.append((f"{method}: exp(-E)", torch.exp(grid - grid.max())))
            elif (run_dir / "samples.pt").exists():
                x = next(iter(torch.load(run_dir / "samples.pt", weights_only=True).values()))
                hist = torch.histogramdd(x.float(), bins=[40, 40], range=[data.support.low, data.support.high] * 2)
                panels.append((f"{method}: sample histogram", hist.hist.T))
        rows.append((ds, data.support, panels))
    if not rows:
        return None
    width = max(len(p) for _, _, p in rows)
    fig, axes = plt.subplots(len(rows), width, figsize=(2.8 * width, 2.8 * len(rows)), squeeze=False)
    for i, (ds, box, panels) in enumerate(rows):
        for j in range(width):
            axes[i][j].axis("off")
        for j, (title, img) in enumerate(panels):
            axes[i][j].imshow(img.numpy(), origin="lower", extent=(box.low, box.high, box.low, box.high),
                              cmap="magma")
            axes[i][j].set_title(f"{ds}: {title}" if j == 0 else title, fontsize=8)
    fig.tight_layout()
    return fig


def quality_by_steps(table: pd.DataFrame, metric: str = "mmd2") -> plt.Figure | None:
    """DDPM / DDIM / DPM-Solver++ quality against their number of steps, one panel per dataset."""
    if table.empty:
        return None
    import seaborn as sns

    datasets = sorted(table.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sns.lineplot(data=table[table.dataset == ds], x="steps", y="value", hue="solver", marker="o", ax=ax)
        ax.set_xscale("log")
        ax.set_ylabel(f"{metric} (lower is better)")
        ax.set_title(ds, fontsize=10)
    fig.tight_layout()
    return fig
