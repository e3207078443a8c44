"""Figures of a suite, drawn from its results table and the files its runs saved (samples.pt, landscape.pt,
curves.jsonl): the report imports this module only, never the run machinery.

Pictures branch on the data's shape (2D points or images) and on declared capabilities, never on model family.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt  # no backend forced: notebooks draw inline, headless savers choose Agg
import pandas as pd
import torch
from matplotlib.lines import Line2D

from ebmbench.curves import floor_of
from ebmbench.data.registry import load_dataset
from ebmbench.plots.common import grid_2d, show_samples
from ebmbench.serialization import load_tensors


def training_curves(run_dir: Path, keys: tuple[str, ...] = ("loss",)) -> plt.Figure | None:
    """Curves recorded in curves.jsonl against the step; a run with no curve rows (it diverged or stopped before
    its first ``log_every``) gets a line saying so instead of a figure."""
    path = Path(run_dir) / "curves.jsonl"
    recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln] if path.exists() else []
    if not recs:
        print(f"no training curve: {path.name} has no rows (the run stopped before its first log_every step; "
              "its result says why)")
        return None
    frame = pd.DataFrame(recs)
    keys = tuple(k for k in keys if k in frame) or ("loss",)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        ax.plot(frame["step"], frame[k])
        ax.set_xlabel("step")
        ax.set_title(k, fontsize=9)
    fig.tight_layout()
    return fig


# --- the suite report's figures: one style for the whole report --------------------------------------------------
#
# Families keep one colour (Okabe-Ito, colour-blind safe; methods of one family in shades of it) and samplers one
# marker (budget variants of a sampler, e.g. langevin@100 and langevin@1000: filled, then hollow, ...) in every
# figure. Figures are drawn at most REPORT_WIDTH_IN wide with type of at least 9 pt, and the report shows them at
# their natural size (96 px per inch), so the type stays at least 9 pt on the page; legends sit beside the panels.

REPORT_WIDTH_IN = 11.5  # about 1100 px at 96 px per inch: the report's content width at a 1400 px window
REPORT_RC = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9,
             "ytick.labelsize": 9, "legend.fontsize": 9, "legend.title_fontsize": 9, "figure.titlesize": 11,
             "axes.spines.top": False, "axes.spines.right": False}
FAMILY_COLOURS = {"ebm": "#0072B2", "diffusion": "#D55E00", "score": "#009E73", "gan": "#CC79A7", "flow": "#E69F00",
                  "rbm": "#56B4E9"}
EXTRA_COLOURS = ("#000000", "#8C564B", "#999999", "#F0E442")  # families not listed above, in name order
SAMPLER_MARKERS = {"ddpm": "o", "ddim": "s", "dpm_solver": "D", "annealed_langevin": "^", "langevin": "v",
                   "mala": "P", "hmc": "X", "replay_buffer": "p", "generator": "h", "gibbs": "8"}
EXTRA_MARKERS = ("<", ">", "d", "H", "1", "2", "3", "4")  # never "*": stars mark budgets
FILLS = ("full", "none", "left", "bottom")  # budget variants of one sampler
COMPANION_SAMPLERS = ("density (quadrature)",)  # pseudo-samplers of the curve table (the density itself)


def _shade(colour: str, i: int, n: int) -> str:
    """The i-th of n shades of a colour (0: the colour itself, later ones lighter)."""
    from matplotlib.colors import to_hex, to_rgb

    if n <= 1 or i == 0:
        return colour
    t = 0.55 * i / (n - 1)
    return to_hex(tuple(c + (1 - c) * t for c in to_rgb(colour)))


def _budget(sampler: str) -> float:
    tail = sampler.partition("@")[2]
    try:
        return float(tail)
    except ValueError:
        return float("inf")


class Styles:
    """Colour of each method (its family's), marker and fill of each sampler, for every figure of a report."""

    def __init__(self, frame: pd.DataFrame) -> None:
        pairs = frame[["family", "method"]].dropna().drop_duplicates() if len(frame) else pd.DataFrame()
        self.family = dict(zip(pairs.get("method", []), pairs.get("family", [])))
        families = sorted(set(self.family.values()))
        extra = iter(EXTRA_COLOURS * 4)
        base = {f: FAMILY_COLOURS.get(f) or next(extra) for f in families}
        self.colour = {}
        for f in families:
            methods = sorted(m for m, g in self.family.items() if g == f)
            for i, m in enumerate(methods):
                self.colour[m] = _shade(base[f], i, len(methods))
        samplers = sorted({s for s in frame.get("sampler", pd.Series(dtype=object)).dropna().unique()
                           if s not in COMPANION_SAMPLERS})
        bases = sorted({s.partition("@")[0] for s in samplers})
        extra_m = iter(EXTRA_MARKERS * 4)
        self.base_marker = {b: SAMPLER_MARKERS.get(b) or next(extra_m) for b in bases}
        self.fill = {}
        for b in bases:
            variants = sorted((s for s in samplers if s.partition("@")[0] == b), key=lambda s: (_budget(s), s))
            for i, s in enumerate(variants):
                self.fill[s] = FILLS[i % len(FILLS)]

    def method_colour(self, method: str) -> str:
        return self.colour.get(method, "#444444")

    def marker(self, sampler: str | None) -> str:
        if sampler is None or sampler in COMPANION_SAMPLERS:
            return ""
        return self.base_marker.get(str(sampler).partition("@")[0], "o")

    def kw(self, method: str, sampler: str | None, size: float = 7) -> dict:
        """Keyword arguments of ``ax.plot`` for a method / sampler point or line."""
        colour, marker = self.method_colour(method), self.marker(sampler)
        fill = self.fill.get(sampler, "full")
        return {"color": colour, "marker": marker, "ms": size, "fillstyle": fill, "mec": colour,
                "mfc": "white" if fill == "none" else colour, "mfcalt": "white"}


def report_style():
    """The report's type sizes (>= 9 pt) as a matplotlib rc context."""
    return plt.rc_context(REPORT_RC)


def _legend_beside(ax, source=None, extra: tuple = (), **kw) -> None:
    """A legend to the right of ``ax``, of the artists of ``source`` (default: ``ax``) and ``extra`` (handle,
    label) pairs that are drawn nowhere else."""
    handles, labels = (source or ax).get_legend_handles_labels()
    handles, labels = handles + [h for h, _ in extra], labels + [t for _, t in extra]
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0, frameon=False,
                  handlelength=2.2, **kw)


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
    """Per family / method / sampler of a dataset: the headline metric's seed mean and 95 % interval, its cost."""
    from ebmbench.leaderboard import headline_metric, seed_interval

    rows = frame[(frame.dataset == dataset) & (frame.metric_status == "ok")]
    metric = headline_metric(frame, dataset) or next(
        (m for m in QUALITY_PREFERENCE if (rows.metric == m).any()), QUALITY_PREFERENCE[-1])
    rows = rows[rows.metric == metric].copy()
    rows["nfe_cost"] = [max(m.get("amortized_nfe", n) if isinstance(m, dict) else n, 1)
                        for m, n in zip(rows["meta"], rows["nfe"])]
    rows["floor"] = [floor_of(m) for m in rows["meta"]]
    points = rows.groupby(["family", "method", "sampler"], as_index=False).agg(
        value=("value", "mean"), nfe_cost=("nfe_cost", "mean"), flops=("flops_per_sample", "mean"),
        floor=("floor", "mean"), seeds=("seed", "nunique"), n=("n_samples", "median"))
    bounds = [seed_interval(g.value.to_numpy(float))[:2] for _, g in rows.groupby(["family", "method", "sampler"])]
    points["low"] = [b[0] for b in bounds]
    points["high"] = [b[1] for b in bounds]
    points["setting"] = points["method"] + " / " + points["sampler"]
    return points.sort_values("value", ignore_index=True), metric


