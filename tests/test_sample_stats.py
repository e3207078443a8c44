"""Sample statistics against closed forms, scipy and hand-built inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from ebmbench.metrics.sample_stats import (
    energy_distance,
    knn_entropy,
    knn_entropy_terms,
    knn_radii,
    mean_nll,
    median_bandwidth,
    mmd2_multiscale,
    mmd2_unbiased,
    mmd_with_floor,
    mode_coverage,
    mode_tv,
    off_support_fraction,
    reverse_kl,
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


def _gaussian_entropy(cov: torch.Tensor) -> float:
    """Closed form H(N(mu, cov)) = 1/2 log((2 pi e)^d |cov|)."""
    d = cov.shape[0]
    return 0.5 * (d * math.log(2 * math.pi * math.e) + float(torch.logdet(cov)))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_entropy_of_gaussians_matches_closed_form(k: int) -> None:
    g = torch.Generator().manual_seed(5)
    for cov in (torch.diag(torch.tensor([1.0, 0.25], dtype=torch.float64)),
                torch.tensor([[2.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64)):
        chol = torch.linalg.cholesky(cov)
        x = torch.randn(5000, cov.shape[0], generator=g, dtype=torch.float64) @ chol.T
        terms, clamped = knn_entropy_terms(x, k, 1e-12)
        se = float(terms.std()) / math.sqrt(len(x))
        assert clamped == 0 and float(terms.mean()) == knn_entropy(x, k)
        assert abs(knn_entropy(x, k) - _gaussian_entropy(cov)) < 4 * se + 0.01, (k, cov.shape)


def test_knn_radii_hand_built() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.0, 4.0]])
    assert knn_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(x, 2).tolist() == pytest.approx([3.0, 2.0, 3.0, math.sqrt(20.0)])
    with pytest.raises(ValueError):
        knn_radii(x, 4)


def test_reverse_kl_between_gaussians_matches_closed_form() -> None:
    mu_q, cov_q = np.array([0.3, -0.2]), np.array([[0.5, 0.1], [0.1, 0.3]])
    mu_p, cov_p = np.array([0.0, 0.0]), np.array([[1.0, 0.0], [0.0, 0.6]])
    prec = np.linalg.inv(cov_p)
    dm = mu_p - mu_q
    exact = 0.5 * (np.trace(prec @ cov_q) + dm @ prec @ dm - 2 + math.log(np.linalg.det(cov_p) / np.linalg.det(cov_q)))
    rng = np.random.default_rng(6)
    x = rng.multivariate_normal(mu_q, cov_q, size=4000)
    log_p = torch.from_numpy(scipy.stats.multivariate_normal(mu_p, cov_p).logpdf(x))
    out = reverse_kl(torch.from_numpy(x), log_p, 3, 1e-9)
    assert 0.005 < out["se"] < 0.05 and out["n"] == 4000 and out["k"] == 3
    assert out["kl"] == pytest.approx(out["cross_entropy"] - out["entropy"])
    assert abs(out["kl"] - exact) < 4 * out["se"] + 0.01, (out["kl"], exact, out["se"])


def test_knn_entropy_of_duplicates_is_finite_and_counts_clamps() -> None:
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x[:40] = x[0]  # 40 copies: each has 39 others at distance 0, so its k-th radius is 0 for k <= 39
    terms, clamped = knn_entropy_terms(x, 3, 1e-6)
    assert clamped == 40 and bool(torch.isfinite(terms).all())
    assert float(terms[0]) == pytest.approx(float(terms[1])) and float(terms[0]) < float(terms[50])
    same, n_same = knn_entropy_terms(torch.zeros(10, 2), 3, 1e-6)
    assert n_same == 10 and bool(torch.isfinite(same).all())
    with pytest.raises(ValueError, match="min_radius"):
        knn_entropy_terms(x, 3, 0.0)
    with pytest.raises(ValueError, match="not finite at 1 of"):
        reverse_kl(x, torch.cat([torch.full((299,), -1.0), torch.tensor([-math.inf])]), 3, 1e-6)


def test_mode_tv_hand_built() -> None:
    ref = torch.tensor([0.5, 0.3, 0.19, 0.01])  # 3 modes, then the off region
    ids = torch.tensor([0] * 4 + [1] * 4 + [2] * 1 + [-1] * 1)  # q = (0.4, 0.4, 0.1, 0.1)
    out = mode_tv(ids, ref)
    assert out["tv"] == pytest.approx(0.5 * (0.1 + 0.1 + 0.09 + 0.09))
    assert out["high_quality_fraction"] == pytest.approx(0.9)
    assert out["counts"] == [4, 4, 1] and out["off_count"] == 1
    assert mode_tv(torch.tensor([2, 2]), ref)["tv"] == pytest.approx(0.81)  # all in mode 2: 1 - 0.19
    with pytest.raises(ValueError):
        mode_tv(torch.tensor([3]), ref)


def test_mmd2_multiscale_hand_built() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    hs = (0.5, 2.0)

    def k(sq: float) -> float:
        return sum(math.exp(-sq / (2 * h * h)) for h in hs) / len(hs)

    expected = k(1.0) + k(5.0) - 2 * (k(1.0) + k(8.0) + k(2.0) + k(5.0)) / 4
    assert mmd2_multiscale(x, y, hs) == pytest.approx(expected, abs=1e-12)
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(300, 2, generator=g), torch.randn(200, 2, generator=g) + 0.5
    singles = [mmd2_unbiased(a, b, h) for h in (0.1, 0.3, 1.0)]
    assert mmd2_multiscale(a, b, (0.1, 0.3, 1.0)) == pytest.approx(sum(singles) / 3, rel=1e-10)
    with pytest.raises(ValueError):
        mmd2_multiscale(a, b, ())
