"""A suite's report: tables over seeds, likelihoods by kind, quality vs cost, figures, HTML export."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ebmbench import plots
from ebmbench.curves import budgets, curve_table, floor_of
from ebmbench.results import atomic_write_text, load_results
from ebmbench.suites import KERNEL_ARGS, NOTEBOOKS_DIR

SAMPLE_METRICS = ("reverse_kl", "mode_tv", "mmd2_multiscale", "mmd2", "energy_distance", "mode_coverage",
                  "off_support_fraction", "true_nll_of_samples", "fid_domain", "kid_domain", "is_domain",
                  "precision_domain", "recall_domain", "nn_copy_fraction")
MODEL_KL = ("kl_model_data", "kl_data_model")  # the model's own normalized density against the truth, by quadrature
LOWER_IS_BETTER = {"mmd2": True, "energy_distance": True, "fid": True, "kid": True, "reverse_kl": True,
                   "mode_tv": True, "mmd2_multiscale": True}


def seed_interval(values: np.ndarray, n_boot: int = 2000, level: float = 0.95) -> tuple[float, float, str]:
    """A percentile bootstrap interval over seeds (Efron 1979) with >= 3 seeds, else min and max."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), "none"
    if len(values) < 3:
        return float(values.min()), float(values.max()), "min-max"
    rng = np.random.default_rng(0)  # the report is deterministic
    means = rng.choice(values, size=(n_boot, len(values)), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi), f"bootstrap {int(level * 100)}%"


def run_status_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Number of runs per dataset x method by run status (ok / diverged / failed)."""
    runs = frame.drop_duplicates("run_id")
    return runs.pivot_table(index=["dataset", "method"], columns="run_status", values="run_id",
                            aggfunc="count", fill_value=0)


def _status_counts(frame: pd.DataFrame) -> pd.DataFrame:
    runs = frame.drop_duplicates("run_id")
    counts = runs.groupby(["dataset", "method"]).run_status.value_counts().unstack(fill_value=0)
    for col in ("diverged", "failed"):
        if col not in counts:
            counts[col] = 0
    return counts[["diverged", "failed"]].reset_index()


def metric_table(frame: pd.DataFrame, metrics: tuple[str, ...] = SAMPLE_METRICS) -> pd.DataFrame:
    """Per dataset x method x sampler x metric: mean over seeds, its interval, the floor, cost,
    and beside each cell the number of diverged and failed seeds of that dataset x method."""
    ok = frame[(frame.metric_status == "ok") & frame.metric.isin(metrics)].copy()
    ok["floor"] = [floor_of(m) for m in ok["meta"]]
    rows = []
    for key, g in ok.groupby(["dataset", "method", "sampler", "metric"], dropna=False):
        lo, hi, kind = seed_interval(g["value"].to_numpy(dtype=float))
        rows.append({**dict(zip(["dataset", "method", "sampler", "metric"], key)),
                     "mean": g["value"].mean(), "low": lo, "high": hi, "interval": kind, "seeds": g.seed.nunique(),
                     "floor": g["floor"].mean(), "nfe": g["nfe"].mean(),
                     "mflops_per_sample": g["flops_per_sample"].mean() / 1e6,
                     "wall_ms_per_sample": 1e3 * g["wall_s_per_sample"].mean()})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.merge(_status_counts(frame), on=["dataset", "method"], how="left")


def likelihood_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Likelihood rows grouped by likelihood_kind (exact, bounds, estimates): never ranked across kinds."""
    ok = frame[frame.metric_status == "ok"].copy()
    ok["likelihood_kind"] = [m.get("likelihood_kind") if isinstance(m, dict) else None for m in ok["meta"]]
    ok = ok[ok.likelihood_kind.notna()]
    tables = {}
    for kind, g in ok.groupby("likelihood_kind"):
        rows = []
        for key, h in g.groupby(["dataset", "method", "metric"]):
            lo, hi, interval = seed_interval(h["value"].to_numpy(dtype=float))
            rows.append({**dict(zip(["dataset", "method", "metric"], key)), "mean": h["value"].mean(),
                         "low": lo, "high": hi, "interval": interval, "seeds": h.seed.nunique(),
                         "units": h.meta.iloc[0].get("units", "")})
        tables[kind] = pd.DataFrame(rows)
    return tables


EXACT_REFERENCES = ("nll_heldout", "nll_exact")  # quadrature (2D energies), change of variables, enumeration
ESTIMATORS = ("nll_ais_forward", "nll_ais_reverse", "nll_pf_ode", "nll_elbo")