def _log_if_spread(ax, values: pd.Series, ratio: float = 10.0) -> None:
    v = values[values > 0].dropna()
    if len(v) and len(v) == len(values.dropna()) and v.max() / v.min() >= ratio:
        ax.set_yscale("log")


def quality_vs_training_compute(table: pd.DataFrame, budgets: pd.DataFrame | None = None) -> plt.Figure | None:
    """Learning curves: each dataset's headline metric against counted training FLOPs, one row per dataset, one
    line per method / sampler (band: +-1 standard error over seeds and samples), the floor dotted, budgets
    starred, the legend beside the panel."""
    if table.empty:
        return None
    styles = Styles(table)
    datasets = sorted(table.dataset.unique())
    with report_style():
        fig, axes = plt.subplots(len(datasets), 1, figsize=(9.0, 3.3 * len(datasets)), squeeze=False)
        for ax, ds in zip(axes[:, 0], datasets):
            d = table[table.dataset == ds]
            order = d.groupby(["method", "sampler"]).value.last().sort_values().index  # legend: best last value first
            for method, sampler in order:
                c = d[(d.method == method) & (d.sampler == sampler)].sort_values("train_step")
                x = c.train_flops if c.train_flops.notna().all() else c.train_step
                kw = styles.kw(method, sampler, size=5)
                companion = sampler in COMPANION_SAMPLERS
                ax.plot(x, c.value, ":" if companion else "-", lw=1.2, label=f"{method} / {sampler}", **kw)
                ax.fill_between(x, c.value - c.se, c.value + c.se, color=kw["color"], alpha=0.12, lw=0)
                if budgets is not None and not companion:
                    b = budgets[(budgets.dataset == ds) & (budgets.method == method) & (budgets.sampler == sampler)]
                    for _, row in b.iterrows():
                        at = c[c.train_step == row.budget_steps]
                        ax.plot(x[at.index], at.value, "*", ms=13, c=kw["color"], mec="k", mew=0.8)
            if d.floor.notna().any() and (d.floor > 0).any():
                ax.axhline(d.floor[d.floor > 0].mean(), ls="--", c="gray", lw=1, label="floor")
            ax.set_xscale("log")
            ax.set_yscale("log" if (d.value > 0).all() else "linear")
            ax.set_xlabel("counted training FLOPs" if d.train_flops.notna().all() else "training steps")
            ax.set_ylabel(f"{d.metric.iloc[0]} (lower is better)")
            ax.set_title(ds, loc="left", fontweight="bold")
            star = Line2D([], [], ls="none", marker="*", ms=11, c="white", mec="k")
            _legend_beside(ax, extra=((star, "budget (the curve flattens)"),) if budgets is not None else ())
        fig.tight_layout()
    return fig


