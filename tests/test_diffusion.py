"""DDPM (Ho et al. 2020) and DDIM (Song et al. 2021) on diffusers' schedulers, checked on Gaussian data.

For x0 ~ N(mu, Sigma) the noise predictor E[eps | x_t] is known in closed form, so the samplers
can be tested without training: every sampler step is then affine in x_t plus Gaussian noise,
and the exact law of the sampler's output (its own discretization bias included) follows by
propagating mean and covariance in float64 (``sampler_law``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.methods.base import METHODS
from ebmbench.methods.diffusion import DDPM, DDPMParams, build_ddpm, ddpm_loss
from ebmbench.protocol import SAMPLERS, Box
from ebmbench.samplers import diffusion as diffusion_samplers

MU = torch.tensor([1.0, -0.5])
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.8]])  # non-diagonal, positive definite
N = 20_000


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Elementwise ops on (20000, 2) tensors are 10-100x slower with 2 threads on 2 shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class GaussianEps(nn.Module):
    """E[eps | x_t] = sqrt(1-ab) (ab Sigma + (1-ab) I)^{-1} (x_t - sqrt(ab) mu) for x0 ~ N(mu, Sigma)."""

    def __init__(self, mu: Tensor, sigma: Tensor, alphas_cumprod: Tensor, scale: float = 1.0) -> None:
        super().__init__()
        lam, u = torch.linalg.eigh(sigma)
        self.mu = nn.Parameter(mu.clone(), requires_grad=False)  # a parameter: model.device needs one
        self.register_buffer("lam", lam)
        self.register_buffer("u", u)
        self.register_buffer("ab", alphas_cumprod.clone())
        self.scale = scale  # != 1: a deliberately wrong predictor

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        ab = self.ab[t].unsqueeze(1)
        y = (x - ab.sqrt() * self.mu) @ self.u  # eigenbasis of Sigma: the inverse is diagonal there
        return self.scale * (1 - ab).sqrt() * (y / (ab * self.lam + 1 - ab)) @ self.u.T


def gaussian_model(params: DDPMParams | None = None, scale: float = 1.0) -> DDPM:
    params = params or DDPMParams()
    probe = DDPM(nn.Linear(1, 1), Box(-4, 4, (2,)), params)
    net = GaussianEps(MU, SIGMA, probe.make_ddpm_scheduler().alphas_cumprod, scale)
    return DDPM(net, Box(-4, 4, (2,)), params)


def sampler_law(model: DDPM, timesteps: list[int], eta: float) -> tuple[Tensor, Tensor]:
    """Exact mean and covariance of DDIM(eta) output with the Gaussian predictor, in float64.

    Song et al. 2021 eq. 12: x' = sqrt(ab') x0_hat + sqrt(1 - ab' - s^2) eps_hat + s z with
    s^2 = eta^2 (1-ab')/(1-ab) (1 - ab/ab'); eta = 1 is DDPM's ancestral step with
    variance_type="fixed_small" (Ho et al. 2020, beta~_t).
    """
    ab_all = model.make_ddpm_scheduler().alphas_cumprod.double()
    mu, sigma, eye = MU.double(), SIGMA.double(), torch.eye(2, dtype=torch.float64)
    m, c = torch.zeros(2, dtype=torch.float64), eye.clone()
    for i, t in enumerate(timesteps):
        a = ab_all[t]
        ap = ab_all[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0, dtype=torch.float64)
        e_mat = (1 - a).sqrt() * torch.linalg.inv(a * sigma + (1 - a) * eye)  # eps_hat = E (x - sqrt(a) mu)
        x0_mat = (eye - (1 - a).sqrt() * e_mat) / a.sqrt()  # x0_hat = X x + x0_off
        x0_off = (1 - a).sqrt() * e_mat @ mu
        s2 = eta**2 * (1 - ap) / (1 - a) * (1 - a / ap)
        k = (1 - ap - s2).sqrt()
        a_mat = ap.sqrt() * x0_mat + k * e_mat
        b = ap.sqrt() * x0_off - k * a.sqrt() * e_mat @ mu
        m, c = a_mat @ m + b, a_mat @ c @ a_mat.T + s2 * eye
    return m, c


def mean_cov_errors(x: Tensor, m: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """|sample mean - m|, |sample cov - c| and their standard errors (Gaussian formulas) at n = len(x)."""
    x = x.double()
    n = x.shape[0]
    d = torch.diagonal(c)
    se_mean = (d / n).sqrt()
    se_cov = ((d[:, None] * d[None, :] + c**2) / n).sqrt()  # Var(S_ij) = (c_ii c_jj + c_ij^2) / n
    return (x.mean(0) - m).abs(), (torch.cov(x.T) - c).abs(), se_mean, se_cov


@pytest.mark.parametrize(
    ("sampler", "budget", "seed", "bias_budget"),
    [
        # fixed_small under-disperses slightly: the exact law has Sigma_11 - 0.0087 (< 1 SE at n=20000)
        ("ddpm", {"steps": 1000}, 0, 0.01),
        # 200 DDIM steps: exact law has Sigma_11 - 0.018, mean_1 - 0.005 (x_T ~ N(0, I) ignores
        # sqrt(ab_T) mu and eta=0 never forgets it); 50 steps would be Sigma_11 - 0.07
        ("ddim", {"steps": 200, "eta": 0.0}, 1, 0.02),
    ],
)
def test_samplers_reproduce_gaussian(sampler: str, budget: dict, seed: int, bias_budget: float) -> None:
    model = gaussian_model()
    out = model.sample(N, generator=torch.Generator().manual_seed(seed), sampler=sampler, **budget)
    timesteps = [int(t) for t in _timesteps(model, sampler, budget["steps"])]
    m, c = sampler_law(model, timesteps, budget.get("eta", 1.0))
    # (1) the diffusers chain follows the paper's update: sample moments within 4 SE of its exact law
    err_m, err_c, se_m, se_c = mean_cov_errors(out.x, m, c)
    assert (err_m < 4 * se_m).all(), (out.x.mean(0), m)
    assert (err_c < 4 * se_c).all(), (torch.cov(out.x.T), c)
    # (2) that law is (mu, Sigma) up to the sampler's own small discretization bias
    assert (m - MU.double()).abs().max() < bias_budget
    assert (c - SIGMA.double()).abs().max() < bias_budget
    # hence the samples reproduce (mu, Sigma) within 4 SE + bias_budget
    err_m, err_c, se_m, se_c = mean_cov_errors(out.x, MU.double(), SIGMA.double())
    assert (err_m < 4 * se_m + bias_budget).all() and (err_c < 4 * se_c + bias_budget).all()


def _timesteps(model: DDPM, sampler: str, steps: int) -> Tensor:
    scheduler = model.make_ddpm_scheduler() if sampler == "ddpm" else model.make_ddim_scheduler()
    scheduler.set_timesteps(steps)
    return scheduler.timesteps


def test_ddim_eta_one_all_steps_is_ddpm_ancestral() -> None:
    """DDIM(eta=1) over all T steps is DDPM with fixed_small variance (Song et al. 2021, Sec. 4.1).

    Noise order in diffusers: both draw x_T, then one randn of x's shape per step from the same
    generator; DDPM skips the draw at t=0, DDIM draws it but multiplies it by sigma_0 = 0 (the last
    draw), so one seed gives both chains identical noise.
    """
    model = gaussian_model()
    a = model.sample(2000, generator=torch.Generator().manual_seed(7), sampler="ddpm", steps=1000)
    b = model.sample(2000, generator=torch.Generator().manual_seed(7), sampler="ddim", steps=1000, eta=1.0)
    assert (a.x - b.x).abs().max() < 1e-4
    c = model.sample(2000, generator=torch.Generator().manual_seed(7), sampler="ddim", steps=1000, eta=0.0)
    assert (a.x - c.x).abs().max() > 0.1  # the comparison can fail: eta matters


@pytest.mark.parametrize(("sampler", "budget"), [("ddpm", {"steps": 10}), ("ddim", {"steps": 7, "eta": 0.5})])
def test_nfe_equals_steps(sampler: str, budget: dict) -> None:
    model = gaussian_model()
    out = model.sample(
        10, generator=torch.Generator().manual_seed(0), sampler=sampler, batch_size=4, **budget
    )
    assert out.cost.nfe == budget["steps"]
    assert out.info["timesteps"] == budget["steps"]
    assert out.x.shape == (10, 2)


def test_loss_is_lowest_for_the_true_predictor() -> None:
    """L_simple (Ho et al. 2020, eq. 14) of E[eps | x_t] is the MMSE; a scaled one does worse."""
    params = DDPMParams()
    z = torch.randn(50_000, 2, generator=torch.Generator().manual_seed(3))
    x0 = MU + z @ torch.linalg.cholesky(SIGMA).T
    true_loss, diag = ddpm_loss(gaussian_model(params), x0, torch.Generator().manual_seed(4), params)
    wrong_loss, _ = ddpm_loss(gaussian_model(params, scale=1.1), x0, torch.Generator().manual_seed(4), params)
    assert diag["loss"] == pytest.approx(float(true_loss.mean()))
    assert true_loss.shape == (50_000,)
    diff = wrong_loss - true_loss
    assert diff.mean() > 4 * diff.std() / math.sqrt(len(diff))
    # E over t ~ U{0..T-1} of tr(Cov[eps | x_t]) / d = 1 - (1-ab) tr((ab Sigma + (1-ab) I)^{-1}) / d
    ab = gaussian_model(params).make_ddpm_scheduler().alphas_cumprod.double()
    lam = torch.linalg.eigvalsh(SIGMA.double())
    mmse = (1 - (1 - ab)[:, None] / (ab[:, None] * lam + 1 - ab[:, None])).mean()
    se = true_loss.double().std() / math.sqrt(len(true_loss))
    assert abs(true_loss.double().mean() - mmse) < 4 * se


def test_schedulers_share_the_pinned_settings() -> None:
    model = gaussian_model()
    ddpm, ddim = model.make_ddpm_scheduler(), model.make_ddim_scheduler()
    torch.testing.assert_close(ddpm.alphas_cumprod, ddim.alphas_cumprod)
    for s in (ddpm, ddim):
        assert not s.config.clip_sample and s.config.prediction_type == "epsilon"
        assert s.config.timestep_spacing == "leading" and s.config.num_train_timesteps == 1000
    assert ddpm.config.variance_type == "fixed_small" and ddim.config.set_alpha_to_one
    assert METHODS.get("ddpm").eval_samplers(DDPMParams()) == [
        ("ddpm", {"steps": 1000}),
        ("ddim", {"steps": 50, "eta": 0.0}),
        ("dpm_solver", {"steps": 20}),
    ]
    sweep = METHODS.get("ddpm").eval_samplers(DDPMParams(step_sweep="10,20"))
    assert [(name, b["steps"]) for name, b in sweep] == [
        ("ddpm", 10), ("ddpm", 20), ("ddim", 10), ("ddim", 20), ("dpm_solver", 10), ("dpm_solver", 20)]
    assert SAMPLERS.get("ddpm").fn is diffusion_samplers.ddpm_ancestral
    assert SAMPLERS.get("ddim").parameters() == {"steps": 50, "eta": 0.0}


def _dataset(shape: tuple[int, ...], box: Box, n: int = 64) -> Dataset:
    g = torch.Generator().manual_seed(0)
    train, val, test = (box.clamp(torch.randn((n, *shape), generator=g)) for _ in range(3))
    return Dataset("gauss", train, val, test, box, convention="identity")


@pytest.mark.parametrize(("shape", "box"), [((2,), Box(-4, 4, (2,))), ((1, 8, 8), Box(-1, 1, (1, 8, 8)))])
def test_training_smoke(shape: tuple[int, ...], box: Box) -> None:
    torch.manual_seed(0)
    params = DDPMParams()
    model = build_ddpm(_dataset(shape, box), params)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = model.support.clamp(torch.randn((16, *shape), generator=g))
    for _ in range(5):
        loss, diag = ddpm_loss(model, x, g, params)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
        assert math.isfinite(diag["loss"])
    out = model.sample(4, generator=g, sampler="ddim", steps=5)
    assert out.x.shape == (4, *shape) and torch.isfinite(out.x).all()
    assert out.cost.nfe == 5
