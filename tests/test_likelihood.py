"""Likelihood estimators against exact values: refined quadrature, AIS bounds, probability-flow ODE, DDPM ELBO.

Every reference is computed independently of the estimator: closed-form Gaussian-mixture masses (scipy),
exact RBM log Z and probabilities by enumeration, a flow's log Z = 0, Gaussian densities perturbed at
sigma_min, the closed-form expectation of the DDPM bound for Gaussian data, and exact discrete entropies.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats
import torch
from conftest import GAUSS_LAM, GAUSS_MU, GAUSS_SIGMA, GAUSS_U, GaussianEpsNet, GaussianScoreNet, gaussian_ddpm
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.mathutil import visible_logits
from ebmbench.methods.diffusion import DDPM, DDPMParams
from ebmbench.methods.ebm import EBM, PCDParams
from ebmbench.methods.flow import Flow, RealNVPParams
from ebmbench.methods.rbm import RBM, RBMNet, RBMParams
from ebmbench.methods.score import NCSN, NCSNParams
from ebmbench.metrics import ais, elbo, pf_ode
from ebmbench.metrics.likelihood import log_partition_refined
from ebmbench.metrics.registry import MODEL_METRICS, NotApplicable
from ebmbench.nets.flow import RealNVP
from ebmbench.protocol import Box

# ---------------------------------------------------------------- a 2D Gaussian-mixture energy with a closed-form Z

BOX = Box(-4.0, 4.0, (2,))
WEIGHTS = np.array([0.5, 1.7, 0.9])
MEANS = np.array([[-1.5, -1.0], [1.5, 0.5], [0.0, 2.0]])
STDS = np.array([[0.3, 0.3], [0.5, 0.35], [0.4, 0.25]])
SHIFT = 3.7


class MixtureEnergy(nn.Module):
    """E(x) = -log sum_k w_k exp(-|(x - mu_k) / s_k|^2 / 2) + c."""

    def __init__(self) -> None:
        super().__init__()
        self.log_w = nn.Parameter(torch.tensor(np.log(WEIGHTS), dtype=torch.float32), requires_grad=False)
        self.register_buffer("mu", torch.tensor(MEANS, dtype=torch.float32))
        self.register_buffer("s", torch.tensor(STDS, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        z = (x[:, None, :] - self.mu) / self.s
        return -torch.logsumexp(self.log_w - 0.5 * (z**2).sum(-1), dim=1) + SHIFT


def mixture_log_z() -> float:
    """log of the mixture's unnormalized mass inside BOX, from products of normal CDFs."""
    inside = scipy.stats.norm.cdf((BOX.high - MEANS) / STDS) - scipy.stats.norm.cdf((BOX.low - MEANS) / STDS)
    return math.log((WEIGHTS * 2 * math.pi * STDS.prod(axis=1) * inside.prod(axis=1)).sum()) - SHIFT


def mixture_ebm() -> EBM:
    return EBM(MixtureEnergy(), BOX, PCDParams(buffer_size=1))


def assert_bounds(results: dict[str, ais.AISResult], exact: float, forward_tol: float) -> None:
    """Forward mean below and reverse mean above the exact log Z (3 standard errors), forward close to it."""
    fwd, rev = results["forward"], results["reverse"]
    assert fwd.log_z <= exact + 3 * fwd.stderr, (fwd.log_z, fwd.stderr, exact)
    assert rev.log_z >= exact - 3 * rev.stderr, (rev.log_z, rev.stderr, exact)
    assert abs(fwd.log_z - exact) < forward_tol, (fwd.log_z, exact)
    assert not rev.approximate_start


# ---------------------------------------------------------------- quadrature


