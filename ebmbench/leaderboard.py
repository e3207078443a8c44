"""Leaderboards: one table per dataset that answers which setting wins on quality, likelihood and cost, by how
much, and how sure the seeds make us; and a text summary of each, generated from the same rows.

Every number comes from result rows. A cell is the mean over seeds with a 95 % percentile-bootstrap interval
over seeds (3 or more seeds; min and max with fewer). The best row of a column is marked, and a row whose
interval overlaps the best one's is a tie. The quality column is the dataset's headline metric (``headline`` in
the metric registry: metrics that ranked the ladder of known degradations in order), with its floor row (the
same estimator on exact samples, or training against test images) first. Likelihoods are labelled by kind
(exact, upper bound, lower bound, estimate) and ranked only within a kind.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ebmbench.curves import CURVE_HEADLINES, floor_of

FLOOR = "floor"  # the setting name of a leaderboard's floor row
TIE = "≈"  # marks a cell whose interval overlaps the best one's
KIND_ORDER = ("exact", "upper bound", "estimate", "lower bound")  # which likelihood of a model the board shows
# estimators in the order the board prefers them within a kind (the usually tighter first); with a known data
# density the paired forward KL(p||q) = NLL - H(p) is shown (0 is perfect), else the NLL itself
ESTIMATOR_ORDER = ("exact", "heldout", "pf_ode", "ais_reverse", "elbo", "ais_forward")
HIGHER_IS_BETTER = ("is_", "precision", "recall", "mode_coverage")
NOT_A_MODEL = ("nll_true_density",)  # the data density's own NLL: a reference, not a model's likelihood


# --- statistics --------------------------------------------------------------------------------------------------

def seed_interval(values: np.ndarray, n_boot: int = 2000, level: float = 0.95) -> tuple[float, float, str]:
    """A percentile bootstrap interval over seeds (Efron 1979) with >= 3 seeds, else min and max."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), "none"
    if len(values) < 3:
        return float(values.min()), float(values.max()), "min-max"
    rng = np.random.default_rng(0)  # the report is deterministic
    means = rng.choice(values, size=(n_boot, len(values)), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi), f"bootstrap {int(level * 100)}%"


def lower_is_better(metric: str) -> bool:
    return not metric.startswith(HIGHER_IS_BETTER)


def overlaps(lo: float, hi: float, best_lo: float, best_hi: float) -> bool:
    return bool(lo <= best_hi and best_lo <= hi)


def headline_metrics() -> list[str]:
    """The registry's headline quality metrics, 2D's reverse KL before image FID."""
    from ebmbench.builtins import SAMPLE_METRICS

    names = [n for n in SAMPLE_METRICS.names() if getattr(SAMPLE_METRICS.get(n), "headline", False)]
    rank = {m: i for i, m in enumerate(CURVE_HEADLINES)}
    return sorted(names, key=lambda m: (rank.get(m, len(rank)), m))


def headline_metric(frame: pd.DataFrame, dataset: str) -> str | None:
    """The dataset's headline quality metric: the first registry headline with an ok row on it."""
    have = set(frame.loc[(frame.dataset == dataset) & (frame.metric_status == "ok"), "metric"])
    return next((m for m in headline_metrics() if m in have), None)


def _meta(row_meta: object) -> dict:
    return row_meta if isinstance(row_meta, dict) else {}


def _stats(values: pd.Series) -> dict:
    v = values.to_numpy(dtype=float)
    lo, hi, interval = seed_interval(v)
    return {"mean": float(np.nanmean(v)) if np.isfinite(v).any() else math.nan, "low": lo, "high": hi,
            "interval": interval}


# --- the table ---------------------------------------------------------------------------------------------------

def _likelihood_rank(metric: str, kind: str | None) -> tuple[int, int]:
    suffix = re.sub(r"^(forward_kl|nll)_", "", metric)
    k = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    e = ESTIMATOR_ORDER.index(suffix) if suffix in ESTIMATOR_ORDER else len(ESTIMATOR_ORDER)
    return k, e


