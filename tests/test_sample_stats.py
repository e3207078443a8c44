"""Sample statistics against closed forms, scipy and hand-built inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from ebmbench.metrics.sample_stats import (
    energy_distance,
    mean_nll,
    median_bandwidth,
    mmd2_unbiased,
    mmd_with_floor,
    mode_coverage,
    off_support_fraction,
)
from ebmbench.protocol import Box


def _gauss_kernel_mean(h: float, s_a: float, s_b: float, sq_dist: float, dim: int) -> float:
    """E k(A, B) for A ~ N(mu_a, s_a^2 I), B ~ N(mu_b, s_b^2 I), k = exp(-|a-b|^2 / (2 h^2))."""
    c = h * h + s_a * s_a + s_b * s_b
    return (h * h / c) ** (dim / 2) * math.exp(-sq_dist / (2 * c))


def _rbf(a: torch.Tensor, b: torch.Tensor, h: float) -> torch.Tensor:
    return torch.exp(-(torch.cdist(a, b) ** 2) / (2 * h * h))


def test_mmd2_matches_gaussian_closed_form() -> None:
    dim, h, s1, s2, n = 2, 1.0, 1.0, 1.3, 3000
    mu1, mu2 = torch.zeros(dim, dtype=torch.float64), torch.tensor([0.5, 0.0], dtype=torch.float64)
    sq = float(((mu1 - mu2) ** 2).sum())
    exact = (
        _gauss_kernel_mean(h, s1, s1, 0.0, dim)
        + _gauss_kernel_mean(h, s2, s2, 0.0, dim)
        - 2 * _gauss_kernel_mean(h, s1, s2, sq, dim)
    )
    g = torch.Generator().manual_seed(0)
    x = mu1 + s1 * torch.randn(n, dim, generator=g, dtype=torch.float64)
    y = mu2 + s2 * torch.randn(n, dim, generator=g, dtype=torch.float64)
    est = mmd2_unbiased(x, y, h)

    # Standard error from the Hoeffding projection of the U-statistic: Var ~ 4/N Var_i h1(z_i),
    # h1(z_i) = mean_{j != i} [k(x_i,x_j) + k(y_i,y_j) - k(x_i,y_j) - k(x_j,y_i)].
    kxx, kyy, kxy = _rbf(x, x, h), _rbf(y, y, h), _rbf(x, y, h)
    hmat = kxx + kyy - kxy - kxy.T
    hmat.fill_diagonal_(0.0)
    h1 = hmat.sum(dim=1) / (n - 1)
    se = math.sqrt(4.0 / n * float(h1.var()))
    assert 0.001 < se < 0.01  # ~0.003 measured over 30 seeds
    assert abs(est - exact) < 4 * se, (est, exact, se)


def test_mmd2_kernel_convention_on_tiny_sets() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    h = 0.7

    def k(sq: float) -> float:
        return math.exp(-sq / (2 * h * h))

    kxx = k(1.0)  # one off-diagonal pair, averaged over n(n-1) = 2 ordered pairs
    kyy = k(5.0)
    kxy = (k(1.0) + k(8.0) + k(2.0) + k(5.0)) / 4
    assert mmd2_unbiased(x, y, h) == pytest.approx(kxx + kyy - 2 * kxy, abs=1e-12)


def test_mmd2_same_distribution_is_unbiased_and_can_be_negative() -> None:
    g = torch.Generator().manual_seed(1)
    n, reps = 500, 20
    vals = torch.tensor(
        [
            mmd2_unbiased(torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g), 1.0)
            for _ in range(reps)
        ],
        dtype=torch.float64,
    )
    se = float(vals.std()) / math.sqrt(reps)
    # The biased V-statistic would sit at 2(1 - E k(X,X')) / n = 2.7e-3 here, ~10 se above 0.
    assert abs(float(vals.mean())) < 4 * se, (float(vals.mean()), se)
    assert (vals < 0).any()


def test_median_bandwidth_hand_built_and_uses_first_2000() -> None:
    assert median_bandwidth(torch.tensor([[0.0], [1.0], [3.0]])) == pytest.approx(2.0)
    pts = torch.zeros(4000, 2)
    pts[:1000, 0] = 1.0  # first 2000: half at (1, 0), half at (0, 0); the rest at (0, 0)
    # First 2000: 1e6 pairs at distance 1 vs 999000 at 0 -> median 1. All 4000 would give median 0.
    assert median_bandwidth(pts) == pytest.approx(1.0)


def test_mmd_with_floor_truncates_to_equal_n() -> None:
    g = torch.Generator().manual_seed(2)
    samples, ref, floor_ref = (torch.randn(k, 4, generator=g) for k in (120, 90, 150))
    out = mmd_with_floor(samples, ref, floor_ref)
    h = median_bandwidth(ref[:90])
    assert out["n"] == 90 and out["kernel"] == "rbf"
    assert out["bandwidth"] == pytest.approx(h)
    assert out["mmd2"] == pytest.approx(mmd2_unbiased(samples[:90], ref[:90], h))
    assert out["floor"] == pytest.approx(mmd2_unbiased(floor_ref[:90], ref[:90], h))
    assert mmd_with_floor(samples, ref, floor_ref, bandwidth=0.5)["bandwidth"] == 0.5


def test_energy_distance_matches_scipy_in_1d() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.0, 1.0, 700), rng.normal(0.4, 1.5, 500)
    ours = energy_distance(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None])
    assert ours == pytest.approx(scipy.stats.energy_distance(a, b), rel=1e-6)
    assert energy_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(ours, rel=1e-12)


def test_energy_distance_zero_on_identical_and_symmetric() -> None:
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(300, 5, generator=g), torch.randn(200, 5, generator=g) + 0.3
    assert energy_distance(x, x.clone()) == pytest.approx(0.0, abs=1e-6)
    assert energy_distance(x, y) > 0.1
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x), rel=1e-12)


def test_energy_distance_hand_built_2d() -> None:
    x, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    assert energy_distance(x, y) == pytest.approx(math.sqrt(2 * 5.0))


def test_mode_coverage_hand_built() -> None:
    # 20 samples, 4 modes: threshold = max(1, 0.2 * 20 / 4) = 1 -> any sample covers a mode.
    ids = torch.tensor([0] * 8 + [1] * 6 + [3] * 1 + [-1] * 5)
    out = mode_coverage(ids, n_modes=4)
    assert out["counts"] == [8, 6, 0, 1]
    assert out["threshold"] == 1.0
    assert out["coverage"] == 0.75
    assert out["high_quality_fraction"] == 0.75
    # min_fraction 0.5: threshold 0.5 * 20 / 4 = 2.5 -> modes 0 and 1 only.
    strict = mode_coverage(ids, n_modes=4, min_fraction=0.5)
    assert strict["threshold"] == 2.5 and strict["coverage"] == 0.5
    # min_fraction 0: the threshold floors at one sample, so an empty mode is never covered.
    loose = mode_coverage(ids, n_modes=4, min_fraction=0.0)
    assert loose["threshold"] == 1.0 and loose["coverage"] == 0.75
    with pytest.raises(ValueError):
        mode_coverage(torch.tensor([0, 4]), n_modes=4)


def test_off_support_fraction_hand_built() -> None:
    box = Box(-1.0, 1.0, (2,))
    x = torch.tensor([[0.0, 0.0], [1.0, -1.0], [1.01, 0.0], [0.0, -3.0], [0.5, 0.5]])
    assert off_support_fraction(x, box) == pytest.approx(2 / 5)
    img_box = Box(0.0, 1.0, (1, 2, 2))
    imgs = torch.zeros(4, 1, 2, 2)
    imgs[0, 0, 1, 1] = 2.0
    assert off_support_fraction(imgs, img_box) == pytest.approx(1 / 4)


def test_mean_nll() -> None:
    lp = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    mean, se = mean_nll(lp)
    assert mean == pytest.approx(2.5)
    assert se == pytest.approx(float(torch.tensor([1.0, 2.0, 3.0, 4.0]).std()) / 2.0)
