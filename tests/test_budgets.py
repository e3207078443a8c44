"""Budgets where learning curves flatten (ebmbench.curves) and the report's curve figure, on hand-built rows."""

from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest

from ebmbench import curves, plots

matplotlib.use("Agg")


def test_flattening_step_relative_rule():
    steps = [100, 200, 400, 800, 1600]
    excess = [4.0, 2.0, 1.0, 0.97, 0.96]  # 50 %, 50 %, then 3 % < 5 %: flattened at 400
    assert curves.flattening_step(steps, excess, [0.0] * 5) == (400, True)


def test_flattening_step_waits_for_the_curve_to_stay_flat():
    steps = [100, 200, 400, 800, 1600]
    excess = [1.0, 0.98, 0.5, 0.49, 0.485]  # a plateau at 100 -> 200, then a real gain: flat only from 400
    assert curves.flattening_step(steps, excess, [0.0] * 5) == (400, True)
    # each doubling inside 2 SE (0.057), the fall from the first point outside them: not flat there
    slow = [0.08, 0.04, 0.035, 0.0]
    assert curves.flattening_step(steps[:4], slow, [0.02] * 4) == (200, True)
    worse = [1.0, 0.5, 0.6, 0.7, 0.8]  # gets worse after 200 (an EBM whose chains stop mixing): budget 200
    assert curves.flattening_step(steps, worse, [0.0] * 5) == (200, True)


def test_flattening_step_noise_rule_and_still_improving():
    steps = [100, 200, 400]
    excess = [1.0, 0.8, 0.6]
    assert curves.flattening_step(steps, excess, [0.01] * 3) == (400, False)  # every doubling gains 20 %
    # each doubling inside 2 standard errors of a difference (2 * sqrt(0.1^2 + 0.1^2) = 0.28 > 0.2), but
    # 100 -> 400 gains 0.4, outside them: flat from 200, which nothing later beats by more than 0.28
    assert curves.flattening_step(steps, excess, [0.1] * 3) == (200, True)


def _rows(method: str, values: list[float], seed: int = 0, stderr: float = 0.01) -> list[dict]:
    return [{"dataset": "eight_gaussians", "family": "diffusion", "method": method, "sampler": "ddim", "seed": seed,
             "metric": "reverse_kl", "metric_status": "ok", "value": v, "stderr": stderr,
             "meta": {"floor": 0.05, "floor_sd": 0.02}, "train_step": 2**i * 100, "train_flops": 2**i * 1e9,
             "train_wall_s": 2**i * 0.5, "threads": 1} for i, v in enumerate(values)]


def test_curve_table_and_budgets_from_rows():
    frame = pd.DataFrame(_rows("ddpm", [2.05, 1.05, 0.55, 0.54, 0.53]) + _rows("ddpm", [2.05, 1.05, 0.55, 0.56, 0.53],
                                                                                   seed=1))
    table = curves.curve_table(frame)
    first = table[table.train_step == 100].iloc[0]
    assert first.value == pytest.approx(2.05) and first.floor == pytest.approx(0.05)
    assert first.excess == pytest.approx(2.0) and first.seeds == 2
    assert first.se == pytest.approx(math.sqrt(0.01**2 / 2))  # the metric's own error; the seeds agree here
    b = curves.budgets(table).iloc[0]
    assert b.budget_steps == 400 and bool(b.flattened) and b.train_flops_at_budget == pytest.approx(4e9)
    assert b.value_at_end == pytest.approx(0.53) and b.steps_trained == 1600


def test_headline_metric_prefers_reverse_kl_then_fid():
    frame = pd.DataFrame([{"dataset": "d", "metric": m, "metric_status": "ok"} for m in ("mode_tv", "fid_domain")])
    assert curves.headline_metric(frame, "d") == "fid_domain"
    assert curves.headline_metric(frame, "other") is None


def test_learning_curve_figure_marks_budgets():
    frame = pd.DataFrame(_rows("ddpm", [2.05, 1.05, 0.55, 0.54]) + _rows("ncsn", [3.0, 2.0, 1.5, 1.4]))
    table = curves.curve_table(frame)
    fig = plots.quality_vs_training_compute(table, curves.budgets(table))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "FLOPs" in ax.get_xlabel()
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 2  # one budget per method
    assert plots.quality_vs_training_compute(table.iloc[0:0]) is None


def test_density_curve_is_drawn_beside_the_samplers_but_never_sets_the_budget():
    density = [{**r, "metric": "kl_model_data", "sampler": None, "stderr": None, "meta": {}}
               for r in _rows("pcd_ebm", [0.5, 0.2, 0.1, 0.05])]
    frame = pd.DataFrame(_rows("pcd_ebm", [2.0, 1.5, 1.2, 1.1]) + density)
    table = curves.curve_table(frame)
    drawn = table[table.sampler == "density (quadrature)"]
    assert len(drawn) == 4 and (drawn.floor == 0).all() and drawn.value.min() == pytest.approx(0.05)
    assert curves.budgets(table).sampler.tolist() == ["ddim"]


def test_one_seed_without_a_metric_error_has_no_standard_error_and_uses_the_relative_rule():
    rows = [{**r, "metric": "fid_domain", "dataset": "digits", "stderr": None, "meta": {"floor": 13.0}}
            for r in _rows("ddpm", [60.0, 30.0, 20.0, 19.8])]
    table = curves.curve_table(pd.DataFrame(rows))
    assert table.se.isna().all()
    assert curves.budgets(table).budget_steps.iloc[0] == 400  # 20 -> 19.8 gains 3 % of the excess 7


def test_report_ladder_table_lists_the_passed_headline_metrics_first():
    from ebmbench import report

    table = report.ladder_table()
    passed = table[table.ladder == "passed"]
    assert set(passed.metric) == {"reverse_kl", "fid_domain"} and passed.headline.all()
    assert list(table.index[: len(passed)]) == list(passed.index)  # passed first, then failed, then untested
    assert set(table[table.ladder == "failed"].metric) >= {"mmd2", "energy_distance", "mode_coverage"}