def quality_vs_cost(frame: pd.DataFrame, path: Path | None = None) -> plt.Figure:
    """Headline: sample quality against sampling cost, one row per dataset (NFE per sample, FLOPs per sample),
    every family; seed means with their 95 % interval, the Pareto front, the floor; the legend beside the row."""
    styles = Styles(frame)
    datasets = sorted(frame.dataset.dropna().unique()) or ["(no rows)"]
    with report_style():
        fig, axes = plt.subplots(len(datasets), 2, figsize=(11.0, 3.3 * len(datasets)), squeeze=False,
                                 sharey="row")
        for i, ds in enumerate(datasets):
            points, metric = _headline_points(frame, ds)
            for j, (x, label) in enumerate([("nfe_cost", "NFE per sample"), ("flops", "FLOPs per sample")]):
                ax = axes[i][j]
                if len(points):
                    shown = points[points[x] > 0]  # a log axis cannot show zero cost; those settings are named
                    for _, p in shown.iterrows():
                        kw = styles.kw(p.method, p.sampler)
                        ax.errorbar(p[x], p.value, yerr=[[max(p.value - p.low, 0)], [max(p.high - p.value, 0)]],
                                    fmt="none", ecolor=kw["color"], elinewidth=1, capsize=2, alpha=0.8)
                        ax.plot(p[x], p.value, ls="none", label=p.setting, **kw)
                    front = pareto_front(shown.dropna(subset=[x]), x, "value")
                    if len(front):
                        ax.step(front[x], front["value"], where="post", c="k", lw=0.8, label="Pareto front")
                    if points["floor"].notna().any():
                        ax.axhline(points["floor"].mean(), ls="--", c="gray", lw=1, label="floor")
                    ax.set_xscale("log")
                    zero = sorted(points.loc[points[x] == 0, "setting"])
                    if zero:  # named under the axis, where no point can hide it
                        label += "\n0 at draw time, not shown: " + ", ".join(zero)
                    if j == 0:
                        _log_if_spread(ax, pd.concat([points.value, points.floor]))
                ax.set_xlabel(label)
                if j == 0:
                    ax.set_ylabel(f"{metric} (lower is better)")
                    ax.set_title(ds, loc="left", fontweight="bold")
            if len(points):  # the NFE panel shows every setting (the buffer at its amortized NFE)
                _legend_beside(axes[i][1], source=axes[i][0])
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