def likelihoods(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per method of the dataset: the one likelihood the board shows (its kind first, then its estimator, see
    KIND_ORDER and ESTIMATOR_ORDER), seed mean and interval; the paired forward KL where the data density is
    known. ``best`` and ``tie`` are decided within each kind, and only where a kind has two or more methods."""
    ok = frame[(frame.dataset == dataset) & (frame.metric_status == "ok") & ~frame.metric.isin(NOT_A_MODEL)]
    kinds = pd.Series([_meta(m).get("likelihood_kind") for m in ok["meta"]], index=ok.index, dtype=object)
    ok = ok.assign(kind=kinds)[kinds.notna()]
    if ok.empty:
        return pd.DataFrame(columns=["method", "lik_metric", "lik_kind", "lik_mean", "lik_low", "lik_high",
                                     "lik_interval", "lik_units", "lik_best", "lik_tie"])
    family = "forward_kl_" if ok.metric.str.startswith("forward_kl_").any() else "nll_"
    ok = ok[ok.metric.str.startswith(family)]
    rows = []
    for method, g in ok.groupby("method"):
        metric, kind = min({(m, k) for m, k in zip(g.metric, g.kind)}, key=lambda mk: _likelihood_rank(*mk))
        h = g[g.metric == metric]
        s = _stats(h.value)
        rows.append({"method": method, "lik_metric": metric, "lik_kind": kind,
                     **{f"lik_{k}": v for k, v in s.items()}, "lik_units": _meta(h.meta.iloc[0]).get("units", "")})
    table = pd.DataFrame(rows)
    table["lik_best"], table["lik_tie"] = False, False
    for _, g in table.groupby("lik_kind"):
        if len(g) < 2:
            continue
        best = g.lik_mean.idxmin()
        table.loc[best, "lik_best"] = True
        b = table.loc[best]
        for i, r in g.drop(index=best).iterrows():
            table.loc[i, "lik_tie"] = overlaps(r.lik_low, r.lik_high, b.lik_low, b.lik_high)
    return table


def _status(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:
    runs = frame[frame.dataset == dataset].drop_duplicates("run_id")
    counts = runs.groupby("method").run_status.value_counts().unstack(fill_value=0)
    for col in ("diverged", "failed"):
        if col not in counts:
            counts[col] = 0
    return counts[["diverged", "failed"]].reset_index()


BOARD_COLUMNS = ["dataset", "setting", "family", "method", "sampler", "metric", "mean", "low", "high", "interval",
                 "seeds", "n_samples", "floor", "best", "tie", "lik_metric", "lik_kind", "lik_mean", "lik_low",
                 "lik_high", "lik_interval", "lik_units", "lik_best", "lik_tie", "nfe", "amortized_nfe",
                 "ms_per_sample", "threads", "train_steps", "train_tflops", "train_s", "diverged", "failed",
                 "external", "stated_nfe"]
EXTERNAL_NOTE = ("external: samples scored from a file by `ebmbench evaluate`; nothing of their cost was counted "
                 "(an NFE their owner states is shown as stated, not counted)")


def leaderboard(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The dataset's leaderboard, numeric (the CSV): the floor row first, then one row per method / sampler in
    order of the headline metric (best first), with its likelihood, sampling cost and training compute.
    Empty when the dataset has no ok row of a headline metric."""
    metric = headline_metric(frame, dataset)
    if metric is None:
        return pd.DataFrame(columns=BOARD_COLUMNS)
    d = frame[(frame.dataset == dataset) & (frame.metric == metric) & (frame.metric_status == "ok")]
    rows = []
    for (family, method, sampler), g in d.groupby(["family", "method", "sampler"]):
        metas = [_meta(m) for m in g.meta]
        amortized = [m["amortized_nfe"] for m in metas if isinstance(m.get("amortized_nfe"), (int, float))]
        stated = [m["stated_nfe"] for m in metas if isinstance(m.get("stated_nfe"), (int, float))]
        rows.append({"dataset": dataset, "setting": f"{method} / {sampler}", "family": family, "method": method,
                     "sampler": sampler, "metric": metric, **_stats(g.value), "seeds": g.seed.nunique(),
                     "n_samples": g.n_samples.median(), "floor": np.nanmean([floor_of(m) for m in metas]),
                     "nfe": g.nfe.mean(), "amortized_nfe": float(np.mean(amortized)) if amortized else math.nan,
                     "ms_per_sample": 1e3 * g.wall_s_per_sample.mean(), "threads": g.threads.median(),
                     "train_steps": g.train_steps.median(), "train_tflops": g.train_flops.mean() / 1e12,
                     "train_s": g.train_wall_s.mean(), "external": any(m.get("external") is True for m in metas),
                     "stated_nfe": float(np.mean(stated)) if stated else math.nan})
    board = pd.DataFrame(rows)
    ascending = lower_is_better(metric)
    board = board.sort_values(["mean", "setting"], ascending=[ascending, True], ignore_index=True)
    board["best"], board["tie"] = board.index == 0, False
    b = board.iloc[0]
    board["tie"] = [i > 0 and overlaps(r.low, r.high, b.low, b.high) for i, r in board.iterrows()]
    board = board.merge(likelihoods(frame, dataset), on="method", how="left")
    board = board.merge(_status(frame, dataset), on="method", how="left")
    floors = board.floor.dropna()
    floor_row = {"dataset": dataset, "setting": FLOOR, "metric": metric, "mean": floors.mean() if len(floors)
                 else math.nan, "seeds": math.nan, "n_samples": board.n_samples.median(), "floor": math.nan}
    board = pd.concat([pd.DataFrame([floor_row]), board], ignore_index=True)
    for col in ("best", "tie", "lik_best", "lik_tie", "external"):
        board[col] = board[col].astype("boolean").fillna(False).astype(bool)
    return board.reindex(columns=BOARD_COLUMNS)


def leaderboards(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every dataset's leaderboard (datasets without a headline row left out), in dataset order."""
    boards = {ds: leaderboard(frame, ds) for ds in sorted(frame.dataset.dropna().unique())}
    return {ds: b for ds, b in boards.items() if len(b)}


# --- formatting ----------------------------------------------------------------------------------------------------

def decimals(x: float, significant: int = 3) -> int:
    """Decimals that show ``x`` to about ``significant`` significant digits (0 for large numbers)."""
    if not np.isfinite(x) or x == 0:
        return 2
    return int(min(6, max(0, significant - 1 - math.floor(math.log10(abs(x))))))


def fmt(x: float, digits: int | None = None) -> str:
    if x is None or not np.isfinite(x):
        return ""
    return f"{x:.{decimals(x) if digits is None else digits}f}"


def fmt_interval(mean: float, low: float, high: float) -> str:
    """'mean [low, high]', all three to the mean's decimals."""
    if not np.isfinite(mean):
        return ""
    d = decimals(mean)
    if not (np.isfinite(low) and np.isfinite(high)) or low == high == mean:
        return fmt(mean, d)
    return f"{fmt(mean, d)} [{fmt(low, d)}, {fmt(high, d)}]"


def fmt_cost(x: float) -> str:
    if x is None or not np.isfinite(x):
        return ""
    if float(x).is_integer() and abs(x) < 1e7:
        return f"{int(x)}"
    return f"{x:.3g}" if abs(x) < 1e5 else f"{x:.2e}"


UNITS = {"reverse_kl": "nats"}  # the headline metric's unit in the column header (FID has none)


def quality_header(metric: str) -> str:
    unit = f", {UNITS[metric]}" if metric in UNITS else ""
    return f"{metric}{unit} {'↓' if lower_is_better(metric) else '↑'}"


def likelihood_header(board: pd.DataFrame) -> str:
    metrics = board.lik_metric.dropna()
    if metrics.empty:
        return "likelihood"
    if metrics.str.startswith("forward_kl_").all():
        return "forward KL(p‖q), nats ↓"
    units = board.lik_units.dropna()
    return f"NLL, {units.iloc[0] if len(units) else 'nats'} ↓"


def display_frame(board: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The board as the strings a reader sees (index: setting) and a same-shaped frame of booleans that says
    which cells are the best of their column."""
    metric = board.metric.dropna().iloc[0]
    q, lik = quality_header(metric), likelihood_header(board)
    out, bold = [], []
    rest = board[board.setting != FLOOR]
    # a column's best is bold only where there is something to beat
    mins = {c: rest[c].min() if len(rest) > 1 else math.nan for c in ("nfe", "ms_per_sample", "train_tflops",
                                                                      "train_s")}
    for _, r in board.iterrows():
        floor = r.setting == FLOOR
        quality = fmt(r["mean"]) if floor else fmt_interval(r["mean"], r.low, r.high) + (f" {TIE}" if r.tie else "")
        lik_cell = "" if floor or pd.isna(r.lik_mean) else (fmt_interval(r.lik_mean, r.lik_low, r.lik_high)
                                                            + (f" {TIE}" if r.lik_tie else ""))
        runs = "" if floor else f"{int(r.seeds)}" + "".join(
            f" (+{int(r[k])} {k})" for k in ("diverged", "failed") if pd.notna(r[k]) and r[k] > 0)
        nfe = "" if floor else fmt_cost(r.nfe) + ("†" if np.isfinite(r.amortized_nfe) else "")
        external = not floor and bool(r.external)  # scored from a file: nothing of its cost was counted
        if external:
            nfe = f"{fmt_cost(r.stated_nfe)} (stated, not counted)" if np.isfinite(r.stated_nfe) else "not counted"
        out.append({"family": "" if floor else r.family, q: quality, "seeds": runs, lik: lik_cell,
                    "likelihood kind": "" if floor or pd.isna(r.lik_kind) else r.lik_kind,
                    "NFE": nfe, "ms / sample": "" if floor else fmt_cost(r.ms_per_sample),
                    "train steps": "" if floor or pd.isna(r.train_steps) else f"{int(r.train_steps)}",
                    "train TFLOPs": "" if floor else fmt_cost(r.train_tflops),
                    "train s": "" if floor else fmt_cost(r.train_s)})
        if external:
            out[-1].update({"family": "external", "ms / sample": "not counted", "train steps": "not counted",
                            "train TFLOPs": "not counted", "train s": "not counted"})
        bold.append({"family": False, q: bool(r.best) and len(rest) > 1, "seeds": False, lik: bool(r.lik_best),
                     "likelihood kind": False,
                     "NFE": not floor and r.nfe == mins["nfe"],
                     "ms / sample": not floor and r.ms_per_sample == mins["ms_per_sample"],
                     "train steps": False,
                     "train TFLOPs": not floor and r.train_tflops == mins["train_tflops"],
                     "train s": not floor and r.train_s == mins["train_s"]})
    index = pd.Index(board.setting.to_numpy())
    text, bold = pd.DataFrame(out, index=index), pd.DataFrame(bold, index=index)
    text.columns.name = bold.columns.name = "method / sampler"  # one header row: the name sits above the index
    return text, bold


def caption(board: pd.DataFrame, floor_definition: str = "") -> str:
    """What the board shows, from its rows: metric, N, seeds, floor, what "better" means, the marks."""
    rest = board[board.setting != FLOOR]
    metric, dataset = board.metric.dropna().iloc[0], board.dataset.iloc[0]
    seeds = sorted({int(s) for s in rest.seeds.dropna()})
    n = sorted({int(x) for x in rest.n_samples.dropna()})
    threads = sorted({int(t) for t in rest.threads.dropna()})
    floor = board.loc[board.setting == FLOOR, "mean"].iloc[0]
    seed_text = "1 seed (no interval)" if seeds == [1] else (
        f"{'/'.join(map(str, seeds)) or '?'} seeds [95 % bootstrap interval over seeds; min-max with fewer than 3]")
    parts = [f"{dataset}: {metric} of N = {', '.join(map(str, n)) or '?'} samples per setting, mean over "
             f"{seed_text}; {'lower' if lower_is_better(metric) else 'higher'} is better.",
             f"Floor {fmt(floor)}: {floor_definition or 'the same estimator on exact samples at equal N'}."
             if np.isfinite(floor) else "No floor recorded.",
             f"Bold: best of its column; {TIE}: its interval overlaps the best one's (a tie).",
             "Likelihood: the model's, labelled by kind and ranked only within a kind."]
    if rest.amortized_nfe.notna().any():
        amortized = ", ".join(f"{r.setting} {r.amortized_nfe:.0f}" for _, r in rest.iterrows()
                              if np.isfinite(r.amortized_nfe))
        parts.append(f"NFE: counted at draw time; † its samples were refined during training, amortized NFE "
                     f"per sample: {amortized}.")
    parts.append(f"ms / sample at {'/'.join(map(str, threads)) or '?'} thread(s); training compute: counted "
                 "matmul/conv FLOPs and wall clock to the run's budget.")
    if rest.external.any():
        parts.append(EXTERNAL_NOTE + ".")
    return " ".join(parts)


def floor_definition(frame: pd.DataFrame, dataset: str, metric: str) -> str:
    rows = frame[(frame.dataset == dataset) & (frame.metric == metric) & (frame.metric_status == "ok")]
    found = [_meta(m).get("floor_definition") for m in rows.meta]
    return next((f for f in found if f), "")


def styled(board: pd.DataFrame, caption_text: str = ""):  # -> pandas.io.formats.style.Styler
    """The board through pandas' Styler: best cells bold, ties shaded, the floor row in italics; the table
    carries ``class="leaderboard"`` and ``data-dataset`` so that a test can find it in the HTML."""
    text, bold = display_frame(board)
    dataset = board.dataset.iloc[0]
    css = bold.replace({True: "font-weight: bold", False: ""})
    tie_cols = [c for c in text.columns if c.endswith(("↓", "↑"))]
    for c in tie_cols:
        css[c] = [f"{b}; background-color: #eef3fb" if t.endswith(TIE) else b for b, t in zip(css[c], text[c])]
    styler = text.style.apply(lambda _: css, axis=None)
    styler = styler.apply(lambda r: ["font-style: italic; color: #555"] * len(r) if r.name == FLOOR else
                          [""] * len(r), axis=1)
    styler = styler.set_table_attributes(f'class="leaderboard" data-dataset="{dataset}"')
    styler = styler.set_uuid(re.sub(r"\W", "_", f"leaderboard_{dataset}"))  # stable ids: reports diff cleanly
    styler = styler.set_table_styles([
        {"selector": "caption", "props": "caption-side: bottom; text-align: left; font-size: 0.9em; "
                                         "color: #444; padding-top: 0.4em; max-width: 70em"},
        {"selector": "td, th", "props": "padding: 0.2em 0.6em; white-space: nowrap"},
        {"selector": "th.row_heading, th.index_name", "props": "text-align: left"},
    ], overwrite=False)
    if caption_text:
        styler = styler.set_caption(caption_text)
    return styler


def to_latex(board: pd.DataFrame, caption_text: str = "") -> str:
    """A booktabs LaTeX table of the board (best cells bold), ready for a paper."""
    text, bold = display_frame(board)
    dataset = board.dataset.iloc[0]
    css = bold.replace({True: "font-weight: bold", False: ""})
    styler = text.style.apply(lambda _: css, axis=None)
    styler = styler.format(escape="latex").format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    if caption_text:
        styler = styler.set_caption(caption_text.replace("%", r"\%").replace("_", r"\_"))
    tex = styler.to_latex(hrules=True, convert_css=True, position_float="centering",
                          label=f"tab:leaderboard-{re.sub(r'[^a-z0-9]+', '-', dataset.lower())}")
    for sym, macro in ((TIE, r"$\approx$"), ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"), ("‖", r"$\|$"),
                       ("†", r"$^\dagger$")):
        tex = tex.replace(sym, macro)
    return tex


def write_tables(frame: pd.DataFrame, folder: Path | str) -> dict[str, pd.DataFrame]:
    """Every dataset's leaderboard as CSV (numeric) and LaTeX (as displayed) under ``folder``
    (results/<suite>/tables/), and all of them in one leaderboards.csv; returns the boards."""
    from ebmbench.results import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    boards = leaderboards(frame)
    for ds, board in boards.items():
        cap = caption(board, floor_definition(frame, ds, board.metric.iloc[0]))
        atomic_write_text(folder / f"leaderboard_{ds}.csv", board.to_csv(index=False))
        atomic_write_text(folder / f"leaderboard_{ds}.tex", to_latex(board, cap))
    if boards:
        atomic_write_text(folder / "leaderboards.csv", pd.concat(boards.values()).to_csv(index=False))
    return boards


# --- the text summary ------------------------------------------------------------------------------------------------

def _versus_floor(mean: float, floor: float, floor_sd: float | None) -> str:
    """How far a value is from the floor: a ratio when the floor is well away from zero, else a difference."""
    if np.isfinite(floor) and floor > 0 and (floor_sd is None or not np.isfinite(floor_sd) or floor > 3 * floor_sd):
        return f"{mean / floor:.1f}× the floor"
    return f"{fmt(mean - floor, decimals(mean))} above the floor"


def _floor_sd(frame: pd.DataFrame, dataset: str, metric: str) -> float | None:
    rows = frame[(frame.dataset == dataset) & (frame.metric == metric) & (frame.metric_status == "ok")]
    sds = [_meta(m).get("floor_sd") for m in rows.meta]
    sds = [s for s in sds if isinstance(s, (int, float))]
    return float(np.mean(sds)) if sds else None


def _names(rows: pd.DataFrame, column: str = "mean") -> str:
    return ", ".join(f"{r.setting} ({fmt_interval(r[column], r.low, r.high)})" for _, r in rows.iterrows())


def summary(frame: pd.DataFrame, dataset: str, bullets: bool = False) -> str:
    """A few sentences on the dataset, generated from its rows (see ``summary_lines``); Markdown, one paragraph
    or, with ``bullets``, a list."""
    lines = summary_lines(frame, dataset)
    return "\n".join(f"- {line}" for line in lines) if bullets else " ".join(lines)


def summary_lines(frame: pd.DataFrame, dataset: str) -> list[str]:
    """The summary's sentences, generated from the dataset's rows: the leader and its interval, the ties and
    what the seeds resolve, the last setting against the floor, the likelihoods by kind, a 2D density against
    its own samplers, the cost of the cheapest setting tied with the leader, runs that did not finish."""
    board = leaderboard(frame, dataset)
    if board.empty:
        return [f"**{dataset}**: no ok row of a headline metric ({', '.join(headline_metrics())})."]
    metric, floor = board.metric.iloc[0], board["mean"].iloc[0]
    rest = board[board.setting != FLOOR].reset_index(drop=True)
    leader, ties = rest.iloc[0], rest[rest.tie]
    apart = rest.iloc[1:][~rest.tie.iloc[1:]]
    better = "lower" if lower_is_better(metric) else "higher"
    counts = sorted(int(s) for s in rest.seeds.unique())
    seeds = "/".join(map(str, counts)) + (" seed" if counts == [1] else " seeds")
    sd = _floor_sd(frame, dataset, metric)
    out = [f"**{leader.setting}** leads {metric} ({better} is better) with "
           f"{fmt_interval(leader['mean'], leader.low, leader.high)} over {seeds}"
           + (f", {_versus_floor(leader['mean'], floor, sd)} ({fmt(floor)})." if np.isfinite(floor) else ".")]
    if len(rest) > 1:
        if counts == [1]:
            out.append("One seed per setting: no interval over seeds, so no tie and no separation is claimed.")
        else:
            tied = f"Tied with it (95 % intervals overlap): {_names(ties)}. " if len(ties) else ""
            out.append(tied + (f"The seeds separate it from {len(apart)} of the other {len(rest) - 1} settings."
                               if len(apart) else "The seeds separate it from none of the other settings."))
        last = rest.iloc[-1]
        if np.isfinite(floor):
            out.append(f"Last: {last.setting} at {fmt_interval(last['mean'], last.low, last.high)}, "
                       f"{_versus_floor(last['mean'], floor, sd)}.")
    lik = likelihoods(frame, dataset)
    if len(lik):
        what = "forward KL(p‖q)" if lik.lik_metric.str.startswith("forward_kl_").all() else "NLL"
        parts = []
        for kind in [k for k in KIND_ORDER if k in set(lik.lik_kind)] + sorted(set(lik.lik_kind) - set(KIND_ORDER)):
            g = lik[lik.lik_kind == kind].sort_values("lik_mean")
            cells = ", ".join(f"{r.method} {fmt_interval(r.lik_mean, r.lik_low, r.lik_high)}"
                              for _, r in g.iterrows())
            parts.append(f"{kind}: {cells}" + (" (lowest first)" if len(g) > 1 else ""))
        out.append(f"Likelihood ({what}, {lik.lik_units.iloc[0] or 'nats'}; ranked within a kind only): "
                   + "; ".join(parts) + ".")
    out += _density_vs_samplers(frame, dataset, metric)
    tied = pd.concat([rest.iloc[[0]], ties])
    cheapest = tied.sort_values(["nfe", "ms_per_sample"]).iloc[0]
    amortized = (f", amortized {cheapest.amortized_nfe:.0f} during training"
                 if np.isfinite(cheapest.amortized_nfe) else "")
    if np.isfinite(cheapest.nfe):
        out.append(f"Cheapest of the leader{' and its ties' if len(ties) else ''}: {cheapest.setting}, "
                   f"{fmt_cost(cheapest.nfe)} NFE per sample{amortized}, {fmt_cost(cheapest.ms_per_sample)} ms.")
    bad = rest[(rest.diverged.fillna(0) > 0) | (rest.failed.fillna(0) > 0)].drop_duplicates("method")
    for _, r in bad.iterrows():
        out.append(f"{r.method}: {int(r.diverged)} diverged and {int(r.failed)} failed run(s), not in its means.")
    return out


def _density_vs_samplers(frame: pd.DataFrame, dataset: str, metric: str) -> list[str]:
    """2D models with a density: KL(q_theta||p) of the density itself (quadrature) beside its samplers' samples."""
    ok = frame[(frame.dataset == dataset) & (frame.metric_status == "ok")]
    model = ok[ok.metric == "kl_model_data"]
    if model.empty or metric != "reverse_kl":
        return []
    out = []
    for method, g in model.groupby("method"):
        s = _stats(g.value)
        samples = ok[(ok.method == method) & (ok.metric == metric)].groupby("sampler").value.mean().sort_values()
        if samples.empty:
            continue
        lo, hi = samples.iloc[0], samples.iloc[-1]
        reach = (f"{samples.index[0]} {fmt(lo)} to {samples.index[-1]} {fmt(hi)}" if len(samples) > 1
                 else f"{samples.index[0]} {fmt(lo)}")
        out.append(f"{method}'s own density is {fmt_interval(s['mean'], s['low'], s['high'])} nats from the truth "
                   f"by quadrature (KL(q_θ‖p)); its samplers' samples are at {reach} ({metric}).")
    return out
