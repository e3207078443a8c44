"""The README's quick-suite table, printed as Markdown from results/quick (nothing typed by hand).

    python benchmarks/quick_table.py [--suite-dir results/quick]

One line per dataset x method x sampler: the headline metric (2D: reverse KL in nats, k-NN entropy, with its
exact-sample floor; images: FID on the domain classifier's features, with the train-vs-test floor) as the mean
over seeds [min, max]; the likelihood of the run labelled by kind; counted sampling cost per sample; and the
training budget with its counted FLOPs and wall clock.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ebmbench.curves import CURVE_HEADLINES, floor_of
from ebmbench.results import load_results

ROOT = Path(__file__).resolve().parent.parent
LIKELIHOODS = ("forward_kl_heldout", "forward_kl_exact", "forward_kl_pf_ode", "nll_heldout", "nll_exact",
               "nll_pf_ode", "nll_ais_forward")  # the first a run has is shown


def _spread(values: np.ndarray, digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} [{values.min():.{digits}f}, {values.max():.{digits}f}]"


def likelihood_cell(frame: pd.DataFrame, dataset: str, method: str) -> str:
    """The run's first likelihood row of LIKELIHOODS, as 'mean (metric, kind)'."""
    rows = frame[(frame.dataset == dataset) & (frame.method == method) & (frame.metric_status == "ok")]
    for metric in LIKELIHOODS:
        r = rows[rows.metric == metric]
        if len(r):
            kind = r.meta.iloc[0].get("likelihood_kind", "")
            return f"{r.value.mean():.3f} ({metric}, {kind})"
    return ""


def table(frame: pd.DataFrame) -> list[str]:
    lines = ["| data | method / sampler | quality: mean [min, max] over seeds | floor | likelihood (nats) | NFE "
             "| MFLOPs | ms | train steps | train GFLOPs | train s |", "|" + "---|" * 11]
    ok = frame[frame.metric_status == "ok"]
    for dataset in sorted(ok.dataset.unique()):
        metric = next((m for m in CURVE_HEADLINES if (ok[ok.dataset == dataset].metric == m).any()), None)
        if metric is None:
            continue
        d = ok[(ok.dataset == dataset) & (ok.metric == metric)]
        for (method, sampler), g in d.groupby(["method", "sampler"]):
            floor = np.nanmean([floor_of(m) for m in g.meta])
            cost = g.iloc[0]
            lik = likelihood_cell(frame, dataset, method) if sampler == d[d.method == method].sampler.min() else ""
            lines.append(
                f"| {dataset} | {method} / {sampler} | {metric} {_spread(g.value.to_numpy(float), 3)} "
                f"| {floor:.3f} | {lik} | {g.nfe.mean():g} | {g.flops_per_sample.mean() / 1e6:.3g} "
                f"| {1e3 * g.wall_s_per_sample.mean():.3g} | {int(cost.train_steps)} "
                f"| {g.train_flops.mean() / 1e9:.4g} | {g.train_wall_s.mean():.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite-dir", default=str(ROOT / "results" / "quick"))
    args = parser.parse_args()
    frame = load_results(args.suite_dir)
    if frame.empty:
        raise SystemExit(f"no rows under {args.suite_dir}: run `make benchmark` first")
    print("\n".join(table(frame)))
    runs = frame.drop_duplicates("run_id")
    print(f"\n{len(runs)} runs: " + ", ".join(f"{k} {v}" for k, v in runs.run_status.value_counts().items())
          + f"; commits {sorted(c[:10] for c in frame.git_commit.dropna().unique())}")


if __name__ == "__main__":
    main()