def test_refined_quadrature_matches_the_closed_form_and_records_its_grid() -> None:
    log_z, err, n = log_partition_refined(MixtureEnergy().eval(), BOX, tol=1e-5, n_start=16)
    assert log_z == pytest.approx(mixture_log_z(), abs=1e-3)
    assert err < 1e-5 and n > 16  # two panels per axis cannot resolve std 0.25: it had to refine
    coarse, coarse_err, coarse_n = log_partition_refined(MixtureEnergy().eval(), BOX, tol=1e-5, n_start=16, n_max=16)
    assert coarse_n == 16 and coarse_err > 1e-3 and abs(coarse - mixture_log_z()) > 1e-3  # flagged: not converged


# ---------------------------------------------------------------- AIS


def random_rbm(n_visible: int, n_hidden: int, scale: float, seed: int = 0) -> RBM:
    g = torch.Generator().manual_seed(seed)
    net = RBMNet(n_visible, n_hidden)
    with torch.no_grad():
        net.W.copy_(scale * torch.randn(n_hidden, n_visible, generator=g))
        net.b.copy_(torch.randn(n_visible, generator=g))
        net.c.copy_(torch.randn(n_hidden, generator=g))
    return RBM(net, Box(0.0, 1.0, (n_visible,)), RBMParams(n_hidden=n_hidden))


def all_binary(n: int) -> Tensor:
    return ((torch.arange(2**n).unsqueeze(1) >> torch.arange(n)) & 1).double()


def test_rbm_exact_samples_follow_the_enumerated_distribution() -> None:
    model = random_rbm(5, 3, scale=1.5, seed=1)
    v = model.exact_sample(20000, torch.Generator().manual_seed(0))  # the GibbsModel capability AIS starts from
    with torch.no_grad():
        p = model.log_prob(all_binary(5)).exp()
    counts = torch.bincount((v * 2 ** torch.arange(5)).sum(1).long(), minlength=32).double()
    chi2 = float(((counts - 20000 * p) ** 2 / (20000 * p)).sum())
    assert scipy.stats.chi2.sf(chi2, df=31) > 1e-3, chi2


def test_ais_on_an_enumerable_rbm_brackets_the_exact_log_z() -> None:
    model = random_rbm(10, 6, scale=1.5)
    data = torch.bernoulli(torch.full((200, 10), 0.3), generator=torch.Generator().manual_seed(0))
    dataset = Dataset("bits", data, data, data, model.support, "binary", levels=2)
    params = ais.AISParams(n_steps=300, runs=10, chains=16)
    results = ais.estimate_log_z(model, dataset, params)
    with torch.no_grad():
        exact = float(model.log_partition())
    assert_bounds(results, exact, forward_tol=0.1)
    assert results["forward"].nfe == 299  # one Gibbs sweep per inner distribution
    base_rate = visible_logits(data).double()  # the base-rate RBM's visible biases (Salakhutdinov & Murray 2008)
    assert results["forward"].log_z0 == pytest.approx(6 * math.log(2) + float(torch.log1p(base_rate.exp()).sum()))

    value, _, meta = ais.nll_row(model, dataset, "reverse", params)  # shares the cached estimates
    with torch.no_grad():
        exact_nll = -float(model.log_prob(data).mean())
    assert meta["likelihood_kind"] == "upper bound" and meta["convention"] == "binary pmf"
    assert value == pytest.approx(exact_nll + results["reverse"].log_z - exact, abs=1e-9)
    assert meta["gap"] == pytest.approx(results["reverse"].log_z - results["forward"].log_z)


def test_reverse_ais_without_an_exact_sampler_starts_from_long_chains_and_says_so(monkeypatch) -> None:
    model = random_rbm(10, 6, scale=1.5)
    monkeypatch.setattr(model, "exact_sample", lambda n, generator: None)  # pretend they cannot be enumerated
    data = torch.bernoulli(torch.full((200, 10), 0.3), generator=torch.Generator().manual_seed(0))
    dataset = Dataset("bits", data, data, data, model.support, "binary", levels=2)
    params = ais.AISParams(n_steps=100, runs=8, chains=8, start_steps=300)
    _, _, meta = ais.nll_row(model, dataset, "reverse", params)
    assert meta["approximate_start"] and "Gibbs sweeps" in meta["start"] and meta["likelihood_kind"] == "estimate"
    assert meta["start_nfe_per_chain"] == 300
    with torch.no_grad():
        exact = float(model.log_partition())
    assert meta["log_z"] >= exact - 3 * meta["log_z_stderr"]  # these chains mix: still above the exact value


