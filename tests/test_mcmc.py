"""MALA and HMC sample the target exactly (unlike ULA), respect the support, count NFE; ESS and R-hat are right."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import truncnorm
from torch import Tensor

from ebmbench.methods.ebm import EBM, PCDParams
from ebmbench.metrics.mcmc import chain_energies, energy_trace, ess, split_rhat
from ebmbench.protocol import Box
from ebmbench.samplers.hmc import hmc_chain
from ebmbench.samplers.langevin import ula
from ebmbench.samplers.mala import mala_chain

MU = torch.tensor([0.5, -1.0])
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.5]])  # correlated; Hessian eigenvalues 0.71 and 10
PRECISION = torch.linalg.inv(SIGMA)
WIDE = Box(-50.0, 50.0, (2,))


def energy(x: Tensor) -> Tensor:
    d = x - MU
    return 0.5 * ((d @ PRECISION) * d).sum(dim=1)


def target_samples(n: int, generator: torch.Generator, temperature: float = 1.0) -> Tensor:
    chol = torch.linalg.cholesky(temperature * SIGMA)
    return MU + torch.randn(n, 2, generator=generator) @ chol.T


def moment_errors(x: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """|sample moment - exact| in standard errors of i.i.d. draws: mean_0, mean_1, cov_00, cov_01, cov_11."""
    n = x.shape[0]
    mean_z = (x.mean(dim=0) - mu) / (sigma.diagonal() / n).sqrt()
    cov = torch.cov(x.T)
    cov_se = ((sigma.diagonal()[:, None] * sigma.diagonal()[None, :] + sigma**2) / n).sqrt()
    cov_z = (cov - sigma) / cov_se
    return torch.cat([mean_z, cov_z[0, 0:2], cov_z[1, 1:2]]).abs()


def run_chain(name: str, x0: Tensor, steps: int, temperature: float, generator: torch.Generator, **kw):
    if name == "mala":
        return mala_chain(energy, x0, steps=steps, eps=kw.get("eps", 0.1), temperature=temperature,
                          generator=generator, box=WIDE)
    return hmc_chain(energy, x0, steps=steps, leapfrog_steps=5, step_size=kw.get("eps", 0.2),
                     temperature=temperature, step_jitter=0.2, generator=generator, box=WIDE)


def test_ula_reaches_its_discretized_law_not_the_target():
    # x' = x - eps P (x - mu) + sqrt(2 eps T) xi has mean mu and covariance T (P - eps P^2 / 2)^-1 exactly.
    g, eps = torch.Generator().manual_seed(1), 0.1
    x, _ = ula(energy, target_samples(20000, g), steps=60, eps=eps, temperature=1.0, generator=g, box=WIDE,
               support_mode="none")
    discretized = torch.linalg.inv(PRECISION - 0.5 * eps * PRECISION @ PRECISION)
    assert (moment_errors(x, MU, discretized) < 4).all()
    assert moment_errors(x, MU, SIGMA).max() > 10  # ... which is detectably not the target


@pytest.mark.parametrize("name", ["mala", "hmc"])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_mala_and_hmc_reach_the_target_from_overdispersed_starts(name, temperature):
    g = torch.Generator().manual_seed(2)
    x0 = MU + 3.0 * torch.randn(20000, 2, generator=g)
    x, stats = run_chain(name, x0, 100, temperature, g)
    assert (moment_errors(x, MU, temperature * SIGMA) < 4).all(), moment_errors(x, MU, temperature * SIGMA)
    assert 0.5 < stats.acceptance < 1.0


@pytest.mark.parametrize("name, eps", [("mala", 0.15), ("hmc", 0.25)])
def test_exact_target_samples_stay_exact(name, eps):
    # At this step ULA's stationary law is far off (variance 4x along the stiff direction); the MH step fixes it.
    g = torch.Generator().manual_seed(3)
    x0 = target_samples(20000, g)
    x, stats = run_chain(name, x0, 10, 1.0, g, eps=eps)
    assert (moment_errors(x, MU, SIGMA) < 4).all(), moment_errors(x, MU, SIGMA)
    assert stats.acceptance < 0.97  # the test is not vacuous: many proposals were rejected
    x_ula, _ = ula(energy, x0, steps=10, eps=0.15, temperature=1.0, generator=g, box=WIDE, support_mode="none")
    assert moment_errors(x_ula, MU, SIGMA).max() > 20


def test_mala_acceptance_falls_as_the_step_grows():
    g = torch.Generator().manual_seed(4)
    x0 = target_samples(5000, g)
    rates = [mala_chain(energy, x0, steps=10, eps=eps, generator=g)[1].acceptance for eps in (0.003, 0.1, 0.3, 1.0)]
    assert rates[0] > 0.99 and rates[-1] < 0.15
    assert all(a > b + 0.05 for a, b in zip(rates, rates[1:])), rates


def test_hmc_step_jitter_breaks_periodic_trajectories():
    # h L = 1 and the stiff mode has omega = sqrt(10): a fixed trajectory maps it to about -itself (Neal 2011, 5.4.2.2).
    g = torch.Generator().manual_seed(5)
    x0 = MU + 3.0 * torch.randn(20000, 2, generator=g)
    fixed, _ = hmc_chain(energy, x0, steps=100, leapfrog_steps=5, step_size=0.2, generator=g)
    jittered, _ = hmc_chain(energy, x0, steps=100, leapfrog_steps=5, step_size=0.2, step_jitter=0.2, generator=g)
    assert moment_errors(fixed, MU, SIGMA).max() > 20
    assert (moment_errors(jittered, MU, SIGMA) < 4).all()


@pytest.mark.parametrize("sampler, budget, nfe", [
    ("mala", {"steps": 7, "eps": 0.05}, 8),
    ("hmc", {"steps": 3, "leapfrog_steps": 4, "step_size": 0.1}, 13),
])
def test_registered_samplers_report_counted_nfe_and_info(gaussian_ebm, sampler, budget, nfe):
    model = gaussian_ebm()
    s = model.sample(10, generator=torch.Generator().manual_seed(0), sampler=sampler, batch_size=4,
                     temperature=0.5, **budget)
    assert (s.cost.nfe, s.cost.grad_evals) == (nfe, nfe)  # sample() also checked the claim against counted calls
    assert s.tempered and s.info["temperature"] == 0.5
    assert 0.0 <= s.info["acceptance"] <= 1.0
    assert s.info["energy_trace_steps"] == list(range(budget["steps"] + 1))
    assert len(s.info["energy_trace"]) == budget["steps"] + 1


def test_registered_samplers_reach_the_target(gaussian_ebm):
    model = gaussian_ebm(mu=(0.5, -1.0), var=(1.0, 0.25))  # started uniformly on [-50, 50]^2
    sigma = torch.diag(torch.tensor([1.0, 0.25]))
    for sampler, budget in [("mala", {"steps": 250, "eps": 0.1}), ("hmc", {"steps": 60, "step_size": 0.1})]:
        s = model.sample(10000, generator=torch.Generator().manual_seed(6), sampler=sampler, **budget)
        assert (moment_errors(s.x, MU, sigma) < 4).all(), (sampler, moment_errors(s.x, MU, sigma))
        assert s.info["energy_trace"][0] > 100 * s.info["energy_trace"][-1]  # the trace shows the burn-in


def truncated_moments(mu: float, var: float, low: float, high: float) -> tuple[float, float, float]:
    """Mean, variance and standard error of the sample variance of N(mu, var) truncated to [low, high]."""
    s = math.sqrt(var)
    dist = truncnorm((low - mu) / s, (high - mu) / s, loc=mu, scale=s)
    m, v = dist.mean(), dist.var()
    m4 = dist.expect(lambda x: (x - m) ** 4)
    return m, v, m4 - v * v


@pytest.mark.parametrize("sampler, budget", [("mala", {"steps": 150, "eps": 0.05}),
                                             ("hmc", {"steps": 40, "step_size": 0.1, "leapfrog_steps": 5})])
def test_rejection_at_the_support_samples_the_truncated_density(gaussian_ebm, sampler, budget):
    net = gaussian_ebm(mu=(0.5, -1.0), var=(1.0, 0.25)).net.net
    box = Box(-1.0, 1.0, (2,))  # cuts the first coordinate at +-1.5 sd, the second through its mode
    model = EBM(net, box, PCDParams(buffer_size=4))
    n = 20000
    x = model.sample(n, generator=torch.Generator().manual_seed(7), sampler=sampler, **budget).x
    assert bool(box.contains(x).all())
    for d, (mu, var) in enumerate([(0.5, 1.0), (-1.0, 0.25)]):
        m, v, var_of_sq = truncated_moments(mu, var, -1.0, 1.0)
        assert abs(float(x[:, d].mean()) - m) < 4 * math.sqrt(v / n), (d, float(x[:, d].mean()), m)
        assert abs(float(x[:, d].var()) - v) < 4 * math.sqrt(var_of_sq / n), (d, float(x[:, d].var()), v)


def test_unsupported_support_mode_is_refused(gaussian_ebm):
    with pytest.raises(ValueError, match="'reject' or 'none'"):
        gaussian_ebm().sample(4, generator=torch.Generator(), sampler="mala", support_mode="clamp")


def ar1_chains(rhos: list[float], n_chains: int, n_steps: int, seed: int) -> Tensor:
    """Stationary AR(1) chains, one coordinate per rho: (n_chains, n_steps, len(rhos))."""
    g = torch.Generator().manual_seed(seed)
    rho = torch.tensor(rhos, dtype=torch.float64)
    z = torch.randn(n_steps, n_chains, len(rhos), generator=g, dtype=torch.float64)
    x = [z[0]]
    for t in range(1, n_steps):
        x.append(rho * x[-1] + (1 - rho**2).sqrt() * z[t])
    return torch.stack(x, dim=1)


def test_ess_of_ar1_chains_matches_closed_form():
    rhos = [0.0, 0.5, 0.9]
    chains = ar1_chains(rhos, n_chains=200, n_steps=2000, seed=8)
    s = chains.shape[0] * chains.shape[1]
    out = ess(chains)
    assert out.shape == (3,)
    for rho, value in zip(rhos, out.tolist()):
        exact = s * (1 - rho) / (1 + rho)
        assert abs(value / exact - 1) < 0.1, (rho, value, exact)
    assert torch.allclose(ess(chains[..., 1]), out[1])  # (n_chains, n_steps) gives the same scalar


def classical_split_rhat(x: np.ndarray) -> float:
    """Independent BDA3 formula on numpy: split, then sqrt(((n-1)/n W + B/n) / W)."""
    half = x.shape[1] // 2
    parts = np.concatenate([x[:, :half], x[:, -half:]])
    n = parts.shape[1]
    w = parts.var(axis=1, ddof=1).mean()
    b = n * parts.mean(axis=1).var(ddof=1)
    return math.sqrt(((n - 1) / n * w + b / n) / w)


def test_split_rhat_on_iid_shifted_and_rescaled_chains():
    g = torch.Generator().manual_seed(9)
    iid = torch.randn(4, 1000, generator=g, dtype=torch.float64)
    assert float(split_rhat(iid)) < 1.01 and float(split_rhat(iid, rank=False)) < 1.01
    shifted = iid + torch.tensor([0.0, 0.0, 0.0, 2.0], dtype=torch.float64)[:, None]
    assert float(split_rhat(shifted)) > 1.1
    assert math.isclose(float(split_rhat(shifted, rank=False)), classical_split_rhat(shifted.numpy()), rel_tol=1e-12)
    drifting = iid + torch.linspace(0, 2, 1000, dtype=torch.float64)  # every chain drifts: only splitting sees it
    assert float(split_rhat(drifting)) > 1.1
    rescaled = iid * torch.tensor([1.0, 1.0, 3.0, 3.0], dtype=torch.float64)[:, None]  # same mean, other scale
    assert float(split_rhat(rescaled, rank=False)) < 1.02 < 1.1 < float(split_rhat(rescaled))  # folding sees it


def test_energy_trace_thins_evenly_and_averages_chains():
    energies = torch.arange(101, dtype=torch.float64)[None, :] + torch.tensor([[0.0], [2.0]])
    trace = energy_trace(energies, max_points=11)
    assert trace["steps"] == list(range(0, 101, 10))
    assert trace["mean_energy"] == [s + 1.0 for s in range(0, 101, 10)]
    states = torch.stack([target_samples(3, torch.Generator().manual_seed(t)) for t in range(5)])
    recorded = chain_energies(energy, states)
    assert recorded.shape == (3, 5) and torch.allclose(recorded[:, 2], energy(states[2]))