def estimator_cost(meta: dict) -> tuple[float | None, str | None]:
    """(cost, its unit) of a likelihood estimator from whichever key it wrote: ELBO and PF-ODE per test point,
    AIS per chain, else a generic ``nfe``."""
    if meta.get("nfe_per_point") is not None:
        return meta["nfe_per_point"], "network evaluations per test point"
    if meta.get("nfe_per_solve") is not None:
        return meta["nfe_per_solve"], "network evaluations per ODE solve (a batch of test points)"
    if meta.get("nfe_per_chain") is not None:
        return meta["nfe_per_chain"], f"per AIS chain ({meta.get('nfe_unit', 'one energy evaluation')} each)"
    if meta.get("nfe") is not None:
        return meta["nfe"], "nfe"
    return None, None


def estimator_vs_exact(frame: pd.DataFrame) -> pd.DataFrame:
    """Every likelihood estimate of a run beside that run's exact value, with its error and cost."""
    ok = frame[frame.metric_status == "ok"]
    exact = ok[ok.metric.isin(EXACT_REFERENCES)]
    # .loc: an empty boolean list would select no columns through [], and groupby("run_id") would raise
    exact = exact.loc[[isinstance(m, dict) and m.get("likelihood_kind") == "exact" for m in exact.meta]]
    rows = []
    for run_id, ref in exact.groupby("run_id"):
        truth = ref.iloc[0]
        for _, est in ok[(ok.run_id == run_id) & ok.metric.isin(ESTIMATORS)].iterrows():
            meta = est.meta if isinstance(est.meta, dict) else {}
            nfe, unit = estimator_cost(meta)
            rows.append({"dataset": est.dataset, "method": est.method, "seed": est.seed, "estimator": est.metric,
                         "kind": meta.get("likelihood_kind"), "estimate": est.value, "stderr": est.stderr,
                         "exact": truth.value, "exact_by": truth.metric, "error": est.value - truth.value,
                         "nfe": nfe, "nfe_unit": unit, "wall_s": meta.get("wall_s")})
    return pd.DataFrame(rows)


def energy_vs_sampler(frame: pd.DataFrame) -> pd.DataFrame:
    """2D models with a density: KL(q_theta||p) of the density itself (quadrature) beside the reverse KL of each
    sampler's samples, seed means. A good density with a poor sampler shows as a small first column and a large
    second one (slow MCMC mixing); the difference is what the sampler loses."""
    ok = frame[frame.metric_status == "ok"]
    model = ok[ok.metric.isin(MODEL_KL)].pivot_table(index=["dataset", "method"], columns="metric", values="value",
                                                     aggfunc="mean")
    if model.empty:
        return pd.DataFrame()
    sample = ok[ok.metric == "reverse_kl"].groupby(["dataset", "method", "sampler"]).agg(
        sample_reverse_kl=("value", "mean"), seeds=("seed", "nunique")).reset_index()
    out = sample.merge(model.reset_index(), on=["dataset", "method"], how="inner")
    if "kl_model_data" in out:
        out["sampler_loss"] = out.sample_reverse_kl - out.kl_model_data
    return out


def ladder_table() -> pd.DataFrame:
    """Each sample metric's standing on the ladder of sample sets of known order (tests/test_ladder.py)."""
    from ebmbench.builtins import SAMPLE_METRICS as registry

    rows = [{"metric": name, "headline": getattr(m, "headline", False), "ladder": getattr(m, "ladder", "untested"),
             "cite": m.cite} for name, m in ((n, registry.get(n)) for n in registry.names())]
    order = {"passed": 0, "failed": 1, "untested": 2}
    table = pd.DataFrame(rows)
    return table.sort_values(["ladder", "metric"], key=lambda c: c.map(order) if c.name == "ladder" else c,
                             ignore_index=True)