@pytest.mark.parametrize(("kernel", "step_size", "forward_tol", "nfe_per_step"), [
    ("hmc", 0.3, 0.1, 5 + 2),  # L leapfrog steps, the chain's first gradient and the weight's energy
    ("mala", 0.02, 0.2, 2 + 1),  # MALA mixes slower at this budget: a looser forward tolerance
])
def test_ais_on_a_2d_energy_brackets_quadrature(kernel: str, step_size: float, forward_tol: float,
                                                 nfe_per_step: int) -> None:
    params = ais.AISParams(n_steps=300, runs=10, chains=16, kernel=kernel, step_size=step_size, start_steps=100)
    results = ais.estimate_log_z(mixture_ebm(), None, params)
    exact, _, _ = log_partition_refined(MixtureEnergy().eval(), BOX)
    assert_bounds(results, exact, forward_tol=forward_tol)
    assert results["forward"].nfe == 1 + 299 * nfe_per_step  # counted energy evaluations
    assert 0.5 < results["forward"].acceptance < 1.0


def random_flow(shape: tuple[int, ...], std: float = 0.3, seed: int = 0) -> Flow:
    """An untrained RealNVP with random N(0, std^2) parameters: a non-Gaussian density with Z = 1."""
    net = RealNVP(shape, n_couplings=4, hidden=16, depth=2)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return Flow(net, Box(-20.0, 20.0, shape), RealNVPParams(), shape).eval()


def test_ais_on_a_flow_recovers_log_z_zero() -> None:
    flow = random_flow((1, 4, 4))
    with torch.no_grad():
        x = flow.sample(2000, generator=torch.Generator().manual_seed(3)).x
    assert flow.support.contains(x).all()  # the box holds the flow's mass, so Z on the box is 1
    dataset = Dataset("flow", x, x, x, flow.support, "continuous")
    params = ais.AISParams(n_steps=200, runs=10, chains=16, base="gaussian", step_size=0.4, seed=1)
    results = ais.estimate_log_z(flow, dataset, params)
    for r in results.values():
        assert abs(r.log_z) <= 3 * r.stderr and abs(r.log_z) < 0.2, (r.direction, r.log_z, r.stderr)
    assert results["reverse"].start.startswith("exact")


