"""A suite's report: leaderboards and summaries per dataset, figures with captions, the long tables in a
collapsible appendix, tables for papers (CSV, LaTeX), HTML export."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ebmbench import leaderboard
from ebmbench.curves import budgets, curve_table, floor_of
from ebmbench.kernels import KERNEL_ARGS, NOTEBOOKS_DIR
from ebmbench.leaderboard import seed_interval
from ebmbench.plots import suite as plots
from ebmbench.results import atomic_write_text, load_results

SAMPLE_METRICS = ("reverse_kl", "mode_tv", "mmd2_multiscale", "mmd2", "energy_distance", "mode_coverage",
                  "off_support_fraction", "true_nll_of_samples", "fid_domain", "kid_domain", "is_domain",
                  "precision_domain", "recall_domain", "nn_copy_fraction")
MODEL_KL = ("kl_model_data", "kl_data_model")  # the model's own normalized density against the truth, by quadrature
LOWER_IS_BETTER = {"mmd2": True, "energy_distance": True, "fid": True, "kid": True, "reverse_kl": True,
                   "mode_tv": True, "mmd2_multiscale": True}


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
            rows.append({"dataset": est.dataset, "method": est.method, "family": est.family, "seed": est.seed,
                         "estimator": est.metric,
                         "kind": meta.get("likelihood_kind"), "estimate": est.value, "stderr": est.stderr,
                         "exact": truth.value, "exact_by": truth.metric, "error": est.value - truth.value,
                         "nfe": nfe, "nfe_unit": unit, "wall_s": meta.get("wall_s")})
    return pd.DataFrame(rows)


def estimator_summary(errors: pd.DataFrame) -> pd.DataFrame:
    """``estimator_vs_exact`` over seeds: per dataset, method and estimator, the mean error against the exact
    value with its interval over seeds, the mean absolute error, and the cost."""
    if errors.empty:
        return errors
    rows = []
    for (ds, method, est), g in errors.groupby(["dataset", "method", "estimator"]):
        lo, hi, interval = seed_interval(g.error.to_numpy(float))
        rows.append({"dataset": ds, "method": method, "estimator": est, "kind": g.kind.iloc[0],
                     "error": leaderboard.fmt_interval(g.error.mean(), lo, hi), "mean |error|": g.error.abs().mean(),
                     "seeds": g.seed.nunique(), "exact by": g.exact_by.iloc[0], "cost": g.nfe.mean(),
                     "cost unit": g.nfe_unit.iloc[0], "wall s": g.wall_s.mean()})
    return pd.DataFrame(rows).sort_values(["dataset", "method", "mean |error|"], ignore_index=True)


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


FIGURE_FORMATS = ("png", "svg", "pdf")  # PNG for the page, SVG and PDF for papers
PNG_DPI = 144  # 1.5 device pixels per CSS pixel: sharp on high-density screens, shown at 96 px per inch


def figures(suite_dir: Path | str) -> dict[str, Path]:
    """Write the report's figures as PNG, SVG and PDF under results/<suite>/figures/; a figure without data (or
    one that fails) is left out and says why, the others are still drawn. Returns the PNG of each."""
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
        with plots.report_style():
            for ext in FIGURE_FORMATS:  # legends sit outside the axes: the tight box keeps them
                fig.savefig(out / f"{name}.{ext}", dpi=PNG_DPI, bbox_inches="tight",
                            metadata={"Date": None} if ext == "pdf" else None)
        plt.close(fig)  # saved, not shown: an inline backend would otherwise draw it a second time
        paths[name] = out / f"{name}.png"
    return paths


def _seeds_and_n(rows: pd.DataFrame) -> str:
    seeds = sorted({int(k) for k in rows.groupby(["dataset", "method", "sampler"], dropna=False).seed.nunique()})
    n = sorted({int(k) for k in rows.n_samples.dropna().unique()})
    return (f"{'/'.join(map(str, seeds)) or '?'} seeds per setting, N = {', '.join(map(str, n)) or '?'} "
            "samples per seed")


def _floors(frame: pd.DataFrame) -> str:
    parts = []
    for ds in sorted(frame.dataset.dropna().unique()):
        metric = leaderboard.headline_metric(frame, ds)
        if metric is None:
            continue
        rows = frame[(frame.dataset == ds) & (frame.metric == metric) & (frame.metric_status == "ok")]
        floor = np.nanmean([floor_of(m) for m in rows.meta]) if len(rows) else np.nan
        if np.isfinite(floor):
            parts.append(f"{ds} {metric} {leaderboard.fmt(floor)}")
    return "; ".join(parts)


def _headline_rows(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame[frame.metric_status == "ok"]
    keep = [(ok.dataset == ds) & (ok.metric == leaderboard.headline_metric(frame, ds))
            for ds in ok.dataset.dropna().unique()]
    return ok[np.logical_or.reduce(keep)] if keep else ok.iloc[:0]


def caption(name: str, frame: pd.DataFrame, curves: pd.DataFrame | None = None) -> str:
    """A figure's caption, from the rows: what is drawn, N, seeds, the floor, and what "better" means."""
    head = _headline_rows(frame)
    metrics = ", ".join(sorted(set(head.metric))) or "the headline metric"
    floors = _floors(frame)
    floor_text = (f"Dashed: the floor, the same estimator on exact samples (2D) or training against test images "
                  f"at equal N ({floors}).") if floors else "No floor recorded."
    style = ("Colour: family (methods of one family in shades of it); marker: sampler (hollow or half-filled: "
             "a second budget of the same sampler).")
    if name == "quality_vs_cost":
        return (f"Headline quality ({metrics}; lower is better) against sampling cost: NFE per sample counted by "
                f"an instrumented network wrapper (replay buffer: its amortized NFE) and matmul/conv FLOPs per "
                f"sample. Points: seed means, {_seeds_and_n(head)}; bars: 95 % bootstrap interval over seeds. "
                f"Down and to the left is better; the black steps join the Pareto front. {floor_text} {style}")
    if name == "learning_curves":
        curves = curves if curves is not None else pd.DataFrame()
        seeds = "/".join(str(int(s)) for s in sorted(curves.seeds.unique())) if len(curves) else "?"
        return (f"Learning curves: the headline metric ({metrics}; lower is better) at every doubling of the "
                f"training steps against counted training FLOPs; {seeds} seed(s) per point, band: +-1 standard "
                f"error. A star marks each method's budget: the first point that no later one beats by more than "
                f"max(5 %, 2 standard errors) of the excess over the floor. Dotted: the model's own density by "
                f"quadrature (2D). {floor_text} {style}")
    if name == "sample_grids":
        return ("Samples of every evaluation sampler of each method (seed 0) beside held-out test data: 2D "
                "densities as up to 2000 points on the support box, images as the first 64 samples. Closer to "
                "the test data is better; the leaderboards give the numbers.")
    if name == "landscapes":
        return ("2D densities (seed 0): the true density beside each model's exp(-E) (normalized to its maximum) "
                "or, for models without a density, a 40 x 40 histogram of its samples. Closer to the truth is "
                "better; KL(q_θ‖p) by quadrature is in the appendix.")
    if name == "training_curves":
        return ("Training loss of each method (seed 0) against the optimizer step, one panel per method: each "
                "objective has its own scale, so compare shapes (stable, diverging), not heights.")
    return ""


