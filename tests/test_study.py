"""The study (issue 15): search spaces and their draws, trial expansion at equal FLOPs, the divergence rule, the
budget curve's expected best (against enumeration and a closed form) and the Wilson interval (against scipy)."""

from __future__ import annotations

import itertools
import math
import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from ebmbench import config as config_mod
from ebmbench import study
from ebmbench.builtins import METHODS
from ebmbench.suites import SuiteError, load_suite

STUDIED = ("pcd_ebm", "short_run_ebm", "cdk_ebm", "dsm_ebm", "ssm_ebm", "nce_ebm", "ddpm", "ncsn", "sngan",
           "wgan_gp", "realnvp")
SPACE = {"lr": ("log", 1e-4, 1e-2), "ema_decay": ("linear", 0.9, 0.99), "batch_size": ("int", 2, 5),
         "train_steps": ("int_log", 1, 15), "eval_weights": ("choice", "ema", "raw")}


@pytest.mark.parametrize("method", STUDIED)
def test_every_studied_method_declares_a_valid_space_whose_draws_resolve(method):
    assert study.space_problems(method) == []
    drawn = study.draw(study.space_of(method), 7)
    assert set(drawn) == set(study.space_of(method))
    cfg = config_mod.resolve({"dataset": "eight_gaussians", "method": method, **drawn})
    flat = cfg.flat_params()
    assert all(flat[k] == v for k, v in drawn.items())


def test_draws_are_reproducible_from_their_seed_and_differ_between_seeds():
    assert study.draw(SPACE, 3) == study.draw(SPACE, 3)
    assert len({tuple(sorted(study.draw(SPACE, s).items())) for s in range(20)}) > 15


def test_draws_keep_to_ranges_and_follow_their_scales():
    draws = pd.DataFrame([study.draw(SPACE, s) for s in range(4000)])
    n = len(draws)
    band = 4 * math.sqrt(0.25 / n)  # 4 binomial standard deviations of a fraction near 1/2
    assert draws.lr.between(1e-4, 1e-2).all() and draws.ema_decay.between(0.9, 0.99).all()
    assert abs((draws.lr < 1e-3).mean() - 0.5) < band  # log-uniform: half below the geometric mid-point
    assert abs((draws.ema_decay < 0.945).mean() - 0.5) < band  # uniform: half below the arithmetic one
    assert set(draws.batch_size) == {2, 3, 4, 5} and set(draws.eval_weights) == {"ema", "raw"}
    for v, count in draws.batch_size.value_counts().items():
        assert abs(count / n - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n), v
    # int_log on [1, 15]: P(v) = log((v + 1) / v) / log(16 / 1)
    freq = draws.train_steps.value_counts() / n
    assert set(freq.index) <= set(range(1, 16))
    for v in (1, 2, 7, 15):
        p = math.log((v + 1) / v) / math.log(16)
        assert abs(freq.get(v, 0.0) - p) < 4 * math.sqrt(p * (1 - p) / n), v


def test_shared_dimensions_are_paired_across_methods():
    """Trial k of the PCD and of the short-run EBM share their step size: the comparison at equal step size."""
    for k in range(5):
        seed = study.trial_seed(0, k)
        a, b = study.draw(study.space_of("pcd_ebm"), seed), study.draw(study.space_of("short_run_ebm"), seed)
        assert a["langevin_eps"] == b["langevin_eps"] and a["lr"] == b["lr"]
    assert study.trial_seed(0, 0) != study.trial_seed(1, 0) != study.trial_seed(0, 1)


@pytest.mark.parametrize("space, expected", [
    ({"nonexistent": ("log", 1, 2)}, "'nonexistent' is not a parameter of the run or the method"),
    ({"lr": ("log", 0.0, 1e-2)}, "a log scale needs low > 0"),
    ({"lr": ("linear", -1.0, 1e-2)}, "parameter 'lr' must be > 0, got -1.0"),
    ({"lr": ("log", 1e-2, 1e-3)}, "low < high"),
    ({"lr": ("cubic", 1e-4, 1e-2)}, "scale must be one of ['log', 'linear', 'int', 'int_log']"),
    ({"langevin_steps": ("int", 1.5, 4)}, "needs integer bounds"),
    ({"support_mode": ("choice", "clamp", "teleport")}, "parameter 'support_mode' must be"),
    ({"lr": 0.001}, "expected a tuple (scale, low, high)"),
])
def test_a_bad_space_is_a_clear_error_naming_method_and_dimension(space, expected):
    problems = study.space_problems("pcd_ebm", space)
    assert problems and all(p.startswith("search space of 'pcd_ebm': ") for p in problems)
    assert any(expected in p for p in problems), problems


