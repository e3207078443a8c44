"""Training budgets from the calibration suite's learning curves (issue 11), written to docs/budgets.md.

    ebmbench run calibrate --workers 2          # about 40 minutes on a 2-core CPU
    python benchmarks/budgets.py                # reads results/calibrate, prints and writes docs/budgets.md

A family's budget on a dataset is the first curve point (steps double between points) whose doubling gains
less than max(5 %, 2 standard errors) of the headline metric's excess over its floor, on the curve of the
family's best evaluation sampler (``ebmbench.curves.budgets``). Every curve of every sampler is in the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a script that only saves figures

from ebmbench import plots  # noqa: E402
from ebmbench.curves import N_SE, REL_GAIN  # noqa: E402
from ebmbench.report import learning_curves  # noqa: E402
from ebmbench.results import load_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def markdown(table, budgets, suite_dir: Path, commit: str) -> str:
    """docs/budgets.md: the rule, the budgets, and every curve point, all from the suite's rows."""
    lines = [
        "# Training budgets, measured",
        "",
        "Written by `benchmarks/budgets.py` from the learning curves of `suites/calibrate.yaml` "
        f"(`{suite_dir}`, commit `{commit}`). Do not edit by hand: rerun the suite and the script.",
        "",
        "Each run of the calibration suite trains one family far past the default suite's old budget and evaluates "
        "its headline metric (2D: reverse KL(q||p) in nats, k-NN entropy; digits: FID on the domain classifier's "
        "features, N = 500) at every doubling of the training steps, with the EMA weights that the final evaluation "
        "uses. Curves are one seed at the default suite's N, except checkerboard DDPM and NCSN: three seeds at "
        "N = 4000 (`seeds` column below), because one seed at N = 1000 could not resolve their fall from 32k to "
        "64k steps; the spread over seeds enters their standard errors. **Rule:** the budget is the first curve "
        "point s (steps double between points) that no later point "
        f"beats by more than max({REL_GAIN:.0%} of the excess over the floor at s, {N_SE:g} standard errors of the "
        "difference), read on the curve of the family's best evaluation sampler (lowest value at the last step). "
        "Every later point is compared, not only the next doubling: on one seed a single doubling often gains "
        "about one standard error while the curve goes on falling (DDPM on eight_gaussians: 0.129, 0.088, 0.084, "
        "0.050 nats at 8k, 16k, 32k, 64k steps). A curve that turns up (an EBM whose chains stop mixing, a GAN "
        "that drifts) gets its best region. `flattened = False` means only the last point qualifies: the budget "
        "is then the last step trained, a lower bound on what the family needs. The standard error of a 2D "
        "point is the reverse KL's own (per-sample terms, N = 1000); a one-seed FID has none (`nan`), so only "
        "the relative part of the rule applies to it. At N = 500 one draw's FID varies by about 4 (SD 4.06 "
        "over 10 draws of 500 of the 1257 training digits, against the same test reference), so FID points "
        "closer than that are not resolved.",
        "",
        "![quality against training compute](budgets.png)",
        "",
        "## Budgets",
        "",
        "| dataset | method | sampler | budget (steps) | flattened | value at budget +- se | floor | value at end "
        "(steps) | training FLOPs at budget | train wall s at budget |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, b in budgets.iterrows():
        lines.append(f"| {b.dataset} | {b.method} | {b.sampler} | {b.budget_steps} | {b.flattened} | "
                     f"{b.value_at_budget:.4g} +- {b.se_at_budget:.2g} | {b.floor:.4g} | {b.value_at_end:.4g} "
                     f"({b.steps_trained}) | {b.train_flops_at_budget:.3g} | {b.train_wall_s_at_budget:.0f} |")
    lines += ["", "## Every curve point", "",
              "| dataset | method | sampler | metric | step | seeds | value | se | excess over floor | FLOPs "
              "| wall s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.sort_values(["dataset", "method", "sampler", "train_step"]).iterrows():
        lines.append(f"| {r.dataset} | {r.method} | {r.sampler} | {r.metric} | {r.train_step} | {r.seeds} "
                     f"| {r.value:.4g} | "
                     f"{r.se:.2g} | {r.excess:.4g} | {r.train_flops:.3g} | {r.train_wall_s:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite-dir", default=str(ROOT / "results" / "calibrate"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "budgets.md"))
    args = parser.parse_args()
    suite_dir = Path(args.suite_dir)
    table, budgets = learning_curves(suite_dir)
    if table.empty:
        raise SystemExit(f"no learning-curve rows under {suite_dir}: run `ebmbench run calibrate` first")
    commits = sorted(load_results(suite_dir).git_commit.dropna().unique())
    print(budgets.to_string(index=False))
    out = Path(args.out)
    fig = plots.quality_vs_training_compute(table, budgets)
    fig.savefig(out.with_suffix(".png"), dpi=110, bbox_inches="tight")
    out.write_text(markdown(table, budgets, suite_dir.relative_to(ROOT) if suite_dir.is_relative_to(ROOT)
                            else suite_dir, ", ".join(c[:10] for c in commits)))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
