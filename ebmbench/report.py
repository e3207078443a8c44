"""A suite's report: tables over seeds, the quality-vs-cost figure, HTML export."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ebmbench.plots import quality_vs_cost
from ebmbench.results import atomic_write_text, load_results
from ebmbench.suites import NOTEBOOKS_DIR

TABLE_METRICS = ("nll_heldout", "nll_true_density", "mmd2", "energy_distance", "mode_coverage",
                 "off_support_fraction", "true_nll_of_samples")


def run_status_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Number of runs per dataset x method by run status (ok / diverged / failed)."""
    runs = frame.drop_duplicates("run_id")
    return runs.pivot_table(index=["dataset", "method"], columns="run_status", values="run_id",
                            aggfunc="count", fill_value=0)


def metric_table(frame: pd.DataFrame, metrics: tuple[str, ...] = TABLE_METRICS) -> pd.DataFrame:
    """Mean, min and max over seeds of each metric per dataset x method x sampler, with n seeds."""
    ok = frame[(frame.metric_status == "ok") & frame.metric.isin(metrics)].copy()
    ok["floor"] = [m.get("floor") if isinstance(m, dict) else None for m in ok["meta"]]
    ok["floor"] = pd.to_numeric(ok["floor"], errors="coerce")
    ok["sampler"] = ok["sampler"].fillna("-")
    grouped = ok.groupby(["dataset", "method", "sampler", "metric"])
    table = grouped.agg(mean=("value", "mean"), min=("value", "min"), max=("value", "max"),
                        seeds=("seed", "nunique"), floor=("floor", "mean"), nfe=("nfe", "mean"),
                        wall_ms_per_sample=("wall_s_per_sample", lambda s: 1e3 * s.mean()),
                        mflops_per_sample=("flops_per_sample", lambda s: s.mean() / 1e6))
    return table.reset_index()


def not_measured(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose metric is not_applicable or failed, with the reason, one per kind."""
    rows = frame[frame.metric_status != "ok"]
    return rows.drop_duplicates(["dataset", "method", "sampler", "metric", "metric_status"])[
        ["dataset", "method", "sampler", "metric", "metric_status", "reason"]]


def commits(frame: pd.DataFrame) -> list[str]:
    return sorted(frame.git_commit.dropna().unique())


def figures(suite_dir: Path) -> dict[str, Path]:
    """Write the report's figures under results/<suite>/figures/ and return their paths."""
    frame = load_results(suite_dir)
    out = Path(suite_dir) / "figures"
    out.mkdir(exist_ok=True)
    path = out / "quality_vs_cost.png"
    fig = quality_vs_cost(frame, path)
    fig.savefig(out / "quality_vs_cost.svg")
    return {"quality_vs_cost": path}


def render(suite_dir: Path | str) -> Path:
    """Execute report.ipynb for a suite and export it to results/<suite>/report.html."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    suite_dir = Path(suite_dir).resolve()
    executed = suite_dir / "report.ipynb"
    pm.execute_notebook(str(NOTEBOOKS_DIR / "report.ipynb"), str(executed),
                        parameters={"suite_dir": str(suite_dir)}, progress_bar=False,
                        kernel_name="python3", cwd=str(NOTEBOOKS_DIR))
    html, _ = HTMLExporter(exclude_input=True).from_notebook_node(nbformat.read(executed, as_version=4))
    path = suite_dir / "report.html"
    atomic_write_text(path, html)
    return path
