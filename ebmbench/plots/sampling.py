"""The samplers suite's figure: log Z error against gradient evaluations per particle, per target and method, with the
published points (results/published/sampling_results.csv) on it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

STYLE = {"ais": "--", "smc": "-"}
COLOR = {"ula": "tab:orange", "mala": "tab:green", "hmc": "tab:blue"}
AFT_LEAPFROG = 10


def log_z_error_vs_cost(summary: pd.DataFrame, table: pd.DataFrame, path: str | None = None):
    """Median log Z error (IQR bars) over replicates against gradient evaluations per particle, one panel per target.

    Published: DDS's SMC on the funnel at K x 10 evaluations (AFT's one HMC step of 10 leapfrog steps, an assumption:
    DDS states no settings), hollow; FAB's mean absolute error (fab-jax README, cost not stated) as a dotted line."""
    targets = sorted(set(summary.dataset) | {"funnel"}) if len(summary) else ["funnel", "gmm40", "many_well"]
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.6), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        rows = summary[summary.dataset == target] if len(summary) else summary
        for (method, kernel, particles), g in rows.groupby(["method", "kernel", "particles"]) if len(rows) else []:
            g = g.sort_values("grad_evals")
            ax.errorbar(g.grad_evals, g["median"], yerr=[g["median"] - g.q25, g.q75 - g["median"]],
                        ls=STYLE.get(method, "-"), color=COLOR.get(kernel), marker="o", ms=3, capsize=2,
                        label=f"{method} {kernel} (N={particles})")
        pub = table[(table.target == target) & (table.metric == "log_z_error") & (table.method == "smc")]
        if len(pub):
            ax.errorbar(pub.K.astype(float) * AFT_LEAPFROG, pub["median"], yerr=[pub["median"] - pub.q25,
                        pub.q75 - pub["median"]], ls="none", marker="s", mfc="none", color="k", capsize=2,
                        label="DDS paper: SMC (K x 10 assumed)")
        fab = table[(table.target == target) & (table.metric == "abs_log_z_error")]
        for _, r in fab.iterrows():
            ax.axhline(-float(r["mean"]), color="purple", ls=":", label="FAB |error| (fab-jax, cost n/a), as -")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(target, fontsize=10)
        ax.set_xlabel("gradient evaluations per particle")
        ax.set_ylabel("log Z_hat - log Z")
        ax.legend(fontsize=6)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
    return fig