def test_a_method_without_a_space_says_where_to_declare_one():
    [problem] = study.space_problems("dcgan")
    assert "declares no search space" in problem and "DCGANParams" in problem


def _suite(tmp_path, study_block: str, methods: str = "[pcd_ebm, ddpm]"):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: s
        defaults: {{threads: 1, batch_size: 64}}
        runs:
          - datasets: [eight_gaussians]
            methods: {methods}
            study: {study_block}
        """))
    return path


def test_a_bad_study_entry_is_refused_with_every_problem(tmp_path):
    with pytest.raises(SuiteError) as err:
        load_suite(str(_suite(tmp_path, "{trials: 0, train_flops: '1e9', budget: 3}", "[pcd_ebm, dcgan]")),
                   str(tmp_path))
    text = str(err.value)
    assert "unknown key(s) ['budget']" in text and "'trials' (K" in text and "'train_flops'" in text
    assert "method 'dcgan' declares no search space" in text


def test_an_entry_may_widen_a_space_and_choose_the_metric(tmp_path):
    block = "{trials: 2, train_flops: 1.0e+10, metric: mode_tv, spaces: {pcd_ebm: {langevin_eps: [log, 0.5, 2.0]}}}"
    _, runs = load_suite(str(_suite(tmp_path, block)), str(tmp_path))
    pcd = [r for r in runs if r.cfg.method == "pcd_ebm" and r.trial["role"] == "trial"]
    assert all(0.5 <= r.cfg.method_params.langevin_eps <= 2.0 and r.trial["metric"] == "mode_tv" for r in pcd)
    with pytest.raises(SuiteError) as err:
        load_suite(str(_suite(tmp_path, "{trials: 2, train_flops: 1.0e+10, metric: nope, "
                                        "spaces: {pcd_ebm: {langevin_eps: [log, 0.0, 2.0]}, sngan: {}}}")),
                   str(tmp_path))
    text = str(err.value)
    assert "'metric' 'nope' is not a sample metric" in text and "'sngan' is not a method of this entry" in text
    assert "search space of 'pcd_ebm': 'langevin_eps': a log scale needs low > 0" in text


def test_a_study_expands_to_trials_at_equal_flops_with_a_default_and_an_untrained_reference(tmp_path):
    _, runs = load_suite(str(_suite(tmp_path, "{trials: 3, train_flops: 1.0e+10}")), str(tmp_path))
    assert len(runs) == 2 * (3 + 2)
    for method in ("pcd_ebm", "ddpm"):
        mine = [r for r in runs if r.cfg.method == method]
        roles = [r.trial["role"] for r in mine]
        assert roles == ["trial"] * 3 + ["default", "untrained"]
        for r in mine[:4]:  # every trained run: the largest whole number of steps within the budget
            per_step = study.step_flops_of(r.params)
            assert r.trial["flops_per_step"] == per_step
            assert r.cfg.train_steps == int(1e10 // per_step) and (r.cfg.train_steps + 1) * per_step > 1e10
        for k, r in enumerate(mine[:3]):
            assert r.cfg.seed == r.trial["draw_seed"] == study.trial_seed(0, k)
            assert r.trial["drawn"] == study.draw(study.space_of(method), r.cfg.seed)
        untrained = mine[-1]
        assert untrained.cfg.train_steps == 1 and untrained.cfg.lr == study.UNTRAINED_LR
    _, one = load_suite(str(_suite(tmp_path, "{trials: 3, train_flops: 1.0e+10}")), str(tmp_path), trials=1)
    assert len(one) == 2 * (1 + 2)


def test_flops_are_counted_through_double_backward():
    """Score matching and the gradient penalty differentiate a gradient: still counted (FlopCounterMode is not)."""
    base = {"dataset": "eight_gaussians", "batch_size": 64}
    dsm, pcd = study.step_flops_of({**base, "method": "dsm_ebm"}), study.step_flops_of({**base, "method": "pcd_ebm"})
    assert dsm > 0 and study.step_flops_of({**base, "method": "wgan_gp"}) > 0
    assert pcd > dsm  # 20 Langevin steps of E and grad E per update against one double backward


def test_expected_best_matches_enumeration_and_the_uniform_closed_form():
    rng = np.random.default_rng(0)
    values = rng.lognormal(size=9)
    for k in range(1, 10):
        enumerated = np.mean([min(c) for c in itertools.combinations(values, k)])
        assert study.expected_best(values, k) == pytest.approx(enumerated, rel=1e-12)
        enumerated_max = np.mean([max(c) for c in itertools.combinations(values, k)])
        assert study.expected_best(values, k, lower_is_better=False) == pytest.approx(enumerated_max, rel=1e-12)
    n = 20  # the least of k draws without replacement from {1, ..., n} has mean (n + 1) / (k + 1)
    for k in (1, 2, 5, 20):
        assert study.expected_best(np.arange(1, n + 1), k) == pytest.approx((n + 1) / (k + 1), rel=1e-12)


def test_the_bootstrap_agrees_with_the_exact_expected_best():
    values = np.arange(1.0, 21.0)
    for k in (1, 3, 8):
        boot = study.bootstrap_best(values, k, n_boot=20000, seed=1)
        exact = study.expected_best(values, k)
        assert abs(boot.mean() - exact) < 4 * boot.std() / math.sqrt(len(boot))


def test_a_diverged_trial_that_can_be_picked_makes_the_best_of_one_infinite():
    values = [0.1, 0.2, math.inf]
    assert study.expected_best(values, 1) == math.inf
    assert study.expected_best(values, 2) == pytest.approx((0.1 * 2 + 0.2 * 1) / 3)  # inf is never the least of 2
    with pytest.raises(ValueError, match="k must be in"):
        study.expected_best(values, 4)


@pytest.mark.parametrize("k, n", [(0, 10), (5, 10), (3, 17), (17, 17), (1, 1)])
def test_wilson_interval_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert study.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_known_value():
    lo, hi = study.wilson(0, 10)  # k = 0: the upper end is z^2 / (n + z^2)
    assert lo == 0 and hi == pytest.approx(1.959964**2 / (10 + 1.959964**2), rel=1e-6)


def _trials() -> pd.DataFrame:
    base = {"dataset": "d", "method": "m", "family": "ebm", "planned_steps": 100, "reason": "", "study_seed": 0}
    rows = [
        {**base, "role": "untrained", "run_status": "ok", "steps_done": 1, "quality": 4.0},
        {**base, "role": "untrained", "run_status": "ok", "steps_done": 1, "quality": 6.0},
        {**base, "role": "trial", "run_status": "ok", "steps_done": 100, "quality": 0.1},
        {**base, "role": "trial", "run_status": "ok", "steps_done": 100, "quality": 5.5},
        {**base, "role": "trial", "run_status": "diverged", "steps_done": 30, "quality": float("nan"),
         "reason": "diverged at step 30: |loss| = 2e+06 exceeds max_loss = 1e+06"},
        {**base, "role": "trial", "run_status": "diverged", "steps_done": 60, "quality": float("nan"),
         "reason": "diverged at step 60: non-finite loss (nan)"},
        {**base, "role": "trial", "run_status": "ok", "steps_done": 100, "quality": float("inf")},
        {**base, "role": "trial", "run_status": "failed", "steps_done": 0, "quality": float("nan")},
    ]
    return study.classify(pd.DataFrame(rows))


def test_the_divergence_rule_counts_each_kind_and_where():
    t = _trials()
    assert list(t.outcome) == ["reference", "reference", "ok", "worse_than_untrained", "guard", "non_finite",
                               "non_finite", "failed"]
    assert t.untrained.iloc[0] == 5.0
    [row] = study.divergence_table(t).to_dict("records")
    assert (row["trials"], row["diverged"], row["guard"], row["non_finite"], row["worse_than_untrained"],
            row["failed"]) == (5, 4, 1, 2, 1, 1)
    assert row["rate"] == 0.8 and (row["wilson_low"], row["wilson_high"]) == study.wilson(4, 5)
    assert sorted(t.diverged_at.dropna()) == [0.3, 0.6, 1.0, 1.0]


def test_budget_curve_counts_diverged_trials_as_wasted():
    curve = study.budget_curves(_trials(), n_boot=200)
    assert list(curve.k) == [1, 2, 3, 4, 5, 6]
    q = [0.1, 5.5, math.inf, math.inf, math.inf, math.inf]
    assert list(curve.expected_best) == [study.expected_best(q, k) for k in range(1, 7)]
    assert curve.expected_best.iloc[-1] == 0.1


def test_methods_registry_has_every_studied_method():
    assert set(STUDIED) <= set(METHODS.names())


@pytest.mark.parametrize("suite, runs_per_k1", [("study-2d", 11 * 3), ("study-2d-full", 2 * 3 * 11 * 3),
                                                ("study-digits", 2 * 11 * 3)])
def test_the_committed_study_suites_load(tmp_path, suite, runs_per_k1):
    """Every committed study validates and expands (at K = 1: the FLOP counts are the slow part)."""
    name, runs = load_suite(suite, str(tmp_path), trials=1)
    assert name == suite and len(runs) == runs_per_k1
    budgets = {r.trial["train_flops_budget"] for r in runs if r.trial["role"] != "untrained"}
    assert len(budgets) == 1
    assert all(r.trial["train_steps"] == r.cfg.train_steps for r in runs)


def _finding_fixture() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two trials each of PCD (none diverges), short-run (one diverges, both degrade at 10K) and DDPM."""
    def run(method, role, k, quality, status="ok", reason="", steps=100):
        return {"run_id": f"{method}-{role}-{k}", "dataset": "d", "method": method, "family": "ebm", "role": role,
                "trial": k, "planned_steps": 100, "steps_done": steps, "run_status": status, "reason": reason,
                "quality": quality, "metric": "reverse_kl"}
    runs = [run("pcd_ebm", "trial", 0, 0.2), run("pcd_ebm", "trial", 1, 0.3), run("pcd_ebm", "default", 0, 1.0),
            run("pcd_ebm", "untrained", 0, 10.0),
            run("short_run_ebm", "trial", 0, 0.25), run("short_run_ebm", "trial", 1, float("nan"), "diverged",
                                                         "non-finite loss (nan)", 40),
            run("short_run_ebm", "default", 0, 0.5), run("short_run_ebm", "untrained", 0, 10.0),
            run("ddpm", "trial", 0, 0.1), run("ddpm", "trial", 1, 0.15), run("ddpm", "default", 0, 0.05),
            run("ddpm", "untrained", 0, 1e5)]
    trials = study.classify(pd.DataFrame(runs))
    rows = [{"run_id": f"short_run_ebm-{role}-0", "metric": "reverse_kl", "metric_status": "ok", "sampler": s,
             "nfe": n, "value": v} for role, s, n, v in (("trial", "langevin@20", 20, 0.25),
                                                          ("trial", "langevin@200", 200, 0.9),
                                                          ("default", "langevin@20", 20, 0.5),
                                                          ("default", "langevin@200", 200, 0.4))]
    return trials, pd.DataFrame(rows)


