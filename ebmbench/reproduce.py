"""Published numbers beside measured ones, with the protocol differences spelled out; and the
qualitative published findings a CPU-scale suite can check itself."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
PUBLISHED_DIR = Path(__file__).resolve().parent.parent / "results" / "published"

# (our method, our dataset, our metric) -> (published model, dataset, metric) it reproduces
MATCHES = {
    ("ddpm", "cifar10", "fid_inception"): ("DDPM (L_simple)", "CIFAR-10 32x32", "FID (vs CIFAR-10 test set)"),
    ("ddpm", "cifar10", "is_inception"): ("DDPM (L_simple)", "CIFAR-10 32x32", "IS"),
    ("pcd_ebm", "cifar10", "fid_inception"): ("IGEBM ('EBM' Du & Mordatch)", "CIFAR-10 32x32", "FID"),
    ("pcd_ebm", "cifar10", "is_inception"): ("IGEBM ('EBM' Du & Mordatch)", "CIFAR-10 32x32", "IS"),
    ("short_run_ebm", "cifar10", "fid_inception"): ("Short-run MCMC EBM", "CIFAR-10 32x32", "FID"),
    ("ncsn", "cifar10", "fid_inception"): ("NCSN", "CIFAR-10 32x32", "FID"),
    ("ncsn", "cifar10", "is_inception"): ("NCSN", "CIFAR-10 32x32", "IS"),
    ("sngan", "cifar10", "fid_inception"): ("SNGAN", "CIFAR-10 32x32", "FID"),
    ("sngan", "cifar10", "is_inception"): ("SNGAN", "CIFAR-10 32x32", "IS"),
    ("wgan_gp", "cifar10", "fid_inception"): ("WGAN-GP (standard CNN, SNGAN's run)", "CIFAR-10 32x32", "FID"),
}


def copy_published(shared: Path = SHARED, dest: Path = PUBLISHED_DIR) -> Path:
    """Copy the notes (published_results.md) beside the committed CSV; the CSV there carries protocol columns."""
    dest.mkdir(parents=True, exist_ok=True)
    notes = shared / "published_results.md"
    if notes.exists() and not (dest / notes.name).exists():
        shutil.copyfile(notes, dest / notes.name)
    return dest / "published_results.csv"


def parse_value(text: str) -> float | None:
    """The leading number of a published value as printed ('<=3.75 (train 3.72)' -> 3.75, '9.46 (+/-0.11)' -> 9.46)."""
    m = re.search(r"-?\d+(?:\.\d+)?", str(text))
    return float(m.group()) if m else None


def published(path: Path | None = None) -> pd.DataFrame:
    table = pd.read_csv(path or PUBLISHED_DIR / "published_results.csv", dtype=str)
    table["value_number"] = table["value"].map(parse_value)
    return table


def side_by_side(frame: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Measured rows (mean over seeds) beside the published number they reproduce, with protocol differences."""
    rows = []
    ok = frame[frame.metric_status == "ok"]
    for (method, dataset, metric), (model, pub_dataset, pub_metric) in MATCHES.items():
        ours = ok[(ok.method == method) & (ok.dataset == dataset) & (ok.metric == metric)]
        pub = table[(table.model == model) & (table.dataset == pub_dataset) & (table.metric == pub_metric)]
        if ours.empty or pub.empty:
            continue
        p = pub.iloc[0]
        meta = ours.meta.iloc[0] if isinstance(ours.meta.iloc[0], dict) else {}
        rows.append({
            "method": method, "dataset": dataset, "metric": metric, "measured": ours["value"].mean(),
            "seeds": ours.seed.nunique(), "n_samples": ours.n_samples.max(), "published": p["value"],
            "paper": f"{p['first_author']} {p['year']}, {p['paper_location']}",
            "comparable": meta.get("comparable"), "protocol_difference": meta.get("comparable_reason", ""),
        })
    return pd.DataFrame(rows)


def ddim_quality_by_steps(frame: pd.DataFrame, metric: str = "mmd2") -> pd.DataFrame:
    """Song et al. 2021, Table 1: DDIM quality falls as its steps shrink. Mean over seeds per steps."""
    rows = frame[(frame.metric == metric) & (frame.metric_status == "ok") & frame.sampler.fillna("").str.match(
        r"^(ddim|ddpm|dpm_solver)(@\d+)?$")].copy()
    if rows.empty:
        return rows
    rows["solver"] = rows.sampler.str.split("@").str[0]
    rows["steps"] = rows.nfe
    return (rows.groupby(["dataset", "method", "solver", "steps"], as_index=False)["value"].mean()
            .sort_values(["dataset", "solver", "steps"]))


