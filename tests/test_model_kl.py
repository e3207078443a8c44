"""KL between a 2D model's density and the exact data density by quadrature, and the paired forward KL rows.

References are closed forms: KL between two Gaussians, KL(p || p) = 0, a Gaussian's mass in a box.
"""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.data.toy2d import get_density
from ebmbench.methods.ebm import EBM, PCDParams
from ebmbench.metrics.derived import forward_kl_values
from ebmbench.metrics.registry import MODEL_METRICS, NotApplicable
from ebmbench.protocol import Box, GenerativeModel
from ebmbench.results import MetricValue

BOX = Box(-8.0, 8.0, (2,))


class GaussianDensity:
    """A 'dataset density' stand-in: N(mean, cov) on R^2, exact log_prob and sampler (mass off BOX ~ e^-20)."""

    n_modes = 1

    def __init__(self, mean: list[float], cov: list[list[float]], box: Box = BOX) -> None:
        self.box = box
        self.law = torch.distributions.MultivariateNormal(torch.tensor(mean, dtype=torch.float64),
                                                          torch.tensor(cov, dtype=torch.float64))

    def log_prob(self, x: Tensor) -> Tensor:
        return self.law.log_prob(x.double())

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (self.law.loc + z @ self.law.scale_tril.T).float()

    def mode_of(self, x: Tensor) -> Tensor:
        return torch.zeros(len(x), dtype=torch.long)


class GaussianEnergy(nn.Module):
    """E(x) = |L^-1 (x - mean)|^2 / 2: the energy of N(mean, cov), cov = L L^T, in float32."""

    def __init__(self, mean: list[float], cov: list[list[float]]) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.tensor(mean), requires_grad=False)
        self.register_buffer("chol", torch.linalg.cholesky(torch.tensor(cov)))

    def forward(self, x: Tensor) -> Tensor:
        z = torch.linalg.solve_triangular(self.chol, (x - self.mean).T, upper=False)
        return 0.5 * z.pow(2).sum(dim=0)


def gaussian_kl(m0: list[float], c0: list[list[float]], m1: list[float], c1: list[list[float]]) -> float:
    """KL(N(m0, c0) || N(m1, c1)) in closed form."""
    m0_, m1_ = torch.tensor(m0, dtype=torch.float64), torch.tensor(m1, dtype=torch.float64)
    c0_, c1_ = torch.tensor(c0, dtype=torch.float64), torch.tensor(c1, dtype=torch.float64)
    inv = torch.linalg.inv(c1_)
    d = m1_ - m0_
    return 0.5 * float(torch.trace(inv @ c0_) + d @ inv @ d - 2 + torch.logdet(c1_) - torch.logdet(c0_))


P_MEAN, P_COV = [0.5, -1.0], [[1.0, 0.3], [0.3, 0.5]]
Q_MEAN, Q_COV = [-0.3, -0.6], [[0.6, -0.1], [-0.1, 0.9]]


def gaussian_dataset(n: int = 2000, density: GaussianDensity | None = None) -> Dataset:
    density = density or GaussianDensity(P_MEAN, P_COV)
    x = density.sample(n, torch.Generator().manual_seed(0))
    return Dataset("gauss", x, x, x, BOX, "continuous", density=density)


def gaussian_ebm(mean: list[float] = Q_MEAN, cov: list[list[float]] = Q_COV) -> EBM:
    return EBM(GaussianEnergy(mean, cov), BOX, PCDParams(buffer_size=1)).eval()


def test_kl_between_gaussians_matches_the_closed_form_both_ways() -> None:
    model, dataset = gaussian_ebm(), gaussian_dataset(10)
    forward, _, meta = MODEL_METRICS.get("kl_data_model").fn(model, dataset)
    reverse, _, meta_rev = MODEL_METRICS.get("kl_model_data").fn(model, dataset)
    assert forward == pytest.approx(gaussian_kl(P_MEAN, P_COV, Q_MEAN, Q_COV), abs=1e-4)
    assert reverse == pytest.approx(gaussian_kl(Q_MEAN, Q_COV, P_MEAN, P_COV), abs=1e-4)
    assert meta["kl_model_data"] == reverse and meta_rev["kl_data_model"] == forward  # one quadrature, both rows
    assert meta["converged"] and meta["kl_kind"] == "exact" and meta["what"] == "KL(p_data || q_model)"
    assert meta["data_mass_in_box"] == pytest.approx(1.0, abs=1e-6)
    # the model's log Z on the box: the Gaussian's normalizer 2 pi sqrt(det cov)
    assert meta["log_z_model"] == pytest.approx(math.log(2 * math.pi) + 0.5 * math.log(0.6 * 0.9 - 0.01), abs=1e-5)


def test_kl_of_the_exact_energy_to_its_density_is_zero() -> None:
    density = get_density("eight_gaussians")

    class TrueEnergy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)

        def forward(self, x: Tensor) -> Tensor:
            return -density.log_prob(x.double()).float() + 3.0  # float32 and an arbitrary offset

    x = density.sample(10, torch.Generator().manual_seed(0))
    dataset = Dataset("eight_gaussians", x, x, x, density.box, "continuous", density=density)
    model = EBM(TrueEnergy(), density.box, PCDParams(buffer_size=1))
    value, _, meta = MODEL_METRICS.get("kl_model_data").fn(model, dataset)
    assert abs(value) < 1e-5 and abs(meta["kl_data_model"]) < 1e-5
    assert meta["log_z_model"] == pytest.approx(-3.0, abs=1e-5) and meta["converged"]


class BoxlessGaussian(GenerativeModel):
    """A log_prob-only model, N(0, I) on R^2, much of whose mass lies outside its small support box."""

    capabilities = frozenset({"log_prob"})

    def log_prob(self, x: Tensor) -> Tensor:
        return -0.5 * x.pow(2).sum(dim=1) - math.log(2 * math.pi)


def test_a_log_prob_model_is_renormalized_on_the_box() -> None:
    box = Box(-1.5, 1.5, (2,))
    model = BoxlessGaussian(nn.Linear(1, 1), box)
    same = GaussianDensity([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], box)
    x = torch.zeros(4, 2)
    value, _, meta = MODEL_METRICS.get("kl_data_model").fn(model, Dataset("g", x, x, x, box, "c", density=same))
    mass = (scipy.stats.norm.cdf(1.5) - scipy.stats.norm.cdf(-1.5)) ** 2
    assert abs(value) < 1e-6 and meta["data_mass_in_box"] == pytest.approx(mass, rel=1e-6)
    assert meta["log_z_model"] == pytest.approx(math.log(mass), abs=1e-6) and "renormalized" in meta["normalization"]


def test_kl_rows_say_why_they_do_not_apply() -> None:
    no_density = Dataset("plain", torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 2), BOX, "c")
    with pytest.raises(NotApplicable, match="no exact density"):
        MODEL_METRICS.get("kl_data_model").fn(gaussian_ebm(), no_density)

    class ScoreOnly(GenerativeModel):
        capabilities = frozenset({"score"})

    with pytest.raises(NotApplicable, match="'energy' or 'log_prob'"):
        MODEL_METRICS.get("kl_model_data")(ScoreOnly(nn.Linear(1, 1), BOX), gaussian_dataset(10))  # from requires


def test_forward_kl_of_the_quadrature_row_is_paired_with_the_true_density_row() -> None:
    model, dataset = gaussian_ebm(), gaussian_dataset(4000)
    nll, nll_se, meta = MODEL_METRICS.get("nll_heldout").fn(model, dataset, max_points=3000)
    floor, _, floor_meta = MODEL_METRICS.get("nll_true_density").fn(model, dataset, max_points=3000)
    assert meta["n"] == floor_meta["n"] == 3000 and meta["test_split_size"] == 4000
    assert meta["forward_kl"] == pytest.approx(nll - floor, abs=1e-9)  # NLL - H(p) on the same points
    assert meta["forward_kl_kind"] == "exact" and meta["forward_kl_stderr"] < nll_se  # pairing cancels H(p)'s noise
    exact = gaussian_kl(P_MEAN, P_COV, Q_MEAN, Q_COV)
    assert abs(meta["forward_kl"] - exact) < 4 * meta["forward_kl_stderr"], (meta["forward_kl"], exact)

    rows = forward_kl_values([MetricValue("nll_heldout", nll, nll_se, meta=meta),
                              MetricValue("nll_true_density", floor, meta=floor_meta),
                              MetricValue("nll_pf_ode", None, status="failed", reason="solver failed")])
    assert len(rows) == 1
    row = rows[0]
    assert (row.metric, row.value, row.stderr) == ("forward_kl_heldout", meta["forward_kl"], meta["forward_kl_stderr"])
    assert row.meta["from_metric"] == "nll_heldout" and row.meta["likelihood_kind"] == "exact"
    assert row.meta["n"] == row.n_samples == 3000