def test_ais_rows_say_which_way_the_nll_errs() -> None:
    noise = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    x = torch.tensor(MEANS[1], dtype=torch.float32) + 0.3 * noise
    density = GaussianDensity(torch.tensor(MEANS[1]), 0.09 * torch.eye(2))
    dataset = Dataset("mix", x, x, x, BOX, "continuous", density=density)
    params = ais.AISParams(n_steps=30, runs=4, chains=8, step_size=0.3, start_steps=20)
    model = mixture_ebm()
    low, _, low_meta = ais.nll_row(model, dataset, "forward", params)
    high, _, high_meta = ais.nll_row(model, dataset, "reverse", params)
    assert low_meta["likelihood_kind"] == "lower bound" and "optimistic" in low_meta["bound_direction"]
    assert high_meta["likelihood_kind"] == "upper bound" and "conservative" in high_meta["bound_direction"]
    with torch.no_grad():
        mean_energy = float(model.energy(x).double().mean())
    assert low == pytest.approx(mean_energy + low_meta["log_z"], abs=1e-6)
    assert high == pytest.approx(mean_energy + high_meta["log_z"], abs=1e-6)
    h_points = -float(density.log_prob(x).mean())
    for nll, meta in ((low, low_meta), (high, high_meta)):  # the forward KL errs the way its NLL does
        assert meta["forward_kl"] == pytest.approx(nll - h_points, abs=1e-6)
        assert meta["forward_kl_kind"] == meta["likelihood_kind"] and meta["forward_kl_stderr"] >= meta["log_z_stderr"]
    binary = Dataset("bin", x, x, x, BOX, "binary", levels=2)
    with pytest.raises(NotApplicable, match="gibbs"):
        MODEL_METRICS.get("nll_ais_forward")(model, binary)
    # without the reverse direction the forward row is unchanged (its own random stream) and reverse says why
    alone = dataclasses.replace(params, reverse=False)
    assert ais.nll_row(model, dataset, "forward", alone)[0] == low
    with pytest.raises(NotApplicable, match="reverse AIS was not run"):
        ais.nll_row(model, dataset, "reverse", alone)
    with pytest.raises(NotApplicable, match="energy"):
        MODEL_METRICS.get("nll_ais_forward")(ncsn_gaussian(), dataset)  # answered from the metric's requires


# ---------------------------------------------------------------- probability-flow ODE

MU, SIGMA, LAM, U = GAUSS_MU, GAUSS_SIGMA, GAUSS_LAM, GAUSS_U  # the shared Gaussian stand-ins (conftest)


def ncsn_gaussian() -> NCSN:
    return NCSN(GaussianScoreNet(), BOX, NCSNParams(sigma_min=0.01, sigma_max=50.0))


def ddpm_gaussian(params: DDPMParams | None = None, net: type[nn.Module] = GaussianEpsNet) -> DDPM:
    return gaussian_ddpm(params, net, BOX)


