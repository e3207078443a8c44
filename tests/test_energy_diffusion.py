"""Energy-parameterized diffusion (Du et al. 2023) and reverse diffusion with MCMC correction, on Gaussian data.

For x0 ~ N(mu, Sigma) every noised density p_t = N(sqrt(ab) mu, K_t), K_t = ab Sigma + (1 - ab) I, is known, so
E(x, t) = (x - sqrt(ab) mu)^T K_t^-1 (x - sqrt(ab) mu) / 2 is the exact energy at every level; the method must then
give DDPM's exact eps (conftest.GaussianEpsNet), the analytic PF-ODE NLL and DDPM's ELBO.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import GAUSS_BOX, GAUSS_EYE, GAUSS_MU, GAUSS_SIGMA, GaussianEpsNet, gaussian_ddpm
from torch import Tensor, nn

import ebmbench.builtins  # noqa: F401  (registers the DDPM samplers the method shares)
from ebmbench.data.base import Dataset
from ebmbench.methods.base import METHODS
from ebmbench.methods.diffusion import DDPM, DDPMParams, ddpm_loss
from ebmbench.methods.energy_diffusion import EnergyDDPM, EnergyDDPMParams, build_energy_ddpm
from ebmbench.metrics import elbo, pf_ode
from ebmbench.protocol import CAPABILITY_PROTOCOLS
from ebmbench.samplers.corrected import mcmc_at_level

SMALL = dict(num_train_timesteps=100, ddpm_steps=100, ddim_steps=10, dpm_steps=10, corrected_steps=20)


class GaussianTimeEnergy(nn.Module):
    """E(x, t) = (x - sqrt(ab) mu)^T K^-1 (x - sqrt(ab) mu) / 2 with ab(t) as GaussianEpsNet (log sigma in t)."""

    def __init__(self, alphas_cumprod: Tensor) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)
        ab = alphas_cumprod.double().numpy()
        self.log_sigmas = 0.5 * np.log((1 - ab) / ab)

    def ab(self, t: Tensor) -> Tensor:
        log_sigma = np.interp(t.double().cpu().numpy(), np.arange(len(self.log_sigmas)), self.log_sigmas)
        return 1 / (1 + torch.from_numpy(np.exp(2 * log_sigma)))[:, None]

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        ab = self.ab(t)
        k = ab[:, :, None] * GAUSS_SIGMA + (1 - ab)[:, :, None] * GAUSS_EYE
        d = x.double() - ab.sqrt() * GAUSS_MU
        return (0.5 * (d * torch.linalg.solve(k, d.unsqueeze(-1)).squeeze(-1)).sum(dim=1)).to(x.dtype)


def gaussian_energy_ddpm(params: DDPMParams | None = None) -> EnergyDDPM:
    params = params or EnergyDDPMParams()
    probe = DDPM(nn.Linear(1, 1), GAUSS_BOX, params)
    return EnergyDDPM(GaussianTimeEnergy(probe.make_ddpm_scheduler().alphas_cumprod), GAUSS_BOX, params)


def gaussian_data(n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (GAUSS_MU + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(GAUSS_SIGMA).T
            ).float()


def level_law(model: EnergyDDPM, t: int) -> tuple[Tensor, Tensor]:
    """Mean and covariance of p_t for the Gaussian data."""
    ab = model.make_ddpm_scheduler().alphas_cumprod.double()[t]
    return ab.sqrt() * GAUSS_MU, ab * GAUSS_SIGMA + (1 - ab) * GAUSS_EYE


def test_declared_capabilities_are_protocols_it_implements() -> None:
    model = gaussian_energy_ddpm()
    for cap in ("energy", "eps_prediction", "score", "time_energy"):
        assert model.has(cap) and isinstance(model, CAPABILITY_PROTOCOLS.get(cap, object)), cap


@pytest.mark.parametrize("t", [torch.tensor([0, 7, 500, 999]), torch.tensor([0.25, 7.5, 500.3, 998.9])])
def test_eps_from_the_exact_energy_is_ddpms_exact_eps(t: Tensor) -> None:
    """sigma_t grad_x E(x, t) = E[eps | x_t], on the grid and between grid points (the PF-ODE's fractional t)."""
    model = gaussian_energy_ddpm()
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = GaussianEpsNet(model.make_ddpm_scheduler().alphas_cumprod)(x, t)
    with torch.no_grad():
        torch.testing.assert_close(model.eps(x, t), exact, rtol=1e-6, atol=1e-8)
    # one batched eps = one forward and one backward; the energy at t = 0 one forward
    assert model.energy(x).shape == (4,) and model.net.forward_calls == 2 and model.net.backward_calls == 1


def test_probability_flow_nll_of_gaussian_data_is_analytic() -> None:
    """The PF-ODE metric runs unchanged through ``score`` (tolerance of tests/test_likelihood.py: 0.02 nats/dim)."""
    model = gaussian_energy_ddpm()
    x = gaussian_data(300, seed=0)
    value, _, meta = pf_ode.model_metric_pf_ode(model, Dataset("gauss", x, x, x, GAUSS_BOX, "continuous"))
    s = model.noise_process.sigma_min
    law = torch.distributions.MultivariateNormal(GAUSS_MU, GAUSS_SIGMA + s**2 * GAUSS_EYE)
    exact = float(-law.log_prob(x.double()).mean())
    assert abs(value - exact) < 0.02 * 2, (value, exact)
    assert meta["nfe_total"] == meta["net_calls_total"] > 10


def test_elbo_equals_ddpms_with_the_same_eps() -> None:
    params = EnergyDDPMParams(num_train_timesteps=50)
    x = gaussian_data(400, seed=1)
    data = Dataset("gauss", x, x, x, GAUSS_BOX, "continuous")
    cfg = elbo.ELBOParams(batch_size=400)
    ours, se, _ = elbo.model_metric_elbo(gaussian_energy_ddpm(params), data, cfg)
    theirs, _, _ = elbo.model_metric_elbo(gaussian_ddpm(DDPMParams(num_train_timesteps=50)), data, cfg)
    assert ours == pytest.approx(theirs, abs=1e-3) and se > 0


@pytest.mark.parametrize(("sampler", "budget", "nfe"), [
    ("ddpm", {"steps": 10}, 10), ("ddim", {"steps": 7}, 7), ("dpm_solver", {"steps": 5}, 5),
    ("ddpm_ula", {"steps": 6, "mcmc_steps": 2}, 6 * 3),  # ULA: K evaluations + one eps per level
    ("ddpm_mala", {"steps": 6, "mcmc_steps": 2}, 6 * 4),  # MALA: K + 1 (its start) + one eps per level
    ("ddpm_hmc", {"steps": 6, "mcmc_steps": 2, "leapfrog_steps": 3}, 6 * (2 * 3 + 1 + 1)),
])
def test_counted_nfe_match_the_samplers_claim(sampler: str, budget: dict, nfe: int) -> None:
    """sample() refuses a claim that differs from the CountingNet's count; every call is one backward too."""
    model = gaussian_energy_ddpm()
    out = model.sample(10, generator=torch.Generator().manual_seed(0), sampler=sampler, batch_size=4, **budget)
    assert out.cost.nfe == nfe and out.cost.grad_evals == nfe and out.x.shape == (10, 2)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm_mala"])
def test_flops_are_counted_through_the_energys_gradient(sampler: str) -> None:
    """A run counts FLOPs under torch's FlopCounterMode, which refuses autograd.grad on a leaf input."""
    from ebmbench.metrics.cost import flops_per_sample

    torch.manual_seed(0)
    x = gaussian_data(64, seed=0)
    model = build_energy_ddpm(Dataset("gauss", x, x, x, GAUSS_BOX, "continuous"), EnergyDDPMParams(**SMALL))
    assert flops_per_sample(model, sampler, {"steps": 3}) > 0


def moments_close(x: Tensor, m: Tensor, c: Tensor, k: float = 4.0, bias: float = 0.0) -> None:
    """Sample mean and covariance within k standard errors (+ bias) of (m, c) (Gaussian formulas)."""
    x = x.double()
    n, d = len(x), torch.diagonal(c)
    se_m, se_c = (d / n).sqrt(), ((d[:, None] * d[None, :] + c**2) / n).sqrt()
    assert ((x.mean(0) - m).abs() < k * se_m + bias).all(), (x.mean(0), m)
    assert ((torch.cov(x.T) - c).abs() < k * se_c + bias).all(), (torch.cov(x.T), c)


@pytest.mark.parametrize("kernel", ["mala", "hmc"])
def test_mcmc_at_a_level_keeps_the_exact_level_density_invariant(kernel: str) -> None:
    """Chains started from exact p_t stay at p_t after K Metropolis-adjusted steps: mean and covariance within
    4 SE at n = 20000, at a step large enough to move (acceptance < 0.9) and to bias ULA."""
    model = gaussian_energy_ddpm()
    t = 50
    m, c = level_law(model, t)
    g = torch.Generator().manual_seed(2)
    x0 = (m + torch.randn(20_000, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(c).T).float()
    step = {"mala": 0.5, "hmc": 1.0}[kernel]
    x, nfe, acc = mcmc_at_level(model, x0, t, kernel, 10, step, g)
    assert acc < 0.9 and (x - x0).abs().mean() > 0.1  # the chains moved
    moments_close(x, m, c)
    ula_x, _, _ = mcmc_at_level(model, x0, t, "ula", 10, 0.5, g)
    assert (torch.cov(ula_x.double().T) - c).abs().max() > 0.1  # the uncorrected chain at that step is biased


def test_mala_acceptance_falls_as_the_step_grows() -> None:
    model = gaussian_energy_ddpm()
    m, c = level_law(model, 0)
    g = torch.Generator().manual_seed(3)
    x0 = (m + torch.randn(4000, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(c).T).float()
    rates = [mcmc_at_level(model, x0, 0, "mala", 5, step, g)[2] for step in (0.01, 0.1, 0.5, 2.0)]
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False)), rates
    assert rates[0] > 0.95 and rates[-1] < 0.5


def test_corrected_reverse_diffusion_reproduces_the_gaussian() -> None:
    """Reverse diffusion with MALA per level on the exact energies draws N(mu, Sigma): 4 SE + 0.02 (the
    ancestral steps' own discretization bias at 100 of 1000 levels) at n = 10000; acceptance recorded per level."""
    model = gaussian_energy_ddpm()
    out = model.sample(10_000, generator=torch.Generator().manual_seed(4), sampler="ddpm_mala", steps=100,
                       mcmc_steps=2)
    moments_close(out.x, GAUSS_MU, GAUSS_SIGMA, bias=0.02)
    info = out.info
    assert len(info["acceptance_by_level"]) == 100 and 0.3 < info["acceptance"] < 0.95
    assert len(info["step_sizes"]) == 100 and info["kernel"] == "mala"


def test_training_decreases_the_eps_matching_loss() -> None:
    """300 Adam steps on Gaussian data: L_simple on a fixed held-out batch (same t and eps) falls by > 4 SE."""
    torch.manual_seed(0)
    params = EnergyDDPMParams(**SMALL, hidden=64, depth=2)
    x = gaussian_data(2000, seed=5)
    model = build_energy_ddpm(Dataset("gauss", x, x, x, GAUSS_BOX, "continuous"), params)
    held = gaussian_data(4000, seed=6)

    def held_loss() -> Tensor:
        return ddpm_loss(model, held, torch.Generator().manual_seed(7), params)[0].detach()

    before = held_loss()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(8)
    for i in range(300):
        loss, diag = ddpm_loss(model, x[(i * 128) % 1872:][:128], g, params)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    diff = before - held_loss()
    assert diff.mean() > 4 * diff.std() / math.sqrt(len(diff)), (float(before.mean()), float(diff.mean()))


def test_registered_with_ddpms_samplers_and_a_corrected_one() -> None:
    spec = METHODS.get("energy_ddpm")
    names = [name for name, _ in spec.eval_samplers(EnergyDDPMParams())]
    assert names == ["ddpm", "ddim", "dpm_solver", "ddpm_mala"] and spec.objective is ddpm_loss
    with pytest.raises(ValueError, match="vector data"):
        build_energy_ddpm(Dataset("img", torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8),
                                  GAUSS_BOX, "continuous"), EnergyDDPMParams())