def learning_curves(suite_dir: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The suite's learning-curve table (headline metric per step, over seeds) and the budgets it implies."""
    table = curve_table(load_results(suite_dir, curves=True))
    return table, (budgets(table) if len(table) else pd.DataFrame())


def not_measured(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose metric is not_applicable or failed, with the reason, one per kind."""
    rows = frame[frame.metric_status != "ok"]
    return rows.drop_duplicates(["dataset", "method", "sampler", "metric", "metric_status"])[
        ["dataset", "method", "sampler", "metric", "metric_status", "reason"]]


def commits(frame: pd.DataFrame) -> list[str]:
    """The commits the rows come from; more than one means the suite mixes code versions."""
    return sorted(frame.git_commit.dropna().unique())


def missing_runs(suite_dir: Path | str) -> list[str]:
    """Runs of the suite's manifest with no result yet (not run, or interrupted): never a silent gap."""
    from ebmbench.results import current_run_ids

    wanted = current_run_ids(suite_dir) or set()
    return sorted(r for r in wanted if not (Path(suite_dir) / "runs" / r / "result.json").exists())


def provenance_warning(frame: pd.DataFrame) -> str:
    found = commits(frame)
    dirty = bool(frame.git_dirty.fillna(False).astype(bool).any())
    parts = []
    if len(found) > 1:
        parts.append(f"rows come from {len(found)} commits ({', '.join(c[:10] for c in found)}): rerun for one")
    if dirty:
        parts.append("some rows were produced from a tree with uncommitted changes")
    return "; ".join(parts) or f"all rows from commit {found[0][:10] if found else 'unknown'}, clean tree"


def figures(suite_dir: Path | str) -> dict[str, Path]:
    """Write the report's figures as PNG and SVG under results/<suite>/figures/; a figure without data (or one
    that fails) is left out and says why, the others are still drawn."""
    suite_dir = Path(suite_dir)
    frame = load_results(suite_dir)
    out = suite_dir / "figures"
    out.mkdir(exist_ok=True)
    ok = frame[frame.metric_status == "ok"]
    makers = {
        "quality_vs_cost": lambda: plots.quality_vs_cost(frame) if ok.sampler.notna().any() else None,
        "sample_grids": lambda: plots.suite_sample_grids(suite_dir, frame),
        "training_curves": lambda: plots.suite_training_curves(suite_dir, frame),
        "landscapes": lambda: plots.suite_landscapes(suite_dir, frame),
        "learning_curves": lambda: plots.quality_vs_training_compute(*learning_curves(suite_dir)),
    }
    paths = {}
    for name, make in makers.items():
        try:
            fig = make()
        except Exception as err:  # one broken figure must not cost the report the others
            print(f"figure {name!r} not drawn: {type(err).__name__}: {err}")
            continue
        if fig is None:
            print(f"figure {name!r}: no run of {suite_dir.name} has the rows it needs")
            continue
        for ext in ("png", "svg"):
            fig.savefig(out / f"{name}.{ext}", dpi=120, bbox_inches="tight")  # legends sit outside the axes
        plt.close(fig)  # saved, not shown: an inline backend would otherwise draw it a second time
        paths[name] = out / f"{name}.png"
    return paths


def shown(table: pd.DataFrame, missing: str, digits: int | None = None) -> pd.DataFrame | None:
    """A report section's table (rounded to ``digits``), or, when it is empty, a printed line saying what is
    missing."""
    if len(table):
        return table.round(digits) if digits is not None else table
    print(missing)
    return None


# nbconvert's lab template loads require.js and MathJax from a CDN; the reports need neither (no widgets, no math),
# and without them the HTML is self-contained and opens offline
REMOTE_SCRIPT = re.compile(r'<script src="https?://[^"]*">\s*</script>')


class RenderError(RuntimeError):
    """A report notebook raised in a cell; its HTML was still written, with the traceback in place."""


def render(suite_dir: Path | str, notebook: str = "report.ipynb") -> Path:
    """Execute a report notebook for a suite and export it to results/<suite>/<name>.html.

    Every cell runs even when an earlier one raises, and the HTML is written either way; then a cell error
    raises ``RenderError`` naming the HTML and the first failing cell.
    """
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    from ebmbench.suites import kernel_environment

    suite_dir = Path(suite_dir).resolve()
    executed = suite_dir / notebook
    failure = ""
    try:
        with kernel_environment():
            pm.execute_notebook(str(NOTEBOOKS_DIR / notebook), str(executed),
                                parameters={"suite_dir": str(suite_dir)}, progress_bar=False, allow_errors=True,
                                kernel_name="python3", cwd=str(NOTEBOOKS_DIR), extra_arguments=KERNEL_ARGS)
    except pm.PapermillExecutionError as err:
        failure = f"cell In [{err.exec_count}] raised {err.ename}: {err.evalue}"
    html, _ = HTMLExporter(exclude_input=True).from_notebook_node(nbformat.read(executed, as_version=4))
    path = executed.with_suffix(".html")
    atomic_write_text(path, REMOTE_SCRIPT.sub("", html))
    if failure:
        raise RenderError(f"{path}: {failure} (the HTML shows the traceback)")
    return path
