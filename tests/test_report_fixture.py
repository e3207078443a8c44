"""The report and the reproduction notebook on a fixture of measured rows, including rows that match
published CIFAR-10 numbers, and the reproduction logic against hand-made rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ebmbench import leaderboard, report, reproduce
from ebmbench.results import MetricValue, atomic_write_json, load_results, make_rows, provenance


def write_run(suite_dir: Path, run_id: str, method: str, dataset: str, seed: int, values: list[MetricValue],
              status: str = "ok", family: str = "f", train: tuple[int, float, float | None] = (10, 1.0, None)) -> None:
    """One run's result.json; ``train`` = (steps, wall clock in s, counted FLOPs)."""
    steps, wall_s, flops = train
    run = {"run_id": run_id, "suite": suite_dir.name, "dataset": dataset, "dataset_hash": "h", "family": family,
           "method": method, "seed": seed, "run_status": status, "train_steps": steps, "train_wall_s": wall_s,
           "train_flops": flops, "threads": 1, "config_hash": run_id, **provenance("cpu")}
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


@pytest.mark.slow
def test_reproduction_renders_html(fixture_suite):
    html = report.render(fixture_suite, "reproduce.ipynb")  # the report itself: tests/test_report_html.py
    text = html.read_text()
    assert "5.24" in text and "Ho 2020" in text and report.html_problems(text) == []


def test_runs_of_the_manifest_without_a_result_are_listed(tmp_path):
    suite = tmp_path / "s"
    write_run(suite, "done", "ddpm", "eight_gaussians", 0, [mmd(0.1, "ddim", 10)])
    atomic_write_json(suite / "suite.json", {"name": "s", "run_ids": ["done", "never_ran"]})
    assert report.missing_runs(suite) == ["never_ran"]
    assert set(load_results(suite).run_id) == {"done"}


def test_headline_figure_keeps_colours_and_markers_across_panels_and_names_zero_cost_settings(fixture_suite,
                                                                                           tmp_path):
    from ebmbench import plots

    frame = load_results(fixture_suite)
    buffer = frame[(frame.dataset == "eight_gaussians") & (frame.sampler == "ddim@10")].copy()
    buffer["sampler"], buffer["flops_per_sample"], buffer["value"] = "replay_buffer", 0.0, 0.03
    fig = plots.quality_vs_cost(pd.concat([frame, buffer]), tmp_path / "qvc.png")
    row = sorted(frame.dataset.unique()).index("eight_gaussians")  # one panel row per dataset: NFE, FLOPs
    nfe, flops = fig.axes[2 * row], fig.axes[2 * row + 1]
    assert nfe.get_title(loc="left") == "eight_gaussians" and "lower is better" in nfe.get_ylabel()

    def styles(ax):
        return {ln.get_label(): (ln.get_color(), ln.get_marker(), ln.get_fillstyle()) for ln in ax.get_lines()
                if not ln.get_label().startswith("_") and ln.get_marker() not in ("None", "")}

    upper, lower = styles(nfe), styles(flops)
    assert "ddpm / replay_buffer" in upper and "ddpm / replay_buffer" not in lower  # 0 FLOPs: no log position
    assert "not shown: ddpm / replay_buffer" in flops.get_xlabel()  # ... so it is named under the axis
    shared = set(upper) & set(lower)
    assert len(shared) >= 3 and all(upper[k] == lower[k] for k in shared)
    # one family, one colour; one sampler, one marker; a second budget of a sampler, another fill
    assert upper["ddpm / ddim@10"][:2] == upper["ddpm / ddim@100"][:2]
    assert upper["ddpm / ddim@10"][2] != upper["ddpm / ddim@100"][2]
    assert upper["short_run_ebm / langevin@20"][1] == upper["short_run_ebm / langevin@200"][1] == "v"
    legend = flops.get_legend()
    assert legend is not None and {t.get_text() for t in legend.get_texts()} >= set(upper)  # beside the panels
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 9
    assert min(lbl.get_fontsize() for lbl in nfe.get_xticklabels() + [nfe.xaxis.label, nfe.yaxis.label]) >= 9


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