def gaussian_data(n: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (MU + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(SIGMA).T).float()


def perturbed_nll(x: Tensor, sigma_min: float) -> Tensor:
    """-log N(x; MU, SIGMA + sigma_min^2 I): the analytic NLL of the sigma_min-perturbed data density."""
    law = torch.distributions.MultivariateNormal(MU, SIGMA + sigma_min**2 * torch.eye(2, dtype=torch.float64))
    return -law.log_prob(x.double())


class GaussianDensity:
    """An exact 'dataset density' stand-in: N(mean, cov) on R^2 (float64 log_prob)."""

    n_modes = 1

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        self.box, self.law = BOX, torch.distributions.MultivariateNormal(mean.double(), cov.double())

    def log_prob(self, x: Tensor) -> Tensor:
        return self.law.log_prob(x.double())


def gaussian_prior_bias(sigma_max: float) -> float:
    """KL(N(MU, SIGMA + s^2 I) || N(0, s^2 I)): the exact bias of the N(0, s^2 I) prior for Gaussian data."""
    ratio = LAM / sigma_max**2
    return 0.5 * float((ratio - torch.log1p(ratio)).sum() + MU.pow(2).sum() / sigma_max**2)


@pytest.mark.parametrize(("sigma_max", "kind"), [(3.0, "estimate"), (50.0, "exact")])
def test_probability_flow_prior_bias_is_bracketed_and_a_small_sigma_max_is_an_estimate(sigma_max: float,
                                                                                        kind: str) -> None:
    model = NCSN(GaussianScoreNet(), BOX, NCSNParams(sigma_min=0.01, sigma_max=sigma_max))
    x = gaussian_data(500)
    # the density of the model's own p_{sigma_min}: the forward KL row isolates the prior's bias, paired per point
    perturbed = GaussianDensity(MU, SIGMA + 1e-4 * torch.eye(2, dtype=torch.float64))
    _, _, meta = pf_ode.model_metric_pf_ode(model, Dataset("gauss", x, x, x, BOX, "continuous", density=perturbed))
    bias = gaussian_prior_bias(sigma_max)
    lower, upper = meta["prior_bias_nats"]
    assert lower == pytest.approx(bias, rel=0.15) and upper >= bias  # Gaussian data: the lower bound is the bias
    assert abs(meta["forward_kl"] - bias) < 4 * meta["forward_kl_stderr"], (meta["forward_kl"], bias)
    assert meta["likelihood_kind"] == meta["forward_kl_kind"] == kind
    assert ("estimate_reason" in meta) == (kind == "estimate") and (upper > pf_ode.PRIOR_BIAS_TOL) == (kind != "exact")


@pytest.mark.parametrize("make", [ncsn_gaussian, ddpm_gaussian], ids=["ncsn_ve", "ddpm_vp"])
def test_probability_flow_nll_of_gaussian_data_is_analytic(make) -> None:
    model = make()
    x = gaussian_data(500)
    dataset = Dataset("gauss", x, x, x, BOX, "continuous")
    value, stderr, meta = pf_ode.model_metric_pf_ode(model, dataset)
    exact = perturbed_nll(x, model.noise_process.sigma_min)
    assert abs(value - float(exact.mean())) < 0.02 * 2, (value, float(exact.mean()))
    assert meta["likelihood_kind"] == "exact" and meta["probe_stderr"] == 0.0
    assert meta["nfe_total"] == meta["net_calls_total"] > 10  # every ODE evaluation is one counted net call
    assert meta["bits_per_dim"] == pytest.approx(value / (2 * math.log(2)))
    assert stderr == pytest.approx(float(exact.std() / math.sqrt(500)), rel=0.05)


def test_probability_flow_hutchinson_estimate_is_unbiased() -> None:
    model = ncsn_gaussian()
    x = gaussian_data(2000, seed=1)
    params = pf_ode.PFODEParams(exact_trace_max_dim=0, batch_size=2000, n_probes=2)
    log_p, _ = pf_ode.log_prob_batches(model, x, params, torch.Generator().manual_seed(0))
    value, stderr, probe_se = pf_ode.nll_summary(-log_p)
    exact = float(perturbed_nll(x, 0.01).mean())
    noise = (-log_p.mean(dim=0)).double() - perturbed_nll(x, 0.01)  # the Hutchinson noise alone, per point
    assert abs(value - exact) < 3 * float(noise.std() / math.sqrt(2000)) + 0.01
    assert abs(value - exact) < 0.02 * 2
    assert probe_se is not None and probe_se > 0


def test_probability_flow_dequantizes_discrete_data() -> None:
    model = ncsn_gaussian()
    width = 2 / 16
    x = (gaussian_data(1000, seed=2) / width).round().clamp(-8, 8) * width  # 17 levels on [-1, 1]
    dataset = Dataset("levels", x, x, x, Box(-1.0, 1.0, (2,)), "17 levels", levels=17)
    value, stderr, meta = pf_ode.model_metric_pf_ode(model, dataset)
    # E_u[-log N(x + u; m, C)] = -log N(x; m, C) + tr(C^-1) w^2 / 24 for u uniform on [-w/2, w/2]^2
    cov = SIGMA + 1e-4 * torch.eye(2, dtype=torch.float64)
    expected = float(perturbed_nll(x, 0.01).mean()) + float(torch.linalg.inv(cov).trace()) * width**2 / 24
    assert value == pytest.approx(expected - 2 * math.log(width), abs=3 * stderr)
    assert meta["likelihood_kind"] == "upper bound" and meta["bin_width"] == width
    with pytest.raises(NotApplicable, match="score"):
        MODEL_METRICS.get("nll_pf_ode")(mixture_ebm(), dataset)


# ---------------------------------------------------------------- DDPM ELBO


class IntegerGaussianEps(nn.Module):
    """E[eps | x_t] for x0 ~ N(MU, SIGMA) at integer t: sqrt(1-ab) (ab SIGMA + (1-ab) I)^-1 (x_t - sqrt(ab) MU)."""

    def __init__(self, alphas_cumprod: Tensor) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.ab = alphas_cumprod.double()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        ab = self.ab[t].unsqueeze(1)
        y = (x.double() - ab.sqrt() * MU) @ U
        return ((1 - ab).sqrt() * (y / (ab * LAM + 1 - ab)) @ U.T).to(x.dtype)


def expected_bound(model: DDPM) -> float:
    """E over x0 ~ N(MU, SIGMA) of -ELBO with the exact noise predictor, in closed form.

    With eps = E[eps | x_s] the model mean is E[mu~ | x_s], so each KL term is the variance mismatch plus
    c0^2 tr Cov(x0 | x_s) / (2 sigma_s^2), Cov(x0 | x_s) = (SIGMA^-1 + ab / (1 - ab) I)^-1 (Ho et al. eq. 6-7).
    """
    scheduler = model.make_ddpm_scheduler()
    beta, ab = scheduler.betas.double(), scheduler.alphas_cumprod.double()
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    post = (1 - ab_prev) / (1 - ab) * beta
    var = (post if scheduler.config.variance_type == "fixed_small" else beta).clone()
    var[0] = post[1]
    inv = torch.linalg.inv(SIGMA)

    def trace_cov(s: int) -> float:
        return float(torch.linalg.inv(inv + ab[s] / (1 - ab[s]) * torch.eye(2, dtype=torch.float64)).trace())

    second_moment = float(MU.pow(2).sum() + SIGMA.trace())
    total = 0.5 * float(2 * (1 - ab[-1]) + ab[-1] * second_moment - 2 - 2 * torch.log(1 - ab[-1]))
    for s in range(1, len(beta)):
        c0 = float(ab_prev[s].sqrt() * beta[s] / (1 - ab[s]))
        total += float(post[s] / var[s] - 1 + torch.log(var[s] / post[s])) + c0**2 * trace_cov(s) / (2 * float(var[s]))
    return total + float(torch.log(2 * math.pi * var[0])) + trace_cov(0) / (2 * float(var[0]))


@pytest.mark.parametrize("variance_type", ["fixed_large", "fixed_small"])
def test_elbo_of_gaussian_data_matches_its_closed_form_and_bounds_the_entropy(variance_type: str) -> None:
    model = ddpm_gaussian(DDPMParams(variance_type=variance_type), IntegerGaussianEps)
    x = gaussian_data(2000, seed=3)
    dataset = Dataset("gauss", x, x, x, BOX, "continuous", density=GaussianDensity(MU, SIGMA))
    value, stderr, meta = elbo.model_metric_elbo(model, dataset, elbo.ELBOParams(batch_size=2000))
    entropy = 0.5 * float(torch.logdet(2 * math.pi * math.e * SIGMA))
    assert value >= entropy - 3 * stderr
    # the forward KL pairs the bound with -log p on the same points: an upper bound on KL(p || p_model) >= 0
    h_points = -float(dataset.density.log_prob(x).mean())
    assert meta["forward_kl"] == pytest.approx(value - h_points, abs=1e-9) and meta["forward_kl_kind"] == "upper bound"
    assert meta["forward_kl"] >= -3 * meta["forward_kl_stderr"] and meta["forward_kl_stderr"] < stderr
    assert value == pytest.approx(expected_bound(model), abs=3 * stderr)
    if variance_type == "fixed_large":  # the stated tolerance at T = 1000: 0.2 nats per dimension
        assert value - entropy < 0.2 * 2
    assert meta["likelihood_kind"] == "upper bound" and meta["nfe_per_point"] == 1000
    assert meta["reverse_variance"].startswith(variance_type)


def test_elbo_monte_carlo_over_timesteps_is_unbiased() -> None:
    params = DDPMParams(variance_type="fixed_large", num_train_timesteps=10)  # T = 10: a 1/T scaling error shows
    model = ddpm_gaussian(params, IntegerGaussianEps)
    x = gaussian_data(4000, seed=4)
    dataset = Dataset("gauss", x, x, x, BOX, "continuous")
    value, stderr, meta = elbo.model_metric_elbo(model, dataset, elbo.ELBOParams(t_samples=4, batch_size=4000))
    assert value == pytest.approx(expected_bound(model), abs=3 * stderr)
    assert meta["nfe_per_point"] == 5 and meta["T"] == 10


LEVELS = torch.linspace(-1.0, 1.0, 17, dtype=torch.float64)
D_MEAN, D_STD = np.array([0.2, -0.3]), np.array([0.35, 0.5])


def level_probabilities() -> Tensor:
    """P(level k) per dimension for N(D_MEAN, D_STD^2) cut at the midpoints, end bins open: (2, 17)."""
    edges = np.concatenate([[-np.inf], LEVELS[:-1].numpy() + 1 / 16, [np.inf]])
    return torch.tensor(np.stack([np.diff(scipy.stats.norm.cdf((edges - m) / s)) for m, s in zip(D_MEAN, D_STD)]))


class DiscreteEps(nn.Module):
    """E[eps | x_t] for independent discrete coordinates on LEVELS: posterior over the 17 levels per coordinate."""

    def __init__(self, alphas_cumprod: Tensor) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.ab = alphas_cumprod.double()
        self.log_p = level_probabilities().log()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        ab = self.ab[t][:, None, None]
        xd = x.double()
        logits = self.log_p - 0.5 * (xd[:, :, None] - ab.sqrt() * LEVELS) ** 2 / (1 - ab)
        x0 = (logits.softmax(dim=-1) * LEVELS).sum(dim=-1)
        return ((xd - ab[:, :, 0].sqrt() * x0) / (1 - ab[:, :, 0]).sqrt()).to(x.dtype)


def test_discretized_elbo_of_discretized_gaussian_data_bounds_its_exact_entropy() -> None:
    probe = DDPM(nn.Linear(1, 1), Box(-1.0, 1.0, (2,)), DDPMParams())
    model = DDPM(DiscreteEps(probe.make_ddpm_scheduler().alphas_cumprod), Box(-1.0, 1.0, (2,)), DDPMParams())
    p = level_probabilities()
    entropy = float(-(p * p.log()).sum())
    g = torch.Generator().manual_seed(5)
    x = LEVELS[torch.stack([torch.multinomial(p[i], 1000, replacement=True, generator=g) for i in range(2)], 1)]
    dataset = Dataset("levels", x.float(), x.float(), x.float(), Box(-1.0, 1.0, (2,)), "17 levels", levels=17)
    value, stderr, meta = elbo.model_metric_elbo(model, dataset, elbo.ELBOParams(batch_size=1000))
    assert value >= entropy - 3 * stderr
    assert value - entropy < 0.25 * 2  # the stated tolerance at T = 1000 (fixed_small): 0.25 nats per dimension
    assert "discretized" in meta["decoder"] and meta["convention"] == "probability of the discrete levels"


def test_discretized_gaussian_decoder_matches_scipy() -> None:
    x0 = torch.tensor([[-1.0, -0.875, 0.0, 0.875, 1.0]], dtype=torch.float64)
    mu = torch.tensor([[-0.9, -0.8, 0.05, 0.95, 0.7]], dtype=torch.float64)
    std, w = 0.07, 2 / 16
    got = float(elbo.discretized_gaussian_nll(x0, mu, std, w, -1.0, 1.0))
    cdf = scipy.stats.norm.cdf
    x, m = x0.numpy()[0], mu.numpy()[0]
    upper = np.where(x >= 1.0, 1.0, cdf((x + w / 2 - m) / std))
    lower = np.where(x <= -1.0, 0.0, cdf((x - w / 2 - m) / std))
    assert got == pytest.approx(-np.log(upper - lower).sum(), rel=1e-10)
    far = elbo.discretized_gaussian_nll(torch.tensor([[0.0]]).double(), torch.tensor([[0.9]]).double(), 0.01, w,
                                        -1.0, 1.0)
    assert torch.isfinite(far).all() and float(far) > 1000  # 90 standard deviations away: stable log tail
    with pytest.raises(NotApplicable, match="eps_prediction"):
        MODEL_METRICS.get("nll_elbo")(ncsn_gaussian(), Dataset("g", x0.float(), x0.float(), x0.float(), BOX, "c"))


# ---------------------------------------------------------------- the metrics on freshly built (float32) models


def test_metrics_run_on_built_models(tiny_dataset: Dataset) -> None:
    from ebmbench.methods.diffusion import build_ddpm
    from ebmbench.methods.ebm import build_pcd_ebm
    from ebmbench.methods.score import build_ncsn

    small = Dataset("tiny", tiny_dataset.train, tiny_dataset.val, tiny_dataset.test[:16], tiny_dataset.support, "c")
    ebm = build_pcd_ebm(small, PCDParams(hidden=16, depth=1, buffer_size=1))
    value, _, meta = ais.nll_row(ebm, small, "reverse", ais.AISParams(n_steps=5, runs=2, chains=2, start_steps=5))
    assert math.isfinite(value) and meta["gap"] is not None and meta["start_nfe_per_chain"] == 1 + 5 * 5
    ncsn = build_ncsn(small, NCSNParams(hidden=16, depth=1))
    value, _, meta = pf_ode.model_metric_pf_ode(ncsn, small, pf_ode.PFODEParams(rtol=1e-3, atol=1e-3))
    assert math.isfinite(value) and meta["nfe_total"] == meta["net_calls_total"]
    ddpm = build_ddpm(small, DDPMParams(hidden=16, depth=1))
    value, _, meta = elbo.model_metric_elbo(ddpm, small, elbo.ELBOParams(t_samples=3))
    assert math.isfinite(value) and meta["nfe_per_point"] == 4
    value, _, meta = pf_ode.model_metric_pf_ode(ddpm, small, pf_ode.PFODEParams(rtol=1e-3, atol=1e-3))
    assert math.isfinite(value)


def test_every_likelihood_row_uses_the_first_likelihood_points_of_the_test_split() -> None:
    from ebmbench.config import RunConfig

    cfg = RunConfig(dataset="eight_gaussians", method="pcd_ebm", likelihood_points=40, ais_steps=5, ais_runs=2,
                    ais_chains=2, pf_ode_tol=1e-3, elbo_t_samples=2, skip_metrics="nll_ais_reverse")
    x = gaussian_data(100, seed=6)
    dataset = Dataset("gauss", x, x, x, BOX, "continuous", density=GaussianDensity(MU, SIGMA))
    models = {"nll_heldout": mixture_ebm(), "nll_ais_forward": mixture_ebm(), "nll_pf_ode": ncsn_gaussian(),
              "nll_elbo": ddpm_gaussian(DDPMParams(num_train_timesteps=20), IntegerGaussianEps),
              "nll_exact": random_flow((2,)), "nll_true_density": mixture_ebm()}
    for name, model in models.items():
        metric = MODEL_METRICS.get(name)
        _, _, meta = metric.fn(model, dataset, **metric.kwargs(cfg))
        assert (meta["n"], meta["test_split_size"]) == (40, 100), name
        assert name == "nll_true_density" or "forward_kl" in meta, name
    for name in ("nll_ais_reverse", "nll_pf_ode", "nll_elbo"):  # the rows not run above are configured alike
        kwargs = MODEL_METRICS.get(name).kwargs(cfg)
        assert kwargs.get("max_points", getattr(kwargs.get("params"), "max_points", None)) == 40, name
