"""Exact 2D toy densities: normalization, sampler against density, modes, pinwheel warp, datasets."""

from __future__ import annotations

import math
from functools import cache

import pytest
import scipy.stats
import torch
from torch import Tensor

from ebmbench.data.base import Dataset
from ebmbench.data.toy2d import (
    DENSITIES,
    Checkerboard,
    EightGaussians,
    IsotropicMixture,
    Pinwheel,
    Rings,
    ToyDensity,
    get_density,
    make_toy_dataset,
)

NAMES = ["checkerboard", "diagonal_blobs", "eight_gaussians", "pinwheel", "rings", "two_moons", "two_spirals"]
GRID = 480  # midpoint-rule points per axis over the box
CELLS = 12  # chi-square cells per axis; GRID / CELLS grid points per cell side
N_SAMPLES = 20000


@cache
def density(name: str) -> ToyDensity:
    """One instance per name, so the cached high-density threshold is computed once."""
    return get_density(name)


@cache
def quadrature(name: str) -> tuple[Tensor, float]:
    """log p (float64) at the GRID x GRID cell midpoints of the box, and the cell area."""
    box = density(name).box
    h = (box.high - box.low) / GRID
    axis = box.low + h * (torch.arange(GRID, dtype=torch.float64) + 0.5)
    pts = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    return density(name).log_prob(pts).reshape(GRID, GRID), h * h


@cache
def samples(name: str) -> Tensor:
    return density(name).sample(N_SAMPLES, torch.Generator().manual_seed(1234))


def test_registry_names() -> None:
    assert sorted(DENSITIES) == NAMES
    for name in NAMES:
        d = density(name)
        assert d.name == name and d.box.shape == (2,) and d.n_modes >= 2


@pytest.mark.parametrize("name", NAMES)
def test_integrates_to_one_over_box(name: str) -> None:
    log_p, area = quadrature(name)
    assert bool(torch.isfinite(log_p).all())  # smoothed: finite everywhere on the box
    total = float(log_p.exp().sum() * area)
    assert abs(total - 1.0) < 1e-6, total
    assert density(name).outside_mass_bound() < 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_samples_match_density_chi_square(name: str) -> None:
    log_p, area = quadrature(name)
    k = GRID // CELLS
    mass = log_p.exp().reshape(CELLS, k, CELLS, k).sum((1, 3)).flatten() * area
    box = density(name).box
    cell = ((samples(name).double() - box.low) / ((box.high - box.low) / CELLS)).floor().long()
    cell = cell.clamp(0, CELLS - 1)
    observed = torch.bincount(cell[:, 0] * CELLS + cell[:, 1], minlength=CELLS * CELLS).double()
    expected = N_SAMPLES * mass / mass.sum()
    big = expected >= 5  # pool the sparse cells into one bin
    f_obs = torch.cat([observed[big], observed[~big].sum().reshape(1)])
    f_exp = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    assert int(big.sum()) >= 10
    p = scipy.stats.chisquare(f_obs.numpy(), f_exp.numpy()).pvalue
    assert p > 1e-3, p


@pytest.mark.parametrize("name", NAMES)
def test_mean_log_prob_of_samples_is_negative_entropy(name: str) -> None:
    log_p, area = quadrature(name)
    neg_entropy = float((log_p.exp() * log_p).sum() * area)
    lp = density(name).log_prob(samples(name).double())
    se = float(lp.std()) / math.sqrt(len(lp))
    assert abs(float(lp.mean()) - neg_entropy) < 4 * se, (float(lp.mean()), neg_entropy, se)