def test_ais_along_the_noise_levels_brackets_the_exact_log_z() -> None:
    """exp(-E(x, 0)) of the exact Gaussian energies: log Z on the box in closed form (and by quadrature) is the truth;
    forward AIS from N(0, I) along 100 of the model's levels sits below it and reverse AIS from a grid draw above,
    each within 4 of its standard errors over runs + 0.05 nats."""
    from ebmbench.metrics import ais, likelihood

    model = gaussian_energy_ddpm()
    x = gaussian_data(200, seed=9)
    data = Dataset("gauss", x, x, x, GAUSS_BOX, "continuous")
    params = ais.AISParams(n_steps=100, runs=4, chains=50, mcmc_steps=1)
    fwd, _, meta_f = ais.diffusion_nll_row(model, data, "forward", params)
    rev, _, meta_r = ais.diffusion_nll_row(model, data, "reverse", params)
    with torch.no_grad():
        exact, err, _ = likelihood.log_partition_refined(model.energy, GAUSS_BOX, tol=1e-6, n_max=4096,
                                                         dtype=torch.float64)
    # closed form: exp(-E(x, 0)) is N(m, K) unnormalized, so log Z = log(2 pi |K|^(1/2)) + log P(x in box)
    import scipy.stats

    m, k = level_law(model, 0)
    law = scipy.stats.multivariate_normal(m.numpy(), k.numpy())
    lo, hi = GAUSS_BOX.low, GAUSS_BOX.high
    mass = law.cdf([hi, hi]) - law.cdf([lo, hi]) - law.cdf([hi, lo]) + law.cdf([lo, lo])
    closed = math.log(2 * math.pi) + 0.5 * float(torch.logdet(k)) + math.log(mass)
    assert exact == pytest.approx(closed, abs=1e-4)
    assert err < 1e-6 and meta_f["log_z_quadrature"] == pytest.approx(exact, abs=1e-3)
    print(f"log Z: closed form {closed:.4f}, quadrature {exact:.4f}, forward AIS {meta_f['log_z']:.4f} "
          f"+- {meta_f['log_z_stderr']:.4f}, reverse AIS {meta_r['log_z']:.4f} +- {meta_r['log_z_stderr']:.4f}")
    for meta, sign in ((meta_f, -1), (meta_r, 1)):
        gap = meta["log_z"] - exact
        assert sign * gap > -4 * meta["log_z_stderr"] - 0.01, (meta["log_z"], exact)  # the bound's side
        assert abs(gap) < 4 * meta["log_z_stderr"] + 0.05, (meta["log_z"], exact)
        assert meta["nfe_per_chain"] > 0 and meta["quadrature_evaluations"] > 0
    assert meta_f["likelihood_kind"] == "lower bound" and meta_r["likelihood_kind"] == "upper bound"
    assert fwd == pytest.approx(rev, abs=0.2)