PANELS_PER_ROW = 6  # picture grids wrap here: 6 panels of 1.85 in fit the report's width


def _panel_grid(rows: list[tuple[str, list]], panel_in: float = 1.85):
    """A figure of picture panels, each dataset starting a new row and wrapping after PANELS_PER_ROW; returns
    the figure and, per dataset, its axes in reading order (surplus axes switched off)."""
    layout = [(ds, panels, -(-len(panels) // PANELS_PER_ROW)) for ds, panels in rows]
    n_rows = sum(k for _, _, k in layout)
    width = min(PANELS_PER_ROW, max(len(p) for _, p, _ in layout))
    fig, axes = plt.subplots(n_rows, width, figsize=(panel_in * width, (panel_in + 0.45) * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    out, r = [], 0
    for ds, panels, k in layout:
        out.append((ds, panels, [axes[r + i // width][i % width] for i in range(len(panels))]))
        r += k
    return fig, out


def suite_sample_grids(suite_dir: Path, frame: pd.DataFrame) -> plt.Figure | None:
    """All methods' samples beside the test data, one block of rows per dataset (first seed, every sampler)."""

    rows = []
    for ds in sorted(frame.dataset.dropna().unique()):
        panels = []
        for method, run_dir in _run_dirs(suite_dir, frame, ds, seed=0):
            if (run_dir / "samples.pt").exists():
                saved = load_tensors(run_dir / "samples.pt")
                panels += [(f"{method} /\n{k}", v) for k, v in saved.items()]
        if panels:
            data = load_dataset(ds)
            rows.append((ds, [(f"{ds}\ntest data", data.test[:256])] + panels))
    if not rows:
        return None
    with report_style():
        fig, blocks = _panel_grid(rows)
        for ds, panels, axes in blocks:
            support = load_dataset(ds).support
            for ax, (title, x) in zip(axes, panels):
                ax.axis("on")  # a frame around 2D points shows the support box; image grids switch it off
                show_samples(ax, x, title, support)
                ax.title.set_fontsize(9)
                ax.set_xticks([])
                ax.set_yticks([])
        fig.tight_layout()
    return fig


def suite_training_curves(suite_dir: Path, frame: pd.DataFrame) -> plt.Figure | None:
    """Training loss of every method (first seed), one row per dataset and one panel per method (each objective
    on its own scale), in the method's colour."""
    rows = []
    for ds in sorted(frame.dataset.dropna().unique()):
        panels = []
        for method, run_dir in _run_dirs(suite_dir, frame, ds, seed=0):
            path = run_dir / "curves.jsonl"
            if path.exists():
                recs = pd.DataFrame([json.loads(ln) for ln in path.read_text().splitlines() if ln])
                if {"step", "loss"} <= set(recs):
                    panels.append((method, recs))
        if panels:
            rows.append((ds, panels))
    if not rows:
        return None
    styles = Styles(frame)
    with report_style():
        fig, blocks = _panel_grid(rows)
        for ds, panels, axes in blocks:
            for k, (ax, (method, recs)) in enumerate(zip(axes, panels)):
                ax.axis("on")
                ax.plot(recs["step"], recs["loss"], lw=1, color=styles.method_colour(method))
                ax.set_title(f"{ds}\n{method}" if k == 0 else f"\n{method}", fontsize=9, loc="left")
                ax.set_xlabel("step")
                ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
                if k % PANELS_PER_ROW == 0:
                    ax.set_ylabel("training loss")
        fig.tight_layout()
    return fig


def suite_landscapes(suite_dir: Path, frame: pd.DataFrame) -> plt.Figure | None:
    """2D: each method's density (exp(-E) or p where declared, else a histogram of its samples) beside the truth."""
    from ebmbench.data.toy2d import DENSITIES

    rows = []
    for ds in sorted(frame.dataset.dropna().unique()):
        if ds not in DENSITIES:  # only the 2D densities have a landscape (and need no data files)
            continue
        data = load_dataset(ds)
        panels = [(f"{ds}\ntrue density", data.density.log_prob(grid_2d(data.support, 100)).view(100, 100).exp(),
                   data.support)]
        for method, run_dir in _run_dirs(suite_dir, frame, ds, seed=0):
            if (run_dir / "landscape.pt").exists():
                grid = load_tensors(run_dir / "landscape.pt")
                panels.append((f"{method}\nexp(-E)", torch.exp(grid - grid.max()), data.support))
            elif (run_dir / "samples.pt").exists():
                x = next(iter(load_tensors(run_dir / "samples.pt").values()))
                hist = torch.histogramdd(x.float(), bins=[40, 40], range=[data.support.low, data.support.high] * 2)
                panels.append((f"{method}\nsample histogram", hist.hist.T, data.support))
        rows.append((ds, panels))
    if not rows:
        return None
    with report_style():
        fig, blocks = _panel_grid(rows)
        for _, panels, axes in blocks:
            for ax, (title, img, box) in zip(axes, panels):
                ax.imshow(img.numpy(), origin="lower", extent=(box.low, box.high, box.low, box.high), cmap="magma")
                ax.set_title(title, fontsize=9)
        fig.tight_layout()
    return fig


def quality_by_steps(table: pd.DataFrame, metric: str = "mmd2") -> plt.Figure | None:
    """DDPM / DDIM / DPM-Solver++ quality against their number of steps, one row per dataset, legend beside."""
    if table.empty:
        return None
    import seaborn as sns

    datasets = sorted(table.dataset.unique())
    with report_style():
        fig, axes = plt.subplots(len(datasets), 1, figsize=(7.5, 3.0 * len(datasets)), squeeze=False)
        for ax, ds in zip(axes[:, 0], datasets):
            sns.lineplot(data=table[table.dataset == ds], x="steps", y="value", hue="solver", marker="o", ax=ax)
            ax.set_xscale("log")
            ax.set_ylabel(f"{metric} (lower is better)")
            ax.set_title(ds, loc="left", fontweight="bold")
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            _legend_beside(ax)
        fig.tight_layout()
    return fig


def estimator_error_vs_cost(errors: pd.DataFrame) -> plt.Figure | None:
    """Each likelihood estimate's |error| against the exact value of the same model, against its wall clock:
    one marker per estimator, one colour per family; legend beside the panel."""
    if errors.empty or errors.wall_s.dropna().empty:
        return None
    markers = dict(zip(sorted(errors.estimator.unique()), "osD^vPXph"))
    with report_style():
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        for (method, est), g in errors.groupby(["method", "estimator"]):
            ax.plot(g.wall_s, g.error.abs(), ls="none", marker=markers[est], ms=7, label=f"{method}: {est}",
                    color=FAMILY_COLOURS.get(g["family"].iloc[0] if "family" in g else None, "#444444"))
        ax.set_xscale("log")
        ax.set_yscale("log" if (errors.error.abs() > 0).all() else "linear")
        ax.set_xlabel("wall clock of the estimate (s)")
        ax.set_ylabel("|estimate - exact| (nats, lower is better)")
        _legend_beside(ax)
        fig.tight_layout()
    return fig