def show(figures: dict[str, Path], name: str, frame: pd.DataFrame, curves: pd.DataFrame | None = None):
    """A figure for the report page: the PNG at its natural size (96 px per inch, so that 9 pt type stays 9 pt)
    in a <figure> with its caption; or a line saying why there is none."""
    import base64

    from IPython.display import HTML
    from PIL import Image as PILImage

    path = figures.get(name)
    if path is None or not Path(path).exists():
        return HTML(f"<p><em>No {name.replace('_', ' ')} figure: no run of this suite has the rows it needs.</em>"
                    "</p>")
    with PILImage.open(path) as im:
        width = round(im.size[0] * 96 / PNG_DPI)
    data = base64.b64encode(Path(path).read_bytes()).decode()
    cap = caption(name, frame, curves)
    files = ", ".join(f"{name}.{ext}" for ext in FIGURE_FORMATS)
    return HTML(f'<figure class="report-figure" style="margin: 0.5em 0">'
                f'<img src="data:image/png;base64,{data}" width="{width}" style="max-width: none" alt="{name}">'
                f'<figcaption style="max-width: {max(width, 600)}px; font-size: 0.92em; color: #333">{cap} '
                f'<span style="color: #777">(figures/{files})</span></figcaption></figure>')


def header(frame: pd.DataFrame, suite_dir: Path | str) -> str:
    """The report's first lines: where the rows come from and how many runs ended how. Markdown."""
    runs = frame.drop_duplicates("run_id")
    counts = runs.run_status.value_counts()
    status = ", ".join(f"{int(counts.get(k, 0))} {k}" for k in ("ok", "diverged", "failed"))
    partial = partial_line(suite_dir)
    lines = [f"**{partial}**"] if partial else []
    lines.append(f"Suite **{Path(suite_dir).name}**: {len(runs)} runs ({status}) on "
                 f"{frame.dataset.nunique()} datasets; {provenance_warning(frame)}.")
    return "\n\n".join(lines)