def test_the_findings_are_evaluated_from_rows():
    trials, frame = _finding_fixture()
    long = study.finding_long_run(trials, frame)
    assert long["n"] == 2 and long["fraction_degrading"] == 0.5 and long["holds"] is False  # half is not most
    pcd = study.finding_pcd_diverges_less(trials)
    assert (pcd["pcd_rate"], pcd["short_run_rate"], pcd["holds"], pcd["clear"]) == (0.0, 0.5, True, False)
    assert pcd["short_run_interval"] == study.wilson(1, 2)
    lucic = study.finding_lucic(trials)
    best = np.log10([0.2, 0.25, 0.1])  # short-run's diverged trial is not its best
    default = np.log10([1.0, 0.5, 0.05])
    assert lucic["spread_best_log10"] == pytest.approx(best.max() - best.min())
    assert lucic["spread_default_log10"] == pytest.approx(default.max() - default.min()) and lucic["holds"] is True
    assert len(study.findings(trials, frame)) == 3


def test_findings_without_a_study_say_not_enough_rows(tmp_path):
    from ebmbench.reproduce import study_findings

    f = study_findings(tmp_path, pd.DataFrame())
    assert list(f.holds) == [study.NOT_ENOUGH] * 3
    one = _finding_fixture()[0]
    one = one[(one.role != "trial") | (one.trial == 0)]
    assert study.finding_lucic(one)["holds"] == study.NOT_ENOUGH  # a best of one trial is no search


def test_trials_on_a_suite_without_a_study_is_refused(capsys):
    from ebmbench.cli import main

    assert main(["run", "smoke", "--trials", "2", "--dry-run"]) == 2
    assert "--trials sets the K of a study entry" in capsys.readouterr().err
