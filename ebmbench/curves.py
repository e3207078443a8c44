"""Learning curves from the tidy rows: quality against training compute, and budgets where a curve flattens.

A run records its cheap sample metrics at every doubling of the training steps (rows with ``train_step``).
A family's budget is the first curve point that no later point (steps double between points) beats by more
than max(5 %, 2 standard errors) of the headline metric's excess over its floor (issue 11): past it, more
training buys less than the noise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

CURVE_HEADLINES = ("reverse_kl", "fid_domain")  # the first a dataset has is its curve's headline metric
# drawn beside a headline: a model metric of the same quantity, as a pseudo-sampler (the density itself)
COMPANIONS = {"reverse_kl": ("kl_model_data", "density (quadrature)")}
REL_GAIN, N_SE = 0.05, 2.0  # a doubling must gain more than max(REL_GAIN * excess, N_SE * SE of the gain)


def headline_metric(frame: pd.DataFrame, dataset: str) -> str | None:
    """The dataset's curve headline: reverse KL on 2D densities, FID on domain features for images."""
    have = set(frame.loc[(frame.dataset == dataset) & (frame.metric_status == "ok"), "metric"])
    return next((m for m in CURVE_HEADLINES if m in have), None)


def floor_of(meta: object) -> float:
    """A row's floor from its meta: a number, or a dict with its mean over seeds; NaN when absent."""
    floor = meta.get("floor") if isinstance(meta, dict) else None
    if isinstance(floor, dict):  # a floor given with its spread over seeds
        floor = floor.get("mean")
    return float(floor) if isinstance(floor, (int, float)) else math.nan


def curve_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x method x sampler x train_step, the headline metric over seeds: mean, standard error
    (the metric's own, combined with the spread over seeds when there are several), floor and excess over it,
    and the training compute (FLOPs, wall clock) to that step."""
    rows = []
    ok = curves[curves.metric_status == "ok"]
    for dataset in sorted(ok.dataset.unique()):
        metric = headline_metric(ok, dataset)
        if metric is None:
            continue
        d = ok[(ok.dataset == dataset) & (ok.metric == metric)]
        if metric in COMPANIONS:  # KL(q_theta||p) of the 2D density by quadrature: what a perfect sampler reaches
            name, label = COMPANIONS[metric]
            companion = ok[(ok.dataset == dataset) & (ok.metric == name)].assign(sampler=label)
            d = pd.concat([d, companion]) if len(companion) else d
        for (method, sampler, step), g in d.groupby(["method", "sampler", "train_step"]):
            values = g.value.to_numpy(float)
            own = np.nanmean(g.stderr.to_numpy(float) ** 2) / len(values) if g.stderr.notna().any() else 0.0
            seeds = np.var(values, ddof=1) / len(values) if len(values) > 1 else 0.0
            known = g.stderr.notna().any() or len(values) > 1  # FID of one seed: no standard error (NaN)
            floor = float(np.nanmean([floor_of(m) for m in g.meta])) if g.metric.iloc[0] == metric else 0.0
            rows.append({"dataset": dataset, "family": g.family.iloc[0], "method": method, "sampler": sampler,
                         "metric": metric, "train_step": int(step), "value": float(values.mean()),
                         "se": math.sqrt(own + seeds) if known else math.nan, "floor": floor,
                         "excess": float(values.mean()) - floor,
                         "seeds": len(values), "train_flops": g.train_flops.mean(),
                         "train_wall_s": g.train_wall_s.mean(), "threads": g.threads.iloc[0]})
    return pd.DataFrame(rows)


def flattening_step(steps: list[int], excess: list[float], se: list[float], rel: float = REL_GAIN,
                    n_se: float = N_SE) -> tuple[int, bool]:
    """The first curve point s (steps double between points) that no later point beats by more than
    max(rel * excess(s), n_se * SE of the difference); (last step, False) when only the last one qualifies.

    Every later point is compared, not only the next doubling: on one seed at N = 1000 a single doubling often
    gains about one standard error while the curve goes on falling (DDPM on eight_gaussians: 0.129, 0.088,
    0.084, 0.050 nats at 8k, 16k, 32k, 64k steps, each step inside 2 SE, the whole fall well outside them).
    An unknown standard error (NaN: a one-seed FID) leaves only the relative part of the rule.
    """
    def beaten(i: int, j: int) -> bool:
        noise = math.sqrt(sum(e**2 for e in (se[i], se[j]) if not math.isnan(e)))
        return excess[i] - excess[j] >= max(rel * abs(excess[i]), n_se * noise)

    for i in range(len(steps) - 1):
        if not any(beaten(i, j) for j in range(i + 1, len(steps))):
            return steps[i], True
    return steps[-1], False


def budgets(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x method: the budget from the curve of its best sampler (lowest final value), the curve's
    value there and at the end, and whether the curve flattened within the steps trained. A density's own
    curve (``COMPANIONS``) is drawn, never chosen: samples are what the headline metric judges."""
    rows = []
    companions = {label for _, label in COMPANIONS.values()}
    for (dataset, method), g in table[~table.sampler.isin(companions)].groupby(["dataset", "method"]):
        last = g[g.train_step == g.train_step.max()]
        best = last.sort_values("value").sampler.iloc[0]
        c = g[g.sampler == best].sort_values("train_step")
        step, flat = flattening_step(c.train_step.tolist(), c.excess.tolist(), c.se.tolist())
        at = c[c.train_step == step].iloc[0]
        rows.append({"dataset": dataset, "family": at.family, "method": method, "sampler": best,
                     "metric": at.metric, "budget_steps": step, "flattened": flat, "value_at_budget": at.value,
                     "se_at_budget": at.se, "floor": at.floor, "value_at_end": c.value.iloc[-1],
                     "steps_trained": int(c.train_step.max()), "train_flops_at_budget": at.train_flops,
                     "train_wall_s_at_budget": at.train_wall_s})
    return pd.DataFrame(rows)