def partial_line(suite_dir: Path | str, shown: int = 10) -> str:
    """'partial: N of M runs finished; pending: ...' when runs of the suite's manifest have no result or a run is
    executing the suite now (its lock is held); '' for a complete suite."""
    from ebmbench.kernels import lock_holder
    from ebmbench.results import current_run_ids

    wanted, missing, holder = current_run_ids(suite_dir) or set(), missing_runs(suite_dir), lock_holder(suite_dir)
    if not missing and holder is None:
        return ""
    pending = ", ".join(missing[:shown]) + (f" and {len(missing) - shown} more" if len(missing) > shown else "")
    running = f" (a run is executing the suite now: {holder})" if holder else ""
    return (f"partial: {len(wanted) - len(missing)} of {len(wanted)} runs finished{running}; "
            f"pending: {pending or 'none'}")


def tables_dir(suite_dir: Path | str) -> Path:
    return Path(suite_dir) / "tables"


def leaderboard_sections(frame: pd.DataFrame, suite_dir: Path | str) -> list[object]:
    """What the notebook displays, in order: per dataset its heading and generated summary (Markdown), then its
    leaderboard (Styler). The boards are written to results/<suite>/tables/ as CSV and LaTeX first."""
    from IPython.display import Markdown

    boards = leaderboard.write_tables(frame, tables_dir(suite_dir))
    out: list[object] = []
    for ds, board in boards.items():
        cap = leaderboard.caption(board, leaderboard.floor_definition(frame, ds, board.metric.iloc[0]))
        text = leaderboard.summary(frame, ds, bullets=True)
        out += [Markdown(f"### {ds}\n\n{text}"), leaderboard.styled(board, cap)]
    if not boards:
        out.append(Markdown("No dataset has an ok row of a headline metric "
                            f"({', '.join(leaderboard.headline_metrics())}): no leaderboard."))
    return out


def _html_table(table: pd.DataFrame, digits: int = 4) -> str:
    def number(x: float) -> str:
        return f"{x:.{digits}g}"

    return table.to_html(index=False, float_format=number, na_rep="", classes="appendix", border=0,
                         escape=True)


def collapsed(title: str, table: pd.DataFrame | None, empty: str = "") -> str:
    """A table behind a click, one block per dataset; HTML (see ``appendix``)."""
    return _by_dataset(title, table, empty)


def _by_dataset(title: str, table: pd.DataFrame | None, empty: str) -> str:
    """A collapsible section: one collapsible block per dataset (the filter), or the whole table."""
    if table is None or len(table) == 0:
        return f"<details><summary><b>{title}</b></summary><p>{empty}</p></details>"
    if "dataset" not in table:
        return f"<details><summary><b>{title}</b> ({len(table)} rows)</summary>{_html_table(table)}</details>"
    inner = "".join(
        f'<details style="margin-left: 1.2em"><summary>{ds} ({len(g)} rows)</summary>'
        f"{_html_table(g.drop(columns='dataset'))}</details>"
        for ds, g in table.groupby("dataset", sort=True))
    return f"<details><summary><b>{title}</b> ({len(table)} rows)</summary>{inner}</details>"


