"""Issue 11's quality targets beside the default suite's measured values (seed means), from the rows.

    make benchmark                  # or: ebmbench run quick --workers 2
    python benchmarks/targets.py    # reads results/quick

Not a timed test: it prints each target, the value measured (mean over seeds, with min and max), and
whether the target is met. The sampler is named for every value; "best" picks the sampler with the lowest
seed mean, and says which.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ebmbench.curves import floor_of
from ebmbench.report import seed_interval
from ebmbench.results import load_results

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """One target: ``kind`` says what is compared with ``bound``."""

    dataset: str
    method: str
    metric: str
    kind: str  # above_floor (value - floor <= bound) | value (<= bound) | floor_ratio (value / floor <= bound)
    #            | covers_zero (bootstrap interval of value - floor contains 0) | no_copying (copy test passes)
    bound: float = 0.0
    sampler: str = "best"  # a sampler label, "best" (lowest seed mean) or "all" (every sampler's rows)


TARGETS = [
    Target("eight_gaussians", "ddpm", "reverse_kl", "above_floor", 0.1),
    Target("eight_gaussians", "ncsn", "reverse_kl", "above_floor", 0.2),
    Target("eight_gaussians", "pcd_ebm", "reverse_kl", "above_floor", 0.2),
    Target("eight_gaussians", "realnvp", "reverse_kl", "above_floor", 0.5),
    Target("eight_gaussians", "sngan", "reverse_kl", "above_floor", 0.5),
    Target("eight_gaussians", "ddpm", "forward_kl_pf_ode", "value", 0.1, sampler=""),
    Target("eight_gaussians", "pcd_ebm", "forward_kl_heldout", "value", 0.1, sampler=""),
    Target("checkerboard", "ddpm", "reverse_kl", "above_floor", 0.3),
    Target("checkerboard", "ncsn", "reverse_kl", "above_floor", 0.3),
    Target("checkerboard", "pcd_ebm", "reverse_kl", "above_floor", 0.3),
    Target("digits", "ddpm", "fid_domain", "covers_zero"),
    Target("digits", "ddpm", "nn_copy_fraction", "no_copying", sampler="all"),
    Target("digits", "sngan", "fid_domain", "floor_ratio", 3.0),
    Target("digits", "pcd_ebm", "fid_domain", "floor_ratio", 3.0),
]


def _rows(frame: pd.DataFrame, t: Target) -> pd.DataFrame:
    rows = frame[(frame.dataset == t.dataset) & (frame.method == t.method) & (frame.metric == t.metric)
                 & (frame.metric_status == "ok")].copy()
    rows["floor"] = [floor_of(m) for m in rows.meta]
    rows["score"] = rows.value - rows.floor if t.kind in ("above_floor", "covers_zero") else rows.value
    if t.kind == "floor_ratio":
        rows["score"] = rows.value / rows.floor
    return rows


def evaluate(frame: pd.DataFrame, t: Target) -> dict:
    """The target's measured seed mean [min, max], the sampler it was read on, and whether it is met."""
    rows = _rows(frame, t)
    if rows.empty:
        return {"measured": "no rows", "met": False, "sampler": t.sampler}
    by = rows.groupby(rows.sampler.fillna(""))
    sampler = by.score.mean().idxmin() if t.sampler == "best" else t.sampler
    g = rows if t.sampler == "all" else rows[rows.sampler.fillna("") == sampler]
    s = g.score.to_numpy(float)
    text = f"{s.mean():.4g} [{s.min():.4g}, {s.max():.4g}] over {len(s)} rows"
    if t.kind == "covers_zero":
        lo, hi, how = seed_interval(s)
        return {"measured": f"{text}; {how} interval [{lo:.3g}, {hi:.3g}]", "met": lo <= 0 <= hi, "sampler": sampler}
    if t.kind == "no_copying":
        flags = [bool(m.get("flagged", False)) for m in g.meta]
        text = f"copy fraction {text}; flagged in {sum(flags)} of {len(flags)} rows"
        return {"measured": text, "met": not any(flags), "sampler": sampler}
    return {"measured": text, "met": bool(np.mean(s) <= t.bound), "sampler": sampler}


def describe(t: Target) -> str:
    what = {"above_floor": f"{t.metric} - floor <= {t.bound:g}", "value": f"{t.metric} <= {t.bound:g}",
            "floor_ratio": f"{t.metric} <= {t.bound:g} x floor", "covers_zero": f"interval of {t.metric} - floor "
            "covers 0", "no_copying": "copy test shows no copying"}[t.kind]
    return what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite-dir", default=str(ROOT / "results" / "quick"))
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (the README's)")
    args = parser.parse_args()
    frame = load_results(args.suite_dir)
    if frame.empty:
        raise SystemExit(f"no rows under {args.suite_dir}: run `make benchmark` first")
    out = [{"dataset": t.dataset, "method": t.method, "target": describe(t), **evaluate(frame, t)} for t in TARGETS]
    table = pd.DataFrame(out)[["dataset", "method", "sampler", "target", "measured", "met"]]
    if args.markdown:
        print("| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns))
        for _, r in table.iterrows():
            print("| " + " | ".join(str(v) if k != "met" else ("yes" if v else "**no**") for k, v in r.items()) + " |")
    else:
        with pd.option_context("display.width", 250, "display.max_colwidth", 80):
            print(table.to_string(index=False))
    print(f"{int(table.met.sum())} of {len(table)} targets met")


if __name__ == "__main__":
    main()