# --- leaderboards and their generated summaries, on a fixture of headline rows ---------------------------------------

FAMILY = {"pcd_ebm": "ebm", "ddpm": "diffusion", "ncsn": "score", "sngan": "gan"}
TRAIN = {"pcd_ebm": (8192, 114.0, 3.6e12), "ddpm": (16384, 48.0, 0.9e12), "ncsn": (32768, 89.0, 1.8e12),
         "sngan": (8192, 72.0, 1.7e12)}
# eight_gaussians: reverse KL (nats) per sampler and seed, its NFE; floor 0.05 (SD 0.02: the summary gives
# differences, not ratios); digits: FID with a floor of 10 (no SD: ratios)
TOY = {("pcd_ebm", "mala"): ([0.06, 0.07, 0.08], 101), ("pcd_ebm", "replay_buffer"): ([0.065, 0.085, 0.105], 0),
       ("pcd_ebm", "langevin@100"): ([0.30, 0.32, 0.34], 100), ("ddpm", "ddpm"): ([0.10, 0.12, 0.14], 1000),
       ("ncsn", "annealed_langevin"): ([0.25, 0.25, 0.25], 201), ("sngan", "generator"): ([1.04, 1.05, 1.06], 1)}
DIGITS = {("ddpm", "ddpm"): ([20.0, 22.0, 24.0], 100), ("pcd_ebm", "replay_buffer"): ([25.0, 27.0, 29.0], 0),
          ("sngan", "generator"): ([40.0, 41.0, 42.0], 1)}
# the model's likelihood per method and seed: (metric, kind, values); the data density's own NLL is no model's
TOY_LIK = {"pcd_ebm": [("forward_kl_heldout", "exact", [0.07, 0.08, 0.09]),
                       ("forward_kl_ais_forward", "lower bound", [0.01, 0.02, 0.03])],
           "ddpm": [("forward_kl_pf_ode", "exact", [0.05, 0.06, 0.07]),
                    ("forward_kl_elbo", "upper bound", [1.1, 1.2, 1.3])],
           "ncsn": [("forward_kl_pf_ode", "estimate", [1.4, 1.5, 1.6])]}
DIGITS_LIK = {"ddpm": [("nll_pf_ode", "upper bound", [100.0, 101.0, 102.0])],
              "pcd_ebm": [("nll_ais_forward", "estimate", [190.0, 197.0, 204.0])]}


def headline_value(metric: str, value: float, sampler: str, nfe: int, floor: dict) -> MetricValue:
    meta = {**floor, "floor_definition": "the same estimator on exact samples at equal N",
            **({"amortized_nfe": 200.0} if sampler == "replay_buffer" else {})}
    return MetricValue(metric, value, sampler=sampler, n_samples=1000 if metric == "reverse_kl" else 500, meta=meta,
                       cost={"nfe": nfe, "flops_per_sample": 1e5 * nfe, "wall_s_per_sample": 1e-4 * max(nfe, 1)})


