"""RealNVP: exact log-determinant, exact inverse, normalization, samples vs density, cost, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import mmd_before_and_after
from scipy import stats

import ebmbench.methods.flow  # noqa: F401  (registers realnvp before builtins import it)
from ebmbench import run
from ebmbench.data.images import digits_dataset
from ebmbench.methods.flow import Flow, RealNVPParams, build_realnvp, dequantize, flow_nll
from ebmbench.metrics.cost import sample_with_cost
from ebmbench.metrics.likelihood import log_partition_quadrature
from ebmbench.nets.flow import RealNVP
from ebmbench.protocol import Box


def random_flow(shape: tuple[int, ...], std: float = 0.5, seed: int = 0) -> Flow:
    """A float64 RealNVP with every parameter ~ N(0, std^2): far from the identity it starts as."""
    net = RealNVP(shape, n_couplings=4, hidden=16, depth=2).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return Flow(net, Box(-4.0, 4.0, shape), RealNVPParams(), shape)


@pytest.mark.parametrize("shape", [(2,), (1, 4, 4)])
def test_log_det_equals_autograd_jacobian(shape):
    flow = random_flow(shape)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_det = flow.net(x)[1].detach()
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: flow.net(v.view(1, *shape))[0].reshape(-1),
                                                 x[i].reshape(-1))
        _, logabsdet = torch.linalg.slogdet(jac)
        assert float(log_det[i]) == pytest.approx(float(logabsdet), abs=1e-10)
    assert log_det.abs().min() > 0.1  # a non-trivial volume change, not an identity flow


@pytest.mark.parametrize("shape", [(2,), (1, 4, 4)])
def test_inverse_undoes_forward(shape):
    flow = random_flow(shape)
    x = torch.randn(64, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z, _ = flow.net(x)
    assert (z - x).abs().max() > 0.1
    torch.testing.assert_close(flow.net(z, reverse=True), x, rtol=0, atol=1e-10)
    torch.testing.assert_close(flow.net(flow.net(z, reverse=True))[0], z, rtol=0, atol=1e-10)


def test_density_integrates_to_one_and_energy_is_minus_log_prob():
    flow = random_flow((2,))
    log_z, err = log_partition_quadrature(flow.energy, Box(-20.0, 20.0, (2,)), n=512, dtype=torch.float64)
    assert abs(log_z) < 1e-6 and err < 1e-6
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(flow.energy(x), -flow.log_prob(x))


def cell_masses(flow: Flow, edges: torch.Tensor, per_cell: int = 16) -> torch.Tensor:
    """Probability of each grid cell: tensor-product Gauss-Legendre quadrature of exp(log_prob) in each cell."""
    nodes, weights = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(per_cell))
    lo, hi = edges[:-1], edges[1:]
    pts = (lo[:, None] + (hi - lo)[:, None] * (nodes[None] + 1) / 2).reshape(-1)  # (cells * per_cell,)
    w = ((hi - lo)[:, None] / 2 * weights[None]).reshape(-1)
    gx, gy = torch.meshgrid(pts, pts, indexing="ij")
    with torch.no_grad():
        p = flow.log_prob(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1).double()).exp().view_as(gx)
    mass = p * w[:, None] * w[None, :]
    k = len(lo)
    return mass.view(k, per_cell, k, per_cell).sum(dim=(1, 3))


def test_samples_follow_log_prob_chi_square():
    flow = random_flow((2,))
    n = 20000
    x = flow.sample(n, generator=torch.Generator().manual_seed(3)).x
    edges = torch.linspace(-4.0, 4.0, 9, dtype=torch.float64)
    mass = cell_masses(flow, edges)
    expected = torch.cat([mass.reshape(-1), (1.0 - mass.sum()).reshape(1)]) * n
    ix = torch.bucketize(x[:, 0].contiguous(), edges) - 1
    iy = torch.bucketize(x[:, 1].contiguous(), edges) - 1
    inside = (ix >= 0) & (ix < 8) & (iy >= 0) & (iy < 8)
    observed = torch.bincount((ix * 8 + iy)[inside], minlength=64).double()
    observed = torch.cat([observed, (~inside).sum().double().reshape(1)])
    keep = expected > 5  # the chi-square approximation needs enough expected counts per cell
    obs, exp = observed[keep], expected[keep]
    obs_rest, exp_rest = observed[~keep].sum(), expected[~keep].sum()
    chi2 = float(((obs - exp) ** 2 / exp).sum() + (obs_rest - exp_rest) ** 2 / exp_rest)
    dof = int(keep.sum())  # (kept cells + 1 pooled cell) - 1
    assert dof > 30
    assert stats.chi2.sf(chi2, dof) > 1e-3, (chi2, dof)


def test_sampling_is_one_call_and_log_prob_is_one_call():
    flow = random_flow((2,)).float()
    s = sample_with_cost(flow, 32, sampler="generator", budget={}, generator=torch.Generator().manual_seed(0))
    assert s.cost.nfe == 1 and s.cost.grad_evals == 0 and s.cost.flops_per_sample > 0
    assert s.x.shape == (32, 2)
    flow.net.reset()
    flow.log_prob(s.x)
    assert flow.net.forward_calls == 1
    clamped = flow.sample(2000, generator=torch.Generator().manual_seed(0), support_mode="clamp").x
    assert flow.support.contains(clamped).all()


def test_digits_are_dequantized_by_one_level_width():
    data = digits_dataset()
    flow = build_realnvp(data, RealNVPParams(n_couplings=2, hidden=8, depth=1))
    assert flow.bin_width == 2.0 / 16.0 and flow.latent_shape == (1, 8, 8)
    x = data.train[:200]
    noisy = dequantize(x, flow.bin_width, torch.Generator().manual_seed(0))
    u = (noisy - x) / flow.bin_width
    assert u.min() >= -0.5 and u.max() < 0.5 and abs(float(u.mean())) < 0.01 and float(u.std()) > 0.28
    loss, diag = flow_nll(flow, x, torch.Generator().manual_seed(0), flow.params)
    expected = -flow.log_prob(noisy)  # same generator state -> the same noise
    torch.testing.assert_close(loss, expected)
    assert diag["nll_per_dim"] == pytest.approx(diag["loss"] / 64)
    assert build_realnvp(data, RealNVPParams(dequantize=False)).bin_width == 0.0


@pytest.mark.slow
def test_trained_realnvp_closes_half_the_mmd_gap(tmp_path):
    params = {"dataset": "eight_gaussians", "method": "realnvp", "suite": "flow", "threads": 1, "train_steps": 200,
              "batch_size": 128, "lr": 1e-3, "ema_decay": 0.99, "log_every": 50, "checkpoint_every": 1000,
              "n_couplings": 6, "hidden": 64, "depth": 2}
    untrained, trained, _ = mmd_before_and_after(tmp_path, params)
    floor = trained["floor"]
    assert trained["mmd2"] - floor < 0.5 * (untrained["mmd2"] - floor)
    assert math.isfinite(trained["mmd2"])


def test_resumed_flow_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path):
    """The dequantization noise comes from the checkpointed generator, so a resumed run is identical."""
    params = {"dataset": "digits", "method": "realnvp", "results_dir": str(tmp_path), "train_steps": 8,
              "checkpoint_every": 4, "log_every": 2, "batch_size": 16, "threads": 1, "hidden": 16, "depth": 1,
              "n_couplings": 2}
    full = run.start({**params, "suite": "full"})
    run.fit(full, progress=False)
    first = run.start({**params, "suite": "resumed"})
    assert run.fit(first, stop_after=6, progress=False).status == "interrupted"
    again = run.start({**params, "suite": "resumed"})
    assert run.fit(again, progress=False).status == "ok"
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
