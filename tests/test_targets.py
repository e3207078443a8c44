"""The analytic sampling targets (ebmbench/data/targets.py): exact log Z by quadrature, exact samplers by two-sample
tests against independent constructions, closed-form gradients against autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from ebmbench.data.targets import Funnel, Target, fab_gmm_means, get_target
from ebmbench.metrics.likelihood import log_partition_refined

P_MIN = 1e-3  # a correct sampler fails one of these tests with probability 1e-3


def test_many_well_log_z_by_quadrature() -> None:
    t = get_target("many_well")
    z1, err = integrate.quad(lambda x: math.exp(-(x**4 - 6 * x**2 - 0.5 * x)), -math.inf, math.inf, epsabs=0,
                             epsrel=1e-12)
    assert abs(t.log_z - 16 * (math.log(z1) + 0.5 * math.log(2 * math.pi))) < 1e-8
    assert abs(t.log_z - 16 * (math.log(11784.50927) + 0.5 * math.log(2 * math.pi))) < 1e-6  # the constant


def test_funnel_is_normalized_by_quadrature() -> None:
    """Gauss-Legendre in (x0, u) with x1 = u e^{x0 / 2} (Jacobian e^{x0 / 2}), x0 in [-27, 27], u in [-12, 12]."""
    t = Funnel(dim=2)
    nodes, weights = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(300))
    x0, u = 27 * nodes, 12 * nodes
    g0, gu = torch.meshgrid(x0, u, indexing="ij")
    x = torch.stack([g0, gu * torch.exp(g0 / 2)], -1)
    integrand = torch.exp(-t.energy(x) + g0 / 2)
    z = float((integrand * (27 * weights)[:, None] * (12 * weights)[None, :]).sum())
    assert abs(z - 1.0) < 1e-8 and get_target("funnel").log_z == 0.0


def test_gmm40_is_fabs_mixture_and_normalized() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)  # fab-torch examples/gmm.py: torch.manual_seed(0) before GMM(...)
        means = (torch.rand((40, 2)) - 0.5) * 2 * 40
    assert torch.equal(fab_gmm_means(), means)
    t = get_target("gmm40")
    log_z, err, _ = log_partition_refined(lambda x: t.energy(x.double()), t.support, tol=1e-8, n_start=256,
                                          n_max=1024, dtype=torch.float64)
    assert abs(log_z) < 1e-6 and err < 1e-6
    x = t.sample(100, torch.Generator().manual_seed(0))
    assert torch.allclose(-t.energy(x), t.density.log_prob(x), atol=1e-10)


def _fab_gmm() -> torch.distributions.Distribution:
    """FAB's own construction (fab/target_distributions/gmm.py): Categorical + MultivariateNormal(scale_tril)."""
    means = fab_gmm_means().double()
    scale = torch.diag_embed(torch.nn.functional.softplus(torch.ones(40, 2, dtype=torch.float64)))
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(torch.ones(40)),
                                                 torch.distributions.MultivariateNormal(means, scale_tril=scale))


def _many_well_x1_by_rejection(n: int, generator: torch.Generator) -> torch.Tensor:
    """Exact draws of the 1D double well by rejection from U[-4, 4] (exp(-E_1) peaks near e^9.9 < e^10.5)."""
    out = []
    while sum(len(o) for o in out) < n:
        x = 8 * torch.rand(4 * n, generator=generator, dtype=torch.float64) - 4
        log_f = -(x**4 - 6 * x**2 - 0.5 * x)
        keep = torch.rand(4 * n, generator=generator, dtype=torch.float64).log() < log_f - 10.5
        out.append(x[keep])
    return torch.cat(out)[:n]


def test_samplers_pass_two_sample_tests() -> None:
    g = torch.Generator().manual_seed(1)
    ref = torch.Generator().manual_seed(2)
    funnel = get_target("funnel").sample(4000, g)
    x0 = 3 * torch.randn(4000, generator=ref, dtype=torch.float64)
    x1 = torch.randn(4000, generator=ref, dtype=torch.float64) * torch.exp(x0 / 2)
    assert stats.ks_2samp(funnel[:, 0], x0).pvalue > P_MIN
    assert stats.ks_2samp(funnel[:, 5], x1).pvalue > P_MIN
    gmm = get_target("gmm40").sample(4000, g)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        fab = _fab_gmm().sample((4000,))
    for d in (0, 1):
        assert stats.ks_2samp(gmm[:, d], fab[:, d]).pvalue > P_MIN
    well = get_target("many_well").sample(4000, g)
    assert stats.ks_2samp(well[:, 0], _many_well_x1_by_rejection(4000, ref)).pvalue > P_MIN
    assert stats.kstest(well[:, 1], "norm").pvalue > P_MIN


def test_a_wrong_sampler_fails_the_two_sample_test() -> None:
    """The tests above can fail: a funnel with x0 ~ N(0, 2.5^2) is told apart."""
    g, ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    wrong = 2.5 * torch.randn(4000, generator=g, dtype=torch.float64)
    assert stats.ks_2samp(wrong, 3 * torch.randn(4000, generator=ref, dtype=torch.float64)).pvalue < P_MIN


@pytest.mark.parametrize("name", ["funnel", "gmm40", "many_well"])
def test_closed_form_gradients_match_autograd(name: str) -> None:
    t = get_target(name)
    x = t.sample(16, torch.Generator().manual_seed(0)).reshape(2, 8, -1)
    e, g = t.energy_and_grad(x)
    e_ref, g_ref = Target.energy_and_grad(t, x)
    assert torch.allclose(e, e_ref) and torch.allclose(g, g_ref, atol=1e-10)


def test_gmm40_is_a_training_dataset_with_the_2d_metrics() -> None:
    from ebmbench.builtins import load_dataset
    from ebmbench.metrics.sample_metrics import mode_tv

    d = load_dataset("gmm40")
    assert d.shape == (2,) and d.density is not None and d.support.high == 50.0
    value, _, meta = mode_tv(d.test[:500], d)
    assert meta["n_modes"] == 40 and value < 0.2  # exact samples: near the floor


def test_importance_ess_is_one_for_the_exact_density_and_less_otherwise() -> None:
    """FAB's eval_ess_flow: ESS / N = 1 when q = p; below 1 (and as computed by hand) when q differs."""
    from test_likelihood import random_flow

    from ebmbench.data.base import Dataset
    from ebmbench.metrics.importance import is_ess, normalized_ess

    flow = random_flow((2,))
    x = torch.zeros(10, 2)

    class Same:  # the model's own density as the data density
        log_prob = staticmethod(lambda y: flow.log_prob(y.float()).double())

    value, _, meta = is_ess(flow, Dataset("same", x, x, x, flow.support, "c", density=Same()), n=2000)
    assert abs(value - 1.0) < 1e-6 and meta["n"] == 2000
    other = Dataset("gmm40", x, x, x, flow.support, "c", density=get_target("gmm40").density)
    value, _, _ = is_ess(flow, other, n=2000)
    assert value < 0.5
    log_w = torch.tensor([0.0, 0.0, math.log(2.0)], dtype=torch.float64)
    assert abs(normalized_ess(log_w) - (4.0**2 / 6.0) / 3) < 1e-12  # (sum w)^2 / (N sum w^2)