def write_leaderboard_suite(suite: Path) -> Path:
    """Three seeds of four families on eight_gaussians (reverse KL) and digits (FID), with likelihoods of each
    kind, the EBM density's own KL by quadrature, and one diverged NCSN run."""
    for dataset, settings, liks, metric, floor in (
            ("eight_gaussians", TOY, TOY_LIK, "reverse_kl", {"floor": 0.05, "floor_sd": 0.02}),
            ("digits", DIGITS, DIGITS_LIK, "fid_domain", {"floor": 10.0})):
        for seed in range(3):
            for method in sorted({m for m, _ in settings}):
                values = [headline_value(metric, v[seed], s, nfe, floor)
                          for (m, s), (v, nfe) in settings.items() if m == method]
                values += [MetricValue(name, v[seed], 0.01, n_samples=500, meta={"likelihood_kind": kind,
                                                                                  "units": "nats"})
                           for name, kind, v in liks.get(method, [])]
                if dataset == "eight_gaussians":
                    values.append(MetricValue("nll_true_density", 1.72, 0.01, meta={"likelihood_kind": "exact"}))
                if (dataset, method) == ("eight_gaussians", "pcd_ebm"):
                    values.append(MetricValue("kl_model_data", [0.04, 0.05, 0.06][seed], meta={"units": "nats"}))
                write_run(suite, f"{dataset}_{method}_{seed}", method, dataset, seed, values,
                          family=FAMILY[method], train=TRAIN[method])
    write_run(suite, "eight_gaussians_ncsn_3", "ncsn", "eight_gaussians", 3,
              [MetricValue("run", None, status="failed", reason="diverged at step 5: non-finite loss")], "diverged",
              family="score", train=TRAIN["ncsn"])
    return suite


@pytest.fixture(scope="module")
def leaderboard_frame(tmp_path_factory) -> pd.DataFrame:
    return load_results(write_leaderboard_suite(tmp_path_factory.mktemp("boards") / "boards"))


def cell(values: list[float]) -> str:
    """What the report should print for these seeds: mean [95 % bootstrap interval over seeds]."""
    lo, hi, _ = report.seed_interval(pd.Series(values).to_numpy())
    return leaderboard.fmt_interval(sum(values) / len(values), lo, hi)


def test_leaderboard_ranks_settings_marks_best_and_ties_and_never_ranks_likelihoods_across_kinds(leaderboard_frame):
    board = leaderboard.leaderboard(leaderboard_frame, "eight_gaussians").set_index("setting")
    assert list(board.index) == ["floor", "pcd_ebm / mala", "pcd_ebm / replay_buffer", "ddpm / ddpm",
                                 "ncsn / annealed_langevin", "pcd_ebm / langevin@100", "sngan / generator"]
    assert board.loc["floor", "mean"] == pytest.approx(0.05) and board.loc["pcd_ebm / mala", "mean"] == 0.07
    assert board.index[board.best].tolist() == ["pcd_ebm / mala"]
    assert board.index[board.tie].tolist() == ["pcd_ebm / replay_buffer"]  # [0.065, 0.105] overlaps the best's
    # the exact likelihood is shown where a model has one; the exact kind ranks ddpm over pcd_ebm, while
    # ncsn's estimate and the data's own NLL (nll_true_density) are ranked against nothing
    assert board.loc["pcd_ebm / mala", "lik_metric"] == "forward_kl_heldout"
    assert board.loc["ddpm / ddpm", ["lik_kind", "lik_best"]].tolist() == ["exact", True]
    assert board.loc["ncsn / annealed_langevin", ["lik_kind", "lik_best", "lik_tie"]].tolist() == [
        "estimate", False, False]
    assert pd.isna(board.loc["sngan / generator", "lik_mean"])
    assert board.loc["pcd_ebm / replay_buffer", ["nfe", "amortized_nfe"]].tolist() == [0, 200]
    assert board.loc["ddpm / ddpm", "train_tflops"] == pytest.approx(0.9) and board.loc["ddpm / ddpm", "seeds"] == 3
    assert board.loc["ncsn / annealed_langevin", "diverged"] == 1
    text, bold = leaderboard.display_frame(board.reset_index())
    quality = "reverse_kl, nats ↓"
    assert text.loc["pcd_ebm / mala", quality] == cell([0.06, 0.07, 0.08]) and bold.loc["pcd_ebm / mala", quality]
    assert text.loc["pcd_ebm / replay_buffer", quality].endswith("≈")
    assert text.loc["pcd_ebm / replay_buffer", "NFE"] == "0†" and bold.loc["pcd_ebm / replay_buffer", "NFE"]
    assert text.loc["ncsn / annealed_langevin", "seeds"] == "3 (+1 diverged)"