def finding_holds(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and solver: does quality at the fewest steps trail quality at the most (lower is better)?"""
    out = []
    for (dataset, solver), g in table.groupby(["dataset", "solver"]):
        if g.steps.nunique() < 2:
            continue
        few, many = g.loc[g.steps.idxmin()], g.loc[g.steps.idxmax()]
        out.append({"dataset": dataset, "solver": solver, "fewest_steps": few.steps, "value_fewest": few.value,
                    "most_steps": many.steps, "value_most": many.value, "holds": few.value > many.value})
    return pd.DataFrame(out)


def long_run_degradation(frame: pd.DataFrame, metric: str = "mmd2") -> pd.DataFrame:
    """Nijkamp et al. 2019: short-run EBM samples degrade under chains far longer than K; PCD is meant to hold.
    Compares each EBM's langevin@K row with its longest langevin@L row (from ``long_run_factor``)."""
    rows = frame[(frame.metric == metric) & (frame.metric_status == "ok") & frame.sampler.fillna("").str.match(
        r"^langevin@\d+$")].copy()
    out = []
    for (dataset, method), g in rows.groupby(["dataset", "method"]):
        by_steps = g.groupby("nfe")["value"].mean()
        if len(by_steps) < 2:
            continue
        out.append({"dataset": dataset, "method": method, "K": by_steps.index.min(), "value_K": by_steps.iloc[0],
                    "long": by_steps.index.max(), "value_long": by_steps.iloc[-1],
                    "degrades": by_steps.iloc[-1] > by_steps.iloc[0]})
    return pd.DataFrame(out)


def study_findings(suite_dir: Path | str, frame: pd.DataFrame) -> pd.DataFrame:
    """The three findings of the tuning study (issue 15; ``ebmbench.study.findings``) from this suite's rows: each
    with its measured numbers and whether it holds, or ``not enough rows`` (every one, when the suite is no study)."""
    from ebmbench import study

    return study.findings(study.trial_table(suite_dir, frame), frame)


CORRECTED = ("ddpm_ula", "ddpm_mala", "ddpm_hmc")  # reverse diffusion with MCMC per level (samplers/corrected.py)


def composition_finding(frame: pd.DataFrame, metric: str = "reverse_kl") -> pd.DataFrame:
    """Du et al. 2023: Metropolis-corrected sampling of composed energy-parameterized diffusion models reaches a
    lower reverse KL to the exact product than plain reverse diffusion on summed scores.

    Per product target, corrected sampler and baseline (the same energy_ddpm pair with plain ancestral DDPM, and the
    eps-DDPM pair with plain ancestral DDPM): the per-seed difference baseline - corrected, its mean and 95 %
    Student-t interval over seeds paired by seed; ``holds`` when the interval lies above 0, ``fails`` when below,
    ``inconclusive`` otherwise; and the cost multiple in network evaluations per sample (both components counted).
    """
    from ebmbench.compose import interval, net_calls

    rows = frame[(frame.metric == metric) & (frame.metric_status == "ok") & (frame.operation == "product")]
    rows = rows.assign(net_calls=net_calls(rows))
    out = []
    for dataset, g in rows.groupby("dataset"):
        baselines = {"energy_ddpm + ddpm (summed scores)": g[(g.method == "energy_ddpm") & (g.sampler == "ddpm")],
                     "ddpm + ddpm (summed scores)": g[(g.method == "ddpm") & (g.sampler == "ddpm")]}
        for sampler in CORRECTED:
            corrected = g[(g.method == "energy_ddpm") & (g.sampler == sampler)].set_index("seed")
            for name, base in baselines.items():
                paired = base.set_index("seed").join(corrected, lsuffix="_base", how="inner")
                if len(paired) < 2:
                    continue
                diff = paired.value_base - paired.value
                mean, low, high = interval(diff)
                verdict = "holds" if low > 0 else "fails" if high < 0 else "inconclusive"
                out.append({"dataset": dataset, "corrected": f"energy_ddpm + {sampler}", "baseline": name,
                            "seeds": len(paired), f"{metric}_corrected": paired.value.mean(),
                            f"{metric}_baseline": paired.value_base.mean(), "improvement": mean,
                            "low": low, "high": high, "cost_multiple": paired.net_calls.mean()
                            / paired.net_calls_base.mean(), "verdict": verdict})
    return pd.DataFrame(out)
