"""The metric ladder (ebmbench/metrics/ladder.py): sample sets of known order must come out in that order.

The rule (``ladder.ordered``): along each sequence, for every adjacent pair of rungs a (better) then b (worse),
each scored on 10 seeds at the suite's N (1000 points on 2D, 500 images on digits),
mean_b - mean_a >= 2 * sqrt(var_a / 10 + var_b / 10): the mean rises by at least two standard errors of the
difference of the two means (higher-is-better metrics are negated first). A metric declared ladder="passed" must
meet it on every sequence of every 2D density (or of digits, for image metrics); one declared "failed" must miss it
on at least one adjacent pair, and the plan below runs it where it does.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import ebmbench.builtins  # noqa: F401  (registers the fidelity metrics)
from ebmbench.builtins import load_dataset
from ebmbench.data.toy2d import DENSITIES, EightGaussians, get_density
from ebmbench.metrics import ladder, sample_metrics
from ebmbench.metrics.registry import SAMPLE_METRICS, Metric, NotApplicable
from ebmbench.metrics.sample_stats import mmd2_multiscale

PLAN: list[tuple[str, str, str | None, int | None]] = [  # (metric, dataset, sequence, leading rungs; None: all)
    *((m, d, None, None) for m in ("reverse_kl", "mode_tv") for d in DENSITIES),
    ("mmd2_multiscale", "checkerboard", "smeared", 3),  # blind to blurring the squares' edges (z ~ 0)
    *((m, "eight_gaussians", "widened", 3) for m in ("mmd2", "energy_distance", "mode_coverage")),
    ("fid_domain", "digits", None, None),
    ("kid_domain", "digits", None, None),
]
HIGHER_IS_BETTER = {"mode_coverage"}


def _declared(verdict: str) -> list[str]:
    return sorted(n for n in SAMPLE_METRICS if SAMPLE_METRICS.get(n).ladder == verdict)


@pytest.fixture(scope="module")
def scores() -> dict[tuple[str, str, str], Tensor]:
    """Values [rungs, seeds] per (metric, dataset, sequence) of the plan; metrics share each sample set."""
    out: dict[tuple[str, str, str], Tensor] = {}
    for name in dict.fromkeys(d for _, d, _, _ in PLAN):
        ds = load_dataset(name)
        sequences, n = ((ladder.ladders_digits(ds), ladder.N_DIGITS) if ds.density is None
                        else (ladder.ladders_2d(ds.density), ladder.N_2D))
        for seq, rungs in sequences.items():
            planned = {m: k or len(rungs) for m, d, sq, k in PLAN if d == name and sq in (None, seq)}
            for k in sorted(set(planned.values())):  # metrics planned on the same leading rungs share draws
                metrics = {m: (lambda x, m=m, ds=ds: SAMPLE_METRICS.get(m).fn(x, ds)[0])
                           for m, km in planned.items() if km == k}
                for m, values in ladder.score(metrics, rungs[:k], n, ladder.SEEDS).items():
                    out[m, name, seq] = -values if m in HIGHER_IS_BETTER else values
    return out


def _report(scores: dict[tuple[str, str, str], Tensor], metric: str) -> dict[tuple[str, str], list[float]]:
    return {(d, s): [round(z, 2) for z in ladder.separation(v).tolist()] for (m, d, s), v in scores.items()
            if m == metric}


@pytest.mark.slow
@pytest.mark.parametrize("metric", _declared("passed"))
def test_passed_metrics_order_every_rung(scores: dict, metric: str) -> None:
    runs = {(d, s): v for (m, d, s), v in scores.items() if m == metric}
    assert runs, f"{metric} is declared ladder='passed' but the plan never runs it"
    bad = {k: z for k, z in _report(scores, metric).items() if min(z) < ladder.Z_MIN}
    assert not bad, f"{metric}: adjacent rungs closer than {ladder.Z_MIN} standard errors: {bad}"


@pytest.mark.slow
@pytest.mark.parametrize("metric", _declared("failed"))
def test_failed_metrics_miss_a_rung(scores: dict, metric: str) -> None:
    runs = {(d, s): v for (m, d, s), v in scores.items() if m == metric}
    assert runs, f"{metric} is declared ladder='failed' but the plan never runs it"
    assert not all(ladder.ordered(v) for v in runs.values()), (
        f"{metric} passes its planned sequences {_report(scores, metric)}: declare it 'passed' on the full ladder")


def test_declarations_match_the_plan() -> None:
    """Every declared verdict is exercised; a 'passed' one on every rung of every sequence of all 2D densities
    or of digits."""
    assert set(_declared("passed")) | set(_declared("failed")) == {m for m, _, _, _ in PLAN}
    assert {"reverse_kl", "fid_domain"} <= set(_declared("passed"))
    for metric in _declared("passed"):
        entries = [(d, sq, k) for m, d, sq, k in PLAN if m == metric]
        assert {d for d, _, _ in entries} in (set(DENSITIES), {"digits"}), metric
        assert all(sq is None and k is None for _, sq, k in entries), metric
    headline = {n for n in SAMPLE_METRICS if SAMPLE_METRICS.get(n).headline}
    assert headline and headline <= set(_declared("passed"))


def test_headline_needs_a_passed_ladder() -> None:
    with pytest.raises(ValueError, match="headline"):
        Metric("x", "samples", lambda x, d: (0.0, None, {}), "", ladder="failed", headline=True)
    with pytest.raises(ValueError, match="ladder"):
        Metric("x", "samples", lambda x, d: (0.0, None, {}), "", ladder="maybe")


# --- the sample sets themselves ---------------------------------------------------------------------------------

def test_widened_components_scale_their_spread() -> None:
    d = EightGaussians()
    g = torch.Generator().manual_seed(0)
    for s in (1.0, 2.0):  # one mode kept: every point comes from the Gaussian at means[0]
        resid = ladder.draw_mixture(d, 20000, g, scale=s, modes=1).double() - d.means[0]
        assert float(resid.std()) == pytest.approx(s * d.std, rel=0.02)
    kept = d.mode_of(ladder.draw_mixture(d, 5000, g, modes=4))
    assert set(kept.tolist()) <= {-1, 0, 1, 2, 3} and {0, 1, 2, 3} <= set(kept.tolist())


def test_every_density_has_rungs_and_the_first_is_exact() -> None:
    assert ladder.modes_kept_rungs(8) == (8, 7, 6, 4) and ladder.modes_kept_rungs(2) == (2, 1)
    for name in DENSITIES:
        d = get_density(name)
        seqs = ladder.ladders_2d(d)
        assert [len(r) for r in seqs.values()] == [5, len(ladder.modes_kept_rungs(d.n_modes)), 5]
        first = seqs["widened"][0].draw(4000, torch.Generator().manual_seed(1)).double()
        exact = d.sample(4000, torch.Generator().manual_seed(2)).double()
        lp_first, lp_exact = d.log_prob(first), d.log_prob(exact)  # mean log p agrees within sampling error
        se = math.sqrt(float(lp_first.var() + lp_exact.var()) / 4000)
        assert abs(float(lp_first.mean() - lp_exact.mean())) < 4 * se, name


def test_length_scales_are_dyadic_from_the_finest_feature_to_half_the_box() -> None:
    assert EightGaussians().length_scales() == (0.2, 0.4, 0.8, 1.6)
    for name in DENSITIES:
        d = sample_metrics.toy_density(name)
        h, half = d.length_scales(), (d.box.high - d.box.low) / 2
        assert h[0] == d.finest_scale and h[-1] <= half < 2 * h[-1]
        assert all(b == pytest.approx(2 * a) for a, b in zip(h, h[1:]))


def test_digits_rungs_draw_what_they_say() -> None:
    ds = load_dataset("digits")
    g = torch.Generator().manual_seed(0)
    x = ladder.digits_of_classes(ds, 500, g, 3)
    pool = ds.train[ds.labels["train"] < 3].flatten(1)
    assert x.shape == (500, 1, 8, 8) and bool((torch.cdist(x.flatten(1), pool).min(1).values == 0).all())
    noisy = ladder.noised_digits(ds, 500, torch.Generator().manual_seed(1), 0.25)
    clean = ladder.noised_digits(ds, 500, torch.Generator().manual_seed(1), 0.0)  # the same images, no noise
    assert float((noisy - clean).std()) == pytest.approx(0.25, rel=0.03)
    assert bool((torch.cdist(clean.flatten(1), ds.train.flatten(1)).min(1).values == 0).all())


# --- the registered 2D metrics ----------------------------------------------------------------------------------

def test_reverse_kl_row_meta_floor_and_stderr() -> None:
    ds = load_dataset("eight_gaussians")
    fn = SAMPLE_METRICS.get("reverse_kl").fn
    runs = [fn(x, ds) for x in sample_metrics.exact_sample_sets("eight_gaussians", 1000)]
    value, se, meta = runs[0]
    assert {"floor", "floor_sd", "above_floor", "k", "n", "entropy", "cross_entropy", "n_clamped"} <= set(meta)
    assert meta["k"] == sample_metrics.KL_K and meta["n"] == 1000 and meta["n_clamped"] == 0
    assert value == pytest.approx(-meta["entropy"] + meta["cross_entropy"])
    assert meta["above_floor"] == pytest.approx(value - meta["floor"])
    values = torch.tensor([v for v, _, _ in runs], dtype=torch.float64)
    assert meta["floor"] == pytest.approx(float(values.mean())) and meta["floor_sd"] == pytest.approx(values.std())
    assert 0.5 < se / float(values.std()) < 2.0  # the per-sample-term SE against the SD over 10 seeds
    assert 0.0 < meta["floor"] < 0.1 and meta["floor_sd"] < 0.05
    hits = sample_metrics.reverse_kl_floor.cache_info().hits
    fn(sample_metrics.exact_sample_sets("eight_gaussians", 1000)[1], ds)
    assert sample_metrics.reverse_kl_floor.cache_info().hits == hits + 1  # one floor per (density, N) per process


def test_mode_tv_row_meta() -> None:
    ds = load_dataset("checkerboard")
    x = sample_metrics.exact_sample_sets("checkerboard", 1000)[0]
    value, se, meta = SAMPLE_METRICS.get("mode_tv").fn(x, ds)
    assert se is None and {"floor", "floor_sd", "high_quality_fraction", "counts", "n"} <= set(meta)
    assert len(meta["counts"]) == 8 and sum(meta["counts"]) + meta["off_count"] == 1000
    ref = torch.tensor(meta["reference"])
    assert float(ref.sum()) == pytest.approx(1.0) and float(ref[-1]) == pytest.approx(1e-3, abs=3e-4)
    assert 0.0 < meta["floor"] < 0.06 and value < meta["floor"] + 3 * meta["floor_sd"]


def test_mmd2_multiscale_row_and_not_applicable() -> None:
    ds = load_dataset("eight_gaussians")
    value, _, meta = SAMPLE_METRICS.get("mmd2_multiscale").fn(ds.val[:500], ds)
    h = (0.2, 0.4, 0.8, 1.6)
    assert meta["bandwidths"] == list(h) and meta["n"] == 500
    assert value == pytest.approx(mmd2_multiscale(ds.val[:500], ds.test[:500], h))
    assert meta["floor"] == pytest.approx(mmd2_multiscale(ds.train[:500], ds.test[:500], h))
    digits = load_dataset("digits")
    for name in ("reverse_kl", "mode_tv", "mmd2_multiscale"):
        with pytest.raises(NotApplicable):
            SAMPLE_METRICS.get(name).fn(digits.train[:10], digits)


def test_non_finite_samples_raise_with_the_count() -> None:
    ds = load_dataset("eight_gaussians")
    x = ds.val[:100].clone()
    x[3, 0], x[7, 1] = math.nan, math.inf
    for name in ("reverse_kl", "mode_tv", "mmd2_multiscale"):
        with pytest.raises(ValueError, match="2 of 100 samples"):
            SAMPLE_METRICS.get(name).fn(x, ds)


def test_duplicates_are_clamped_and_counted() -> None:
    ds = load_dataset("eight_gaussians")
    x = ds.val[:200].clone()
    x[:50] = x[0]  # 50 copies of one point: their 3rd-nearest neighbour is at distance 0
    value, se, meta = SAMPLE_METRICS.get("reverse_kl").fn(x, ds)
    assert math.isfinite(value) and math.isfinite(se) and meta["n_clamped"] == 50
    assert value > meta["floor"] + 1.0  # a collapsed sample has a low entropy: a large reverse KL