@pytest.mark.parametrize("name", NAMES)
def test_sampling_inside_box_reproducible_and_only_uses_generator(name: str) -> None:
    d = density(name)
    torch.manual_seed(1)
    a = d.sample(3000, torch.Generator().manual_seed(7))
    torch.manual_seed(2)  # the global RNG must not matter
    b = d.sample(3000, torch.Generator().manual_seed(7))
    c = d.sample(3000, torch.Generator().manual_seed(8))
    assert a.shape == (3000, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool(d.box.contains(samples(name)).all())
    assert d.sample(0, torch.Generator()).shape == (0, 2)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_dtype_and_pruning_is_exact(name: str) -> None:
    d = density(name)
    g = torch.Generator().manual_seed(3)
    x = torch.cat([d.box.uniform(4000, g), samples(name)[:4000], 3 * d.box.high * torch.randn(500, 2, generator=g)])
    assert d.log_prob(x).dtype == torch.float32
    lp = d.log_prob(x.double())
    assert lp.dtype == torch.float64 and lp.shape == (len(x),)
    dense = torch.logsumexp(d.component_log_joint(x.double()), dim=1)  # every component, no pruning
    torch.testing.assert_close(lp, dense, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_mode_of_splits_samples_evenly_and_rejects_the_corner(name: str) -> None:
    d = density(name)
    modes = d.mode_of(samples(name))
    assert modes.dtype == torch.int64
    frac = torch.bincount(modes + 1, minlength=d.n_modes + 1).double() / N_SAMPLES
    assert float(frac[0]) < 3e-3  # about 0.1% of exact samples fall below the 0.1% quantile
    assert float((frac[1:] - 1.0 / d.n_modes).abs().max()) < 0.02, frac  # all modes equally weighted
    b = d.box
    corners = torch.tensor([[b.low, b.low], [b.high, b.high], [b.low, b.high], [b.high, b.low]])
    assert d.mode_of(corners).tolist() == [-1, -1, -1, -1]


def test_mode_of_names_the_right_mode() -> None:
    eight = density("eight_gaussians")
    assert isinstance(eight, EightGaussians)
    assert eight.mode_of(eight.means.float()).tolist() == list(range(8))
    rings = density("rings")
    assert isinstance(rings, Rings)
    on_rings = torch.tensor([[0.0, r] for r in Rings.RADII])
    assert rings.mode_of(on_rings).tolist() == [0, 1, 2, 3]
    board = density("checkerboard")
    assert isinstance(board, Checkerboard)
    assert board.mode_of((board.corners + 0.5).float()).tolist() == list(range(8))
    assert board.mode_of(torch.tensor([[-1.5, -0.5]])).tolist() == [-1]  # a white square's centre


def test_eight_gaussians_matches_torch_distributions() -> None:
    d = density("eight_gaussians")
    assert isinstance(d, IsotropicMixture)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.full((8,), 1 / 8, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(d.means, torch.full_like(d.means, 0.2)), 1),
    )
    x = d.box.uniform(2000, torch.Generator().manual_seed(4)).double()
    torch.testing.assert_close(d.log_prob(x), mix.log_prob(x), rtol=1e-10, atol=1e-10)


def _mp_log_checkerboard(x: float, y: float) -> float:
    """Checkerboard log-density in 50-digit arithmetic (mpmath), tails included."""
    import mpmath

    mpmath.mp.dps = 50
    s = mpmath.mpf(Checkerboard.STD)

    def unit(t: float, a: float) -> mpmath.mpf:  # Phi(u) - Phi(v) via the lower tails
        u, v = (t - a) / s, (t - a - 1) / s
        return mpmath.ncdf(-v) - mpmath.ncdf(-u) if v > 0 else mpmath.ncdf(u) - mpmath.ncdf(v)

    cells = [(i - 2, j - 2) for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    return float(mpmath.log(sum(unit(x, a) * unit(y, b) for a, b in cells) / 8))


def test_checkerboard_matches_high_precision_formula() -> None:
    d = density("checkerboard")
    g = torch.Generator().manual_seed(5)
    x = torch.cat([d.box.uniform(200, g), 10 * torch.rand(20, 2, generator=g) - 5]).double()
    exact = torch.tensor([_mp_log_checkerboard(a, b) for a, b in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(d.log_prob(x), exact, rtol=1e-12, atol=1e-12)


def test_pinwheel_warp_is_volume_preserving_change_of_variables() -> None:
    d = density("pinwheel")
    assert isinstance(d, Pinwheel)
    x = 2 * torch.randn(200, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    jac = torch.func.vmap(torch.func.jacrev(lambda p: d.warp(p[None])[0]))(x)
    log_det = torch.linalg.slogdet(jac).logabsdet
    torch.testing.assert_close(log_det, torch.zeros_like(log_det), rtol=0, atol=1e-12)
    torch.testing.assert_close(d.unwarp(d.warp(x)), x, rtol=0, atol=1e-12)
    # base density from torch.distributions, pushed through the warp: log p(y) = log p_base(x) - log|det J|
    frames = d.frames
    cov = frames @ torch.diag(torch.tensor([d.RADIAL_STD, d.TANGENTIAL_STD], dtype=torch.float64) ** 2) @ frames.mT
    base = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.full((d.N_ARMS,), 1 / d.N_ARMS, dtype=torch.float64)),
        torch.distributions.MultivariateNormal(d.RADIUS * frames[:, :, 0], covariance_matrix=cov),
    )
    torch.testing.assert_close(d.log_prob(d.warp(x)), base.log_prob(x) - log_det, rtol=1e-10, atol=1e-10)


def test_make_toy_dataset_is_reproducible_with_disjoint_splits() -> None:
    ds = make_toy_dataset("two_moons")
    assert isinstance(ds, Dataset)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (20000, 5000, 5000)
    assert ds.shape == (2,) and ds.train.dtype == torch.float32
    assert ds.support == density("two_moons").box and ds.levels is None and ds.density is not None
    assert ds.convention == "continuous 2D coordinates; exact density known"
    assert make_toy_dataset("two_moons").content_hash == ds.content_hash
    assert make_toy_dataset("rings").content_hash != ds.content_hash
    assert torch.equal(ds.val, ds.density.sample(5000, torch.Generator().manual_seed(1)))
    everything = torch.cat([ds.train, ds.val, ds.test])
    assert len(torch.unique(everything, dim=0)) == len(everything)  # no point shared between splits


def test_unknown_name_lists_valid_names() -> None:
    for call in (get_density, make_toy_dataset):
        with pytest.raises(KeyError) as err:
            call("nine_gaussians")
        message = str(err.value)
        assert "nine_gaussians" in message and all(name in message for name in NAMES)
