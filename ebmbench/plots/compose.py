"""Figures of the composition benchmark (ebmbench/compose.py): the exact target beside each sampler's samples, and
quality against counted cost. They read a composition in memory or the files its run wrote (target.pt, samples.pt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import Tensor

from ebmbench.serialization import load_tensors

DOTS = {"s": 1.5, "alpha": 0.35, "color": "white", "linewidths": 0}


def _panel(ax: Any, grid: Tensor, box: tuple[float, float], x: Tensor | None, title: str) -> None:
    """The exact log-density (clipped 12 nats below its max) with samples on top."""
    g = grid.clamp_min(float(grid.max()) - 12.0)
    ax.imshow(g.numpy(), origin="lower", extent=(*box, *box), cmap="magma", interpolation="nearest")
    if x is not None:
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), **DOTS)
    ax.set(xlim=box, ylim=box, xticks=[], yticks=[])
    ax.set_title(title, fontsize=8)


def target_vs_samples(c: Any, n: int = 200) -> plt.Figure:
    """One composition run: the exact composed target, then each sampler's samples over it; saved as samples.png."""
    box = (float(c.target.box.low), float(c.target.box.high))
    ticks = torch.linspace(box[0], box[1], n, dtype=torch.float64)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="xy")
    grid = c.target.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).float().view(n, n)
    names = list(c.samples)
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(2.2 * (1 + len(names)), 2.4), squeeze=False)
    _panel(axes[0, 0], grid, box, None, f"exact {c.cfg.dataset}")
    for ax, name in zip(axes[0, 1:], names, strict=True):
        s = c.samples[name]
        _panel(ax, grid, box, s.x.detach().float().cpu(), f"{c.cfg.method}: {name}\nNFE {s.cost.nfe:.0f}")
    fig.tight_layout()
    fig.savefig(Path(c.run_dir) / "samples.png", dpi=110)
    return fig


def suite_grid(suite_dir: Path | str, frame: pd.DataFrame, seed: int = 0, max_points: int = 1000) -> plt.Figure:
    """Every composed target (rows) with every method and sampler's samples of one seed (columns)."""
    runs = frame[(frame.seed == seed) & (frame.metric == "reverse_kl") & (frame.metric_status == "ok")]
    targets = sorted(runs.dataset.unique())
    columns = sorted({(m, s) for m, s in zip(runs.method, runs.sampler, strict=True)})
    fig, axes = plt.subplots(len(targets), 1 + len(columns), figsize=(1.7 * (1 + len(columns)), 1.9 * len(targets)),
                             squeeze=False)
    for i, dataset in enumerate(targets):
        rows = runs[runs.dataset == dataset]
        grid = load_tensors(Path(suite_dir) / "compositions" / rows.run_id.iloc[0] / "target.pt")
        box = _box(rows)
        _panel(axes[i, 0], grid, box, None, f"exact\n{dataset}")
        for j, (method, sampler) in enumerate(columns, start=1):
            hit = rows[(rows.method == method) & (rows.sampler == sampler)]
            if not len(hit):
                axes[i, j].axis("off")
                continue
            x = load_tensors(Path(suite_dir) / "compositions" / hit.run_id.iloc[0] / "samples.pt")[sampler][:max_points]
            _panel(axes[i, j], grid, box, x, f"{method}\n{sampler}: KL {hit.value.iloc[0]:.2f}")
    fig.tight_layout()
    return fig


def _box(rows: pd.DataFrame) -> tuple[float, float]:
    """The box every composed 2D target of this benchmark lives on ([-3, 3]^2 for the datasets composed here)."""
    from ebmbench.data.toy2d import get_density

    name = rows.dataset.iloc[0].replace("+", "*").split("*")[0]
    box = get_density(name).box
    return float(box.low), float(box.high)


def quality_vs_cost(table: pd.DataFrame, metric: str = "reverse_kl") -> plt.Figure:
    """Mean quality over seeds [95 % interval] against network evaluations per sample, one panel per target."""
    rows = table[table.metric == metric]
    targets = sorted(rows.dataset.unique())
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.4), squeeze=False)
    markers = dict(zip(sorted(rows.method.unique()), "osD^v", strict=False))
    for ax, dataset in zip(axes[0], targets, strict=True):
        for r in rows[rows.dataset == dataset].itertuples():
            err = [[r.mean - r.low], [r.high - r.mean]]
            ax.errorbar(r.net_calls, r.mean, yerr=err, marker=markers[r.method], ls="none", capsize=2,
                        label=f"{r.method}: {r.sampler}")
            ax.annotate(r.sampler, (r.net_calls, r.mean), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.axhline(rows[rows.dataset == dataset].floor.mean(), color="grey", lw=0.8, ls=":", label="exact samples")
        ax.set(xscale="log", title=dataset, xlabel="network evaluations per sample (both components)",
               ylabel=f"{metric} (nats)" if metric == "reverse_kl" else metric)
        ax.set_yscale("symlog", linthresh=0.1)  # KLs from the floor (~0.04) to tens of nats; the estimator can dip < 0
    axes[0, -1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig
