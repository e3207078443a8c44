"""log Z by quadrature and held-out NLL against a Gaussian mixture with a closed-form mass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.methods.ebm import EBM, PCDParams
from ebmbench.metrics.density import quadrature_nll
from ebmbench.metrics.likelihood import heldout_nll, log_partition_quadrature
from ebmbench.protocol import Box

BOX = Box(-4.0, 4.0, (2,))
WEIGHTS = np.array([0.5, 1.7, 0.9])
MEANS = np.array([[-1.5, -1.0], [1.5, 0.5], [0.0, 2.0]])
STDS = np.array([[0.3, 0.3], [0.5, 0.35], [0.4, 0.25]])  # every mean >= 5 std inside the box
SHIFT = 3.7  # the energy's additive constant c


class MixtureEnergy(nn.Module):
    """E(x) = -log sum_k w_k exp(-|(x - mu_k) / s_k|^2 / 2) + c, in float32."""

    def __init__(self) -> None:
        super().__init__()
        self.log_w = nn.Parameter(torch.tensor(np.log(WEIGHTS), dtype=torch.float32), requires_grad=False)
        self.register_buffer("mu", torch.tensor(MEANS, dtype=torch.float32))
        self.register_buffer("s", torch.tensor(STDS, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        z = (x[:, None, :] - self.mu) / self.s
        return -torch.logsumexp(self.log_w - 0.5 * (z**2).sum(-1), dim=1) + SHIFT


def _log_mass_in_box() -> float:
    """log of the unnormalized mixture's mass inside BOX, exactly (product of normal CDFs)."""
    inside = scipy.stats.norm.cdf((BOX.high - MEANS) / STDS) - scipy.stats.norm.cdf((BOX.low - MEANS) / STDS)
    mass = WEIGHTS * 2 * math.pi * STDS.prod(axis=1) * inside.prod(axis=1)
    return math.log(mass.sum())


def test_log_partition_matches_closed_form() -> None:
    energy = MixtureEnergy().eval()
    log_z, err = log_partition_quadrature(energy, BOX)
    assert log_z == pytest.approx(_log_mass_in_box() - SHIFT, abs=1e-3)
    assert err < 1e-3


def test_refinement_error_flags_a_coarse_grid() -> None:
    log_z, err = log_partition_quadrature(MixtureEnergy().eval(), BOX, n=16)
    assert abs(log_z - (_log_mass_in_box() - SHIFT)) > 1e-3  # two panels per axis cannot resolve std 0.25
    assert err > 1e-3


def test_heldout_nll_matches_exact_log_density() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    comp = rng.choice(
        len(WEIGHTS), size=n, p=WEIGHTS * STDS.prod(axis=1) / (WEIGHTS * STDS.prod(axis=1)).sum()
    )
    x = MEANS[comp] + STDS[comp] * rng.standard_normal((n, 2))
    # exact -log p(x) of the box-normalized mixture, in float64 with scipy
    log_f = scipy.special.logsumexp(
        np.log(WEIGHTS)
        + scipy.stats.norm.logpdf(x[:, None, :], MEANS, STDS).sum(-1)
        + np.log(2 * math.pi * STDS.prod(axis=1)),
        axis=1,
    )
    exact = -(log_f - _log_mass_in_box())

    energy = MixtureEnergy().eval()
    log_z, _ = log_partition_quadrature(energy, BOX)
    mean, se = heldout_nll(energy, torch.tensor(x, dtype=torch.float32), log_z)
    assert mean == pytest.approx(exact.mean(), abs=1e-3)
    assert se == pytest.approx(exact.std(ddof=1) / math.sqrt(n), rel=1e-3)


def test_quadrature_refuses_high_dimensional_boxes() -> None:
    with pytest.raises(ValueError, match=r"only tractable for 2D.*AIS.*64"):
        log_partition_quadrature(lambda x: x.sum(-1), Box(-1.0, 1.0, (64,)))


def test_quadrature_nll_is_an_estimate_when_log_z_did_not_converge() -> None:
    model = EBM(MixtureEnergy(), BOX, PCDParams(buffer_size=1))
    x = torch.tensor(MEANS, dtype=torch.float32)
    dataset = Dataset("mix", x, x, x, BOX, "continuous")
    value, _, meta = quadrature_nll(model, dataset)
    assert meta["converged"] and meta["likelihood_kind"] == "exact" and "estimate_reason" not in meta
    coarse, _, coarse_meta = quadrature_nll(model, dataset, n_max=16)  # two panels per axis: not resolved
    assert not coarse_meta["converged"] and coarse_meta["grid"] == 16 and coarse_meta["quadrature_error"] > 1e-4
    assert coarse_meta["likelihood_kind"] == "estimate" and "did not converge" in coarse_meta["estimate_reason"]
    assert abs(coarse - value) > 1e-3  # and the value it would have called exact is off
    assert "forward_kl" not in meta  # no exact data density here
