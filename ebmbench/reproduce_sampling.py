"""Published sampler and flow numbers on analytic targets (results/published/sampling_results.csv) beside the
samplers suite's measured rows, with a verdict from the numbers.

Verdicts: ``reproduced`` when the measured and published intervals overlap (the interquartile range over seeds, or
the range when there are 5 seeds or fewer); ``differs`` with the gap between the intervals and between the medians
otherwise; ``not comparable`` with the reason when the method is not measured here or the protocol differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ebmbench.results import load_results
from ebmbench.sampling import load_sampling

PUBLISHED = Path(__file__).resolve().parent.parent / "results" / "published" / "sampling_results.csv"
AFT_LEAPFROG = 10  # Arbel et al. 2021's funnel: one HMC step of 10 leapfrog steps per temperature


def published(path: Path | None = None) -> pd.DataFrame:
    return pd.read_csv(path or PUBLISHED)


def interval(values: pd.Series) -> tuple[float, float, str]:
    """(low, high, kind): the IQR over more than 5 seeds, else the range."""
    if len(values) > 5:
        return float(values.quantile(0.25)), float(values.quantile(0.75)), "IQR"
    return float(values.min()), float(values.max()), "range"


def published_interval(row: pd.Series) -> tuple[float, float, str]:
    if row["n"] > 5:
        return float(row["q25"]), float(row["q75"]), "IQR"
    values = [float(v) for v in str(row["values"]).split(";")]
    return min(values), max(values), "range"


def verdict(ours: tuple[float, float], theirs: tuple[float, float], median_gap: float) -> str:
    if ours[0] <= theirs[1] and theirs[0] <= ours[1]:
        return "reproduced (intervals overlap)"
    gap = ours[0] - theirs[1] if ours[0] > theirs[1] else theirs[0] - ours[1]
    return f"differs: intervals {gap:.3g} apart, medians by {median_gap:+.3g}"


def _measured_funnel(sampling: pd.DataFrame, k: int) -> pd.DataFrame:
    rows = sampling[(sampling.dataset == "funnel") & (sampling.method == "smc") & (sampling.kernel == "hmc")
                    & (sampling.K == k) & (sampling.metric == "log_z_error") & (sampling.metric_status == "ok")]
    if rows.empty:
        return rows
    return rows[rows.particles == rows.particles.max()]


def _flow_rows(frame: pd.DataFrame, metric: str) -> pd.Series:
    rows = frame[(frame.method == "realnvp") & (frame.dataset == "gmm40") & (frame.metric == metric)
                 & (frame.metric_status == "ok")]
    values = rows.groupby("seed")["value"].mean()
    return -values if metric == "nll_exact" else values


def _row(p: pd.Series, measured: pd.Series | None, cost: Any, why: str = "", **extra: Any) -> dict[str, Any]:
    out = {"target": p["target"], "method": p["method"], "K": p["K"], "metric": p["metric"],
           "published_mean": p["mean"], "published_median": p["median"], "published_n": p["n"],
           "source": f"{p['source_repo']}@{str(p['source_commit'])[:7]} {p['source_file']}"}
    if measured is None or not len(measured):
        return {**out, "measured_mean": None, "measured_median": None, "measured_n": 0,
                "verdict": f"not comparable: {why or 'no measured rows in this suite'}", **extra}
    ours, theirs = interval(measured), published_interval(p)
    gap = float(measured.median()) - float(p["median"])
    return {**out, "measured_mean": float(measured.mean()), "measured_median": float(measured.median()),
            "measured_q25": float(measured.quantile(0.25)), "measured_q75": float(measured.quantile(0.75)),
            "measured_n": len(measured), "interval": f"{ours[2]} {ours[0]:.3g}..{ours[1]:.3g} vs {theirs[2]} "
            f"{theirs[0]:.3g}..{theirs[1]:.3g}", "measured_grad_evals": cost,
            "verdict": verdict(ours[:2], theirs[:2], gap), **extra}


def side_by_side(suite_dir: Path | str, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every published row beside this suite's measured rows for it, with a verdict."""
    table = published() if table is None else table
    sampling, frame = load_sampling(suite_dir), load_results(suite_dir)
    rows = []
    for _, p in table.iterrows():
        if p["method"] == "smc" and p["target"] == "funnel":
            m = _measured_funnel(sampling, int(p["K"])) if len(sampling) else pd.DataFrame()
            cost = int(m.grad_evals.max()) if len(m) else None
            rows.append(_row(p, m["value"] if len(m) else None, cost,
                             published_grad_evals=f"{int(p['K']) * AFT_LEAPFROG} if AFT's settings (not stated)",
                             particles=int(m.particles.max()) if len(m) else None))
        elif p["method"] == "realnvp_ml":
            metric = {"test_mean_log_p": "nll_exact", "is_ess": "is_ess"}[p["metric"]]
            rows.append(_row(p, _flow_rows(frame, metric) if len(frame) else None, None))
        else:
            why = {"dds": "DDS (a trained diffusion sampler) is not implemented here",
                   "pis": "PIS (a trained path-integral sampler) is not implemented here",
                   "fab": "FAB (flow + AIS bootstrap) is not implemented here",
                   "fab_buffer": "FAB (flow + AIS bootstrap) is not implemented here"}.get(p["method"], "")
            rows.append(_row(p, None, None, why))
    out = pd.DataFrame(rows)
    first = ["target", "method", "K", "metric", "published_median", "measured_median", "verdict", "interval",
             "measured_n", "published_n", "particles", "measured_grad_evals", "published_grad_evals"]
    return out[[c for c in first if c in out] + [c for c in out if c not in first]]


def measured_summary(suite_dir: Path | str, metric: str = "log_z_error") -> pd.DataFrame:
    """Mean, median, IQR of ``metric`` over replicates per target, algorithm, kernel and K, with its cost."""
    s = load_sampling(suite_dir)
    if s.empty:
        return s
    rows = s[(s.metric == metric) & (s.metric_status == "ok")]
    g = rows.groupby(["dataset", "method", "kernel", "K", "particles"])
    out = g["value"].agg(mean="mean", median="median", q25=lambda v: v.quantile(0.25),
                         q75=lambda v: v.quantile(0.75), n="count")
    out["grad_evals"] = g["grad_evals"].max()
    failed = s[(s.metric == metric) & (s.metric_status != "ok")].groupby(["dataset", "method", "kernel", "K"]).size()
    out = out.reset_index()
    out["failed"] = [int(failed.get((r.dataset, r.method, r.kernel, r.K), 0)) for r in out.itertuples()]
    return out