def test_summary_is_generated_from_the_rows(leaderboard_frame):
    toy = leaderboard.summary(leaderboard_frame, "eight_gaussians")
    assert toy.startswith(f"**pcd_ebm / mala** leads reverse_kl (lower is better) with {cell([0.06, 0.07, 0.08])} "
                          "over 3 seeds, 0.0200 above the floor (0.0500).")
    assert f"Tied with it (95 % intervals overlap): pcd_ebm / replay_buffer ({cell([0.065, 0.085, 0.105])})." in toy
    assert "The seeds separate it from 4 of the other 5 settings." in toy
    assert f"Last: sngan / generator at {cell([1.04, 1.05, 1.06])}, 1.00 above the floor." in toy
    assert (f"exact: ddpm {cell([0.05, 0.06, 0.07])}, pcd_ebm {cell([0.07, 0.08, 0.09])} (lowest first); "
            f"estimate: ncsn {cell([1.4, 1.5, 1.6])}.") in toy
    assert f"pcd_ebm's own density is {cell([0.04, 0.05, 0.06])} nats from the truth by quadrature" in toy
    assert "mala 0.0700 to langevin@100 0.320" in toy
    assert ("Cheapest of the leader and its ties: pcd_ebm / replay_buffer, 0 NFE per sample, amortized 200 during "
            "training") in toy
    assert "ncsn: 1 diverged and 0 failed run(s)" in toy
    assert "1.72" not in toy  # the data density's own NLL is no model's likelihood
    digits = leaderboard.summary(leaderboard_frame, "digits")
    assert digits.startswith(f"**ddpm / ddpm** leads fid_domain (lower is better) with {cell([20.0, 22.0, 24.0])} "
                             "over 3 seeds, 2.2× the floor (10.0).")
    assert "Last: sngan / generator at 41.0 [40.0, 42.0], 4.1× the floor." in digits
    assert f"upper bound: ddpm {cell([100.0, 101.0, 102.0])}; estimate: pcd_ebm" in digits
    bullets = leaderboard.summary(leaderboard_frame, "digits", bullets=True).splitlines()
    assert len(bullets) >= 4 and all(b.startswith("- ") for b in bullets)


def test_tables_are_written_as_csv_and_latex(leaderboard_frame, tmp_path):
    boards = leaderboard.write_tables(leaderboard_frame, tmp_path / "tables")
    assert list(boards) == ["digits", "eight_gaussians"]
    csv = pd.read_csv(tmp_path / "tables" / "leaderboard_eight_gaussians.csv")
    assert csv.setting.iloc[0] == "floor" and csv.loc[csv.best, "setting"].tolist() == ["pcd_ebm / mala"]
    assert len(pd.read_csv(tmp_path / "tables" / "leaderboards.csv")) == len(csv) + len(boards["digits"])
    tex = (tmp_path / "tables" / "leaderboard_eight_gaussians.tex").read_text()
    assert r"\toprule" in tex and r"\bfseries " + cell([0.06, 0.07, 0.08]) in tex and r"$\approx$" in tex
    assert r"pcd\_ebm / replay\_buffer" in tex and r"\caption{" in tex and "≈" not in tex


def test_leaderboards_take_empty_gan_only_and_headline_free_frames(leaderboard_frame):
    gan = leaderboard_frame[leaderboard_frame.method == "sngan"]
    for rows in (leaderboard_frame.iloc[:0], gan, leaderboard_frame[leaderboard_frame.metric != "reverse_kl"],
                 leaderboard_frame[leaderboard_frame.metric_status != "ok"]):
        boards = leaderboard.leaderboards(rows)
        for ds in ("eight_gaussians", "digits"):
            assert isinstance(leaderboard.summary(rows, ds), str)
            if ds in boards:
                leaderboard.styled(boards[ds]).to_html()
    assert "no ok row of a headline metric" in leaderboard.summary(gan.iloc[:0], "digits")
    assert leaderboard.summary(gan, "digits").startswith("**sngan / generator** leads")
