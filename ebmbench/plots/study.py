"""The study's figures (issue 15), drawn from ``ebmbench.study``'s tables: quality over trials, expected best
against the number of trials (Lucic et al. 2018), divergence rates with Wilson intervals, sensitivity to each
hyperparameter, and the trained EBMs under other samplers."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

FAMILY_ORDER = ("ebm", "score", "diffusion", "gan", "flow")


def _method_order(trials: pd.DataFrame) -> list[str]:
    fam = trials.drop_duplicates("method").set_index("method").family
    return sorted(fam.index, key=lambda m: (FAMILY_ORDER.index(fam[m]) if fam[m] in FAMILY_ORDER else 99, m))


def _palette(methods: list[str]) -> dict[str, tuple]:
    return dict(zip(methods, sns.color_palette("husl", len(methods))))


def _ecdf(ax, values: np.ndarray, **kw) -> None:
    """The empirical CDF of ``values`` over all of them (non-finite ones never reached), a marker per trial."""
    v = np.sort(values[np.isfinite(values)])
    if len(v):
        y = np.arange(1, len(v) + 1) / len(values)
        ax.step(np.r_[v[0], v], np.r_[0.0, y], where="post", **kw)
        ax.plot(v, y, "o", ms=3, color=kw.get("color"))


def quality_ecdf(trials: pd.DataFrame) -> plt.Figure | None:
    """Per method, the ECDF over trials of the final reverse KL and, where the model has a density, of KL(p||q);
    a diverged trial counts in the denominator but never reaches the curve (the curve tops out below 1)."""
    tried = trials[trials.role == "trial"]
    if tried.empty:
        return None
    methods = _method_order(tried)
    colours = _palette(methods)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    titles = ("reverse KL(q || p)", "forward KL(p || q) by quadrature")
    for ax, col, title in zip(axes, ("quality", "forward_kl"), titles):
        for m in methods:
            g = tried[tried.method == m]
            values = np.where(g.outcome.isin(["ok", "worse_than_untrained"]), g[col], np.inf).astype(float)
            if np.isfinite(g[col].astype(float)).any():
                _ecdf(ax, values, label=m, color=colours[m])
        untrained = trials[trials.role == "untrained"][col].astype(float)
        if np.isfinite(untrained).any():
            ax.axvline(np.nanmedian(untrained[np.isfinite(untrained)]), color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(f"{title} (nats; dotted: median untrained)")
        ax.set_title(title)
    axes[0].set_ylabel("fraction of trials at or below")
    axes[0].set_ylim(-0.02, 1.02)
    handles = [plt.Line2D([], [], color=colours[m], label=m) for m in methods]
    axes[1].legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def budget_plot(curves: pd.DataFrame, trials: pd.DataFrame | None = None) -> plt.Figure | None:
    """Expected best reverse KL against the number of trials k (exact, by order statistics), with the
    bootstrap's 95 % band; one line per method (Lucic et al. 2018, Fig. 4). With ``trials``, each method's
    default setting is marked at k = 0."""
    if curves.empty:
        return None
    methods = sorted(curves.method.unique())
    colours = _palette(methods)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for m in methods:
        g = curves[curves.method == m]
        finite = np.isfinite(g.expected_best)
        ax.plot(g.k[finite], g.expected_best[finite], "o-", ms=3, label=m, color=colours[m])
        band = np.isfinite(g.high)
        ax.fill_between(g.k[band], g.low[band], g.high[band], color=colours[m], alpha=0.12)
        default = trials[(trials.method == m) & (trials.role == "default")].quality if trials is not None else []
        if len(default) and np.isfinite(default.astype(float)).any():
            ax.plot([0], [float(default.astype(float).mean())], "x", color=colours[m], ms=7)
    if trials is not None:
        ax.set_xticks(range(0, int(curves.k.max()) + 1), ["default", *range(1, int(curves.k.max()) + 1)])
    ax.set_yscale("log")
    ax.set_xlabel("trials k (hyperparameter draws, equal training FLOPs each)")
    ax.set_ylabel("expected best reverse KL (nats)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def divergence_plot(table: pd.DataFrame, trials: pd.DataFrame) -> plt.Figure | None:
    """Left: divergence rate per method with its Wilson 95 % interval, stacked by kind. Right: where in training
    each diverged trial stopped (fraction of its planned steps; 1 = trained to the end, worse than untrained)."""
    if table.empty:
        return None
    table = table.sort_values("method")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.4, 1]})
    y = np.arange(len(table))
    left = np.zeros(len(table))
    for kind, colour in (("guard", "tab:red"), ("non_finite", "tab:purple"), ("worse_than_untrained", "tab:orange")):
        share = table[kind].to_numpy() / table.trials.clip(lower=1).to_numpy()
        ax.barh(y, share, left=left, color=colour, alpha=0.6, label=kind)
        left += share
    ax.errorbar(table.rate, y, xerr=[table.rate - table.wilson_low, table.wilson_high - table.rate], fmt="k|",
                capsize=3, label="Wilson 95 %")
    ax.set_yticks(y, [f"{m} ({n})" for m, n in zip(table.method, table.trials)])
    ax.set_xlim(0, 1)
    ax.set_xlabel("diverged / trials")
    ax.legend(fontsize=7, loc="lower right")
    div = trials[trials.diverged_at.notna()]
    where = {m: i for i, m in enumerate(table.method)}
    rng = np.random.default_rng(0)
    bx.scatter(div.diverged_at, [where[m] + rng.uniform(-0.2, 0.2) for m in div.method],
               c=[{"guard": "tab:red", "non_finite": "tab:purple"}.get(o, "tab:orange") for o in div.outcome], s=14)
    bx.set_yticks(y, table.method)
    bx.set_ylim(-0.5, len(table) - 0.5)
    bx.set_xlim(-0.02, 1.05)
    bx.set_xlabel("fraction of planned training steps done when it diverged")
    fig.tight_layout()
    return fig


def _smooth(x: np.ndarray, y: np.ndarray, log_x: bool, n: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """A running median of log10 y over the nearest third of the points in x: the smoother of the scatter."""
    xs = np.log10(x) if log_x else x
    order = np.argsort(xs)
    xs, ly = xs[order], np.log10(y[order])
    half = max(1, len(xs) // 6)
    grid = np.linspace(xs.min(), xs.max(), n)
    med = [np.median(ly[max(0, i - half): i + half + 1]) for i in np.searchsorted(xs, grid).clip(0, len(xs) - 1)]
    return (10**grid if log_x else grid), 10 ** np.asarray(med)


def sensitivity_plot(long: pd.DataFrame, method: str) -> plt.Figure | None:
    """Final reverse KL of every trial of ``method`` against each drawn hyperparameter, with a running median;
    diverged trials drawn as crosses at the top edge."""
    g = long[long.method == method]
    if g.empty:
        return None
    params = sorted(g.parameter.unique())
    fig, axes = plt.subplots(1, len(params), figsize=(2.4 * len(params), 2.6), sharey=True, squeeze=False)
    ok = g.outcome.isin(["ok", "worse_than_untrained"]) & np.isfinite(g.quality.astype(float))
    top = float(g.quality[ok].max()) * 2 if ok.any() else 1.0
    for ax, p in zip(axes[0], params):
        h = g[g.parameter == p]
        good = h[ok.loc[h.index]]
        numeric = pd.api.types.is_numeric_dtype(h.value.infer_objects()) and not h.value.map(type).eq(bool).any()
        x = good.value.astype(float) if numeric else good.value.astype(str)
        ax.scatter(x, good.quality, s=12, color="tab:blue")
        bad = h[~ok.loc[h.index]]
        if len(bad):
            ax.scatter(bad.value.astype(float) if numeric else bad.value.astype(str), [top] * len(bad), marker="x",
                       color="tab:red", s=16)
        if numeric:
            scale = h.scale.iloc[0] if "scale" in h else None
            log_x = scale in ("log", "int_log")
            if log_x:
                ax.set_xscale("log")
            if "low" in h and h.low.notna().any():  # the whole searched range, so a reader sees where draws fell
                ax.set_xlim(float(h.low.iloc[0]) * (0.9 if log_x else 1), float(h.high.iloc[0]) * (1.1 if log_x else 1))
            if len(good) >= 4:
                sx, sy = _smooth(good.value.astype(float).to_numpy(), good.quality.to_numpy(float), log_x)
                ax.plot(sx, sy, color="k", lw=1)
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow log range labels its minor ticks on top of each other
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(p, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel(f"{method}\nreverse KL", fontsize=8)
    fig.tight_layout()
    return fig


def sweep_plot(sweep: pd.DataFrame) -> plt.Figure | None:
    """Reverse KL of each method's best trained EBM against counted gradient evaluations per sample, for ULA at
    each step size, MALA and HMC at matched gradient evaluations."""
    ok = sweep[sweep.status == "ok"] if len(sweep) else sweep
    if ok.empty:
        return None
    methods = sorted(ok.method.unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(3.1 * len(methods), 3.2), sharey=True, squeeze=False)
    styles = {"langevin": "o-", "mala": "s--", "hmc": "^:"}
    colours = dict(zip(sorted(ok.eps.unique()), sns.color_palette("viridis", ok.eps.nunique())))
    for ax, m in zip(axes[0], methods):
        for (sampler, eps), h in ok[ok.method == m].groupby(["sampler", "eps"]):
            h = h.sort_values("grad_evals")
            ax.plot(h.grad_evals, h.reverse_kl, styles.get(sampler, "o-"), color=colours[eps], ms=4,
                    label=f"{sampler} eps={eps:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted(ok[ok.sampler == "langevin"].grad_evals.round().unique())  # MALA, HMC: +1 each
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("gradient evaluations / sample")
    axes[0][0].set_ylabel("reverse KL (nats)")
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def sensitivity_plots(long: pd.DataFrame) -> list[plt.Figure]:
    """One sensitivity figure per method, in the study's method order."""
    figs = [sensitivity_plot(long, m) for m in sorted(long.method.unique())] if len(long) else []
    return [f for f in figs if f is not None]


def show(fig: plt.Figure | None, name: str, suite_dir, missing: str) -> None:
    """Display ``fig`` once (saved as ``figures/study_<name>.png`` beside the report), or say why there is none."""
    from pathlib import Path

    from IPython.display import display

    if fig is None:
        print(missing)
        return
    out = Path(suite_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"study_{name}.png", dpi=110, bbox_inches="tight")
    display(fig)
    plt.close(fig)


def show_each(figs: list[plt.Figure], name: str, suite_dir, missing: str) -> None:
    """``show`` every figure of a list (saved as ``study_<name>_<i>.png``), or say why there is none."""
    if not figs:
        print(missing)
    for i, fig in enumerate(figs):
        show(fig, f"{name}_{i}", suite_dir, missing)