def appendix(frame: pd.DataFrame, suite_dir: Path | str, curve_budgets: pd.DataFrame | None = None) -> str:
    """The long tables, each collapsed, split by dataset: sample statistics, likelihoods by kind, the density
    against its samplers, budgets, the ladder, runs by status and what was not measured. HTML."""
    stats = metric_table(frame)
    if len(stats):
        stats = stats.round(5)
    parts = [_by_dataset("Sample statistics per dataset, method and sampler", stats,
                         "no ok sample-quality row: every run failed or every sample metric was skipped "
                         "(see 'Not measured' below)")]
    lik = likelihood_tables(frame)
    if lik:
        for kind, table in lik.items():
            parts.append(_by_dataset(f"Likelihoods: {kind}", table.round(4), ""))
    else:
        parts.append(_by_dataset("Likelihoods", None, "no ok likelihood row: every likelihood metric was skipped "
                                 "(skip_metrics), failed or does not apply to these models (see 'Not measured')"))
    parts.append(_by_dataset("2D: the model's density against its samplers", energy_vs_sampler(frame).round(4),
                             "no 2D model with a density"))
    parts.append(_by_dataset("Budgets read off the learning curves", curve_budgets, "no learning-curve rows"))
    parts.append(_by_dataset("Which metrics rank known degradations in order (the ladder)", ladder_table(), ""))
    parts.append(_by_dataset("Runs by status", run_status_table(frame).reset_index(), "no runs"))
    skipped = not_measured(frame)
    # a reason's first line (no traceback on the page), without this machine's paths
    skipped = skipped.assign(reason=[redact_paths(r.split("\n")[0]) for r in skipped.reason.fillna("")])
    parts.append(_by_dataset("Not measured, and why", skipped, "every metric was measured"))
    return "\n".join(parts)


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

    from ebmbench.kernels import kernel_environment

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
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    html, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    path = executed.with_suffix(".html")
    atomic_write_text(path, REMOTE_SCRIPT.sub("", html))
    if failure:
        raise RenderError(f"{path}: {failure} (the HTML shows the traceback)")
    return path


# --- what a rendered page must not contain (checked by tests/test_report_html.py) --------------------------------

EXTERNAL = re.compile(r"^(?:https?:)?//", re.I)
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:home|root|tmp|work|Users|usr|opt|var|mnt|scratch|private|srv|data|"
                           r"lustre|gpfs)/|(?<![\w])[A-Za-z]:\\[\w.]")
NOISE = re.compile(r"Traceback \(most recent call last\)|\b\w*Warning: |IProgress not found")


def redact_paths(text: str) -> str:
    """Text for a shared page: the home folder as ~, the repository as ., any other absolute path as .../name."""
    from ebmbench.kernels import ROOT

    text = text.replace(str(ROOT), ".").replace(str(Path.home()), "~")
    return re.sub(r"(?<![\w.~:/-])/(?:[^\s/'\"]+/)+([^\s/'\"]*)", r".../\1", text)


def html_problems(html: str) -> list[str]:
    """What a report page must not have: external scripts, stylesheets or images (it must open offline), stderr
    or error outputs, warning or traceback text, absolute filesystem paths. Data URIs (embedded figures) and the
    page's own CSS and scripts are not searched. An empty list: the page is clean."""
    from html.parser import HTMLParser

    problems: list[str] = []

    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.skip = 0  # inside <script> or <style>
            self.text: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = {k: v or "" for k, v in attrs}
            if tag in ("script", "style"):
                self.skip += 1
            url = a.get("src") if tag in ("script", "img", "iframe") else a.get("href") if tag == "link" else None
            if url and EXTERNAL.match(url):
                problems.append(f"external {tag} {url}")
            if "application/vnd.jupyter.stderr" in a.get("data-mime-type", ""):
                problems.append("a stderr output (a warning or an error printed by a cell)")
            for k, v in a.items():
                if not v.startswith("data:") and ABSOLUTE_PATH.search(v):
                    problems.append(f"absolute path in <{tag} {k}>: {v[:120]}")

        def handle_endtag(self, tag: str) -> None:
            if tag in ("script", "style") and self.skip:
                self.skip -= 1

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.text.append(data)

    page = Page()
    page.feed(html)
    text = " ".join(page.text)
    for pattern, what in ((NOISE, "warning or traceback text"), (ABSOLUTE_PATH, "absolute path")):
        for m in pattern.finditer(text):
            problems.append(f"{what}: ...{text[max(0, m.start() - 60):m.end() + 60]}...")
    return problems
