"""The report and the reproduction notebook on a fixture of measured rows, including rows that match
published CIFAR-10 numbers, and the reproduction logic against hand-made rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ebmbench import report, reproduce
from ebmbench.results import MetricValue, atomic_write_json, load_results, make_rows, provenance


def write_run(suite_dir: Path, run_id: str, method: str, dataset: str, seed: int, values: list[MetricValue],
              status: str = "ok") -> None:
    run = {"run_id": run_id, "suite": suite_dir.name, "dataset": dataset, "dataset_hash": "h", "family": "f",
           "method": method, "seed": seed, "run_status": status, "train_steps": 10, "train_wall_s": 1.0,
           "train_flops": None, "threads": 1, "config_hash": run_id, **provenance("cpu")}
    atomic_write_json(suite_dir / "runs" / run_id / "result.json",
                      {"schema_version": 1, "run_id": run_id, "run_status": status, "rows": make_rows(run, values)})


def fid(value: float, sampler: str, nfe: int, comparable: bool) -> MetricValue:
    meta = {"comparable": comparable, "comparable_reason": "test-set reference, 50000 samples, Inception",
            "floor": 2.0}
    return MetricValue("fid_inception", value, sampler=sampler, n_samples=50000,
                       cost={"nfe": nfe, "flops_per_sample": 1e9 * nfe, "wall_s_per_sample": 0.01}, meta=meta)


def mmd(value: float, sampler: str, nfe: int) -> MetricValue:
    return MetricValue("mmd2", value, sampler=sampler, n_samples=1000, meta={"floor": 0.0},
                       cost={"nfe": nfe, "flops_per_sample": 1e5 * nfe, "wall_s_per_sample": 0.001})


@pytest.fixture(scope="module")
def fixture_suite(tmp_path_factory) -> Path:
    suite = tmp_path_factory.mktemp("fixture") / "fixture"
    for seed in range(3):
        write_run(suite, f"cifar_ddpm_{seed}", "ddpm", "cifar10", seed,
                  [fid(5.0 + seed, "ddim@10", 10, True), fid(4.0, "ddim@100", 100, True)])
        write_run(suite, f"cifar_sngan_{seed}", "sngan", "cifar10", seed, [fid(22.0 + seed, "generator", 1, False)])
        write_run(suite, f"toy_ddpm_{seed}", "ddpm", "eight_gaussians", seed,
                  [mmd(0.05, "ddim@10", 10), mmd(0.01, "ddim@100", 100)])
        write_run(suite, f"toy_sr_{seed}", "short_run_ebm", "eight_gaussians", seed,
                  [mmd(0.01, "langevin@20", 20), mmd(0.08, "langevin@200", 200)])
    write_run(suite, "toy_sr_diverged", "short_run_ebm", "eight_gaussians", 3,
              [MetricValue("run", None, status="failed", reason="diverged at step 5: non-finite loss")], "diverged")
    return suite


def test_reproduction_puts_published_numbers_beside_measured_ones(fixture_suite):
    frame = load_results(fixture_suite)
    matched = reproduce.side_by_side(frame, reproduce.published())
    ddpm = matched[(matched.method == "ddpm") & (matched.metric == "fid_inception")].iloc[0]
    assert ddpm.published == "5.24" and ddpm.comparable and ddpm.measured == pytest.approx((5 + 6 + 7 + 4 * 3) / 6)
    sngan = matched[matched.method == "sngan"].iloc[0]
    assert sngan.published == "21.7" and "Miyato 2018" in sngan.paper


def test_published_findings_are_checked_from_rows(fixture_suite):
    frame = load_results(fixture_suite)
    steps = reproduce.ddim_quality_by_steps(frame)
    holds = reproduce.finding_holds(steps)
    toy = holds[holds.dataset == "eight_gaussians"].iloc[0]
    assert (toy.fewest_steps, toy.most_steps) == (10, 100) and toy.holds
    long = reproduce.long_run_degradation(frame).iloc[0]
    assert (long.K, long.long) == (20, 200) and long.degrades


def test_tables_count_diverged_seeds_and_use_bootstrap_intervals(fixture_suite):
    frame = load_results(fixture_suite)
    table = report.metric_table(frame, metrics=("mmd2", "fid_inception"))
    sr = table[(table.method == "short_run_ebm") & (table.sampler == "langevin@20")].iloc[0]
    assert sr.diverged == 1 and sr.seeds == 3 and sr.interval == "bootstrap 95%"
    lo, hi, kind = report.seed_interval(pd.Series([1.0, 2.0]).to_numpy())
    assert (lo, hi, kind) == (1.0, 2.0, "min-max")


def test_report_and_reproduction_render_html_and_figures(fixture_suite):
    for name in ("report", "reproduce"):
        html = report.render(fixture_suite, f"{name}.ipynb")
        assert html.stat().st_size > 10_000
    text = (fixture_suite / "reproduce.html").read_text()
    assert "5.24" in text and "Ho 2020" in text
    for fig in ("quality_vs_cost.png", "quality_vs_cost.svg"):
        assert (fixture_suite / "figures" / fig).exists()


def test_runs_of_the_manifest_without_a_result_are_listed(tmp_path):
    suite = tmp_path / "s"
    write_run(suite, "done", "ddpm", "eight_gaussians", 0, [mmd(0.1, "ddim", 10)])
    atomic_write_json(suite / "suite.json", {"name": "s", "run_ids": ["done", "never_ran"]})
    assert report.missing_runs(suite) == ["never_ran"]
    assert set(load_results(suite).run_id) == {"done"}


def test_headline_figure_keeps_colours_across_rows_and_names_zero_cost_settings(fixture_suite, tmp_path):
    from ebmbench import plots

    frame = load_results(fixture_suite)
    buffer = frame[(frame.dataset == "eight_gaussians") & (frame.sampler == "ddim@10")].copy()
    buffer["sampler"], buffer["flops_per_sample"], buffer["value"] = "replay_buffer", 0.0, 0.03
    fig = plots.quality_vs_cost(pd.concat([frame, buffer]), tmp_path / "qvc.png")
    column = sorted(frame.dataset.unique()).index("eight_gaussians")
    top, bottom = fig.axes[column], fig.axes[len(fig.axes) // 2 + column]

    def colour_by_value(ax):
        points = ax.collections[0]
        return {round(float(y), 6): tuple(c) for (_, y), c in zip(points.get_offsets(), points.get_facecolors())}

    upper, lower = colour_by_value(top), colour_by_value(bottom)
    assert 0.03 in upper and 0.03 not in lower  # zero FLOPs cannot sit on a log axis ...
    assert any("not shown: ddpm / replay_buffer" in t.get_text() for t in bottom.texts)  # ... so it is named
    shared = set(upper) & set(lower)
    assert len(shared) >= 3 and all(upper[v] == lower[v] for v in shared)


def test_estimator_cost_column_reads_each_estimators_own_key(tmp_path):
    suite = tmp_path / "lik"
    exact = MetricValue("nll_heldout", 2.0, 0.01, meta={"likelihood_kind": "exact"})
    estimates = [
        MetricValue("nll_ais_forward", 1.9, 0.02, meta={"likelihood_kind": "lower bound", "nfe_per_chain": 701,
                                                        "nfe_unit": "one energy evaluation", "wall_s": 1.0}),
        MetricValue("nll_ais_reverse", 2.1, 0.02, meta={"likelihood_kind": "upper bound", "nfe_per_chain": 701,
                                                        "nfe_unit": "one energy evaluation"}),
        MetricValue("nll_pf_ode", 2.05, 0.01, meta={"likelihood_kind": "estimate", "nfe_per_solve": 86.0,
                                                    "nfe_per_point": 172.0}),
        MetricValue("nll_elbo", 2.4, 0.03, meta={"likelihood_kind": "upper bound", "nfe_per_point": 1000}),
    ]
    write_run(suite, "toy_ebm_0", "pcd_ebm", "eight_gaussians", 0, [exact, *estimates])
    table = report.estimator_vs_exact(load_results(suite)).set_index("estimator")
    assert table.nfe.notna().all() and table.nfe_unit.notna().all()
    assert table.loc["nll_ais_forward", "nfe"] == 701 and "AIS chain" in table.loc["nll_ais_forward", "nfe_unit"]
    assert table.loc["nll_pf_ode", "nfe"] == 172 and table.loc["nll_elbo", "nfe_unit"].endswith("per test point")
    assert report.estimator_cost({"nfe_per_solve": 86.0}) == (86.0, report.estimator_cost({"nfe_per_solve": 86})[1])
    assert table.loc["nll_elbo", "error"] == pytest.approx(0.4)
