"""The continuous-sigma score interface, NCSN, annealed Langevin, DPM-Solver++ and DDIM inversion.

Gaussian data x0 ~ N(mu, Sigma) gives every quantity in closed form: the score of the noised
data N(mu, Sigma + sigma^2 I), the noise predictor E[eps | x_t], and, because every sampler step
is then affine in x plus independent Gaussian noise, the exact mean and covariance of a
sampler's output (its own discretization bias included), propagated here in float64 from the
papers' update formulas, independently of the library code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import GAUSS_EYE, GAUSS_LAM, GAUSS_MU, GAUSS_SIGMA, GAUSS_U, GaussianScoreNet, gaussian_ddpm, noised_score
from torch import Tensor

import ebmbench.methods.score  # noqa: F401  (registers ncsn and annealed_langevin before builtins does)
from ebmbench.data.base import Dataset
from ebmbench.methods.base import METHODS
from ebmbench.methods.diffusion import DDPM, DDPMParams
from ebmbench.methods.score import NCSN, NCSNParams, build_ncsn, dsm_loss, ncsn_loss
from ebmbench.noise import VENoise, geometric_sigmas
from ebmbench.protocol import SAMPLERS, Box
from ebmbench.samplers.diffusion import ddim_decode, ddim_invert

MU, SIGMA, EYE, LAM, U = GAUSS_MU, GAUSS_SIGMA, GAUSS_EYE, GAUSS_LAM, GAUSS_U  # the shared stand-ins (conftest)
N = 20_000


def samples_from(x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.double()
    return x.mean(0), torch.cov(x.T)


def assert_moments(x: Tensor, m: Tensor, c: Tensor, extra: float = 0.0) -> None:
    """Sample mean and covariance within 4 standard errors (Gaussian formulas) of (m, c), plus ``extra``."""
    n, d = x.shape[0], torch.diagonal(c)
    se_mean = (d / n).sqrt()
    se_cov = ((d[:, None] * d[None, :] + c**2) / n).sqrt()  # Var(S_ij) = (c_ii c_jj + c_ij^2) / n
    mean, cov = samples_from(x)
    assert ((mean - m).abs() < 4 * se_mean + extra).all(), (mean, m)
    assert ((cov - c).abs() < 4 * se_cov + extra).all(), (cov, c)


# ---------------------------------------------------------------- the noise processes and DDPM's score


def test_vp_mapping_reproduces_alphas_cumprod() -> None:
    """sigma_t = sqrt((1-ab_t)/ab_t) <=> ab_t = 1/(1+sigma_t^2), and x_t = (x0 + sigma_t z)/sqrt(1+sigma_t^2)."""
    model = gaussian_ddpm()
    scheduler = model.make_ddpm_scheduler()
    vp = model.noise_process
    ab = scheduler.alphas_cumprod.double()
    torch.testing.assert_close(1 / (1 + vp.sigmas**2), ab, rtol=1e-12, atol=0)
    torch.testing.assert_close(vp.sigmas.float(), model.make_dpm_scheduler().sigmas)  # diffusers' own sigma_t
    assert vp.sigma_min == pytest.approx(math.sqrt((1 - ab[0]) / ab[0]))
    assert vp.sigma_max == pytest.approx(math.sqrt((1 - ab[-1]) / ab[-1]))
    t = torch.tensor([0, 1, 250, 999])
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(vp.perturb(x0, vp.sigmas[t].float(), z), scheduler.add_noise(x0, z, t))
    torch.testing.assert_close(vp.timestep(vp.sigmas[t].float()), t.float(), atol=2e-3, rtol=0)
    off_grid = torch.tensor([0.02, 0.5, 3.0, 100.0])
    torch.testing.assert_close(vp.sigma_at(vp.timestep(off_grid)), off_grid.double(), rtol=1e-5, atol=0)
    ve = VENoise(0.01, 1.0)
    torch.testing.assert_close(ve.perturb(x0, torch.full((4,), 0.5), z), x0 + 0.5 * z)


def test_ddpm_score_is_the_noised_gaussian_score() -> None:
    """-eps(x/sqrt(1+sigma^2), t(sigma))/sigma = grad log N(x; mu, Sigma + sigma^2 I), on and off the grid."""
    model = gaussian_ddpm()
    vp = model.noise_process
    g = torch.Generator().manual_seed(2)
    on_grid = vp.sigmas[torch.tensor([0, 10, 100, 500, 900, 999])].float()
    off_grid = torch.tensor([0.011, 0.05, 0.3, 1.0, 7.0, 150.0])
    for sigma in (on_grid, off_grid):
        x = MU.float() + torch.randn(6, 2, generator=g) * (1 + sigma[:, None])
        got = model.score(x, sigma)
        torch.testing.assert_close(got.double(), noised_score(x.double(), sigma.double()), rtol=2e-4, atol=1e-6)
    x = torch.randn(3, 2, generator=g)
    torch.testing.assert_close(model.score(x, 0.7), model.score(x, torch.full((3,), 0.7)))
    with pytest.raises(ValueError, match="range"):
        model.score(x, vp.sigma_min / 2)
    with pytest.raises(ValueError, match="range"):
        model.score(x, torch.tensor([1.0, 2.0, 2 * vp.sigma_max]))


# ---------------------------------------------------------------- denoising score matching


def gauss_hermite_4d() -> tuple[Tensor, Tensor, Tensor]:
    """Nodes (u, z) and weights of 3-point Gauss-Hermite in 4D: exact E over u, z ~ N(0, I_2) of degree <= 5."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)
    grid = torch.cartesian_prod(*[torch.from_numpy(nodes)] * 4)
    w = torch.from_numpy(weights)
    wgrid = torch.cartesian_prod(w, w, w, w).prod(dim=1)
    return grid[:, :2], grid[:, 2:], wgrid / wgrid.sum()


@pytest.mark.parametrize("sigma", geometric_sigmas(5.0, 0.01, 10).tolist())
def test_dsm_loss_is_minimized_by_the_noised_score(sigma: float) -> None:
    """E dsm_loss is exact by quadrature (a quadratic for affine scores): minimal at the noised score, with
    closed-form excesses: 1/2 c^2 sigma^2 tr K^{-1} for s*(1+c), 1/2 sigma^2 |delta|^2 for s* + delta and
    1/2 sigma^2 tr(D K D) for the clean score, D = Sigma^{-1} - K^{-1}, K = Sigma + sigma^2 I."""
    u, z, w = gauss_hermite_4d()
    x0 = MU + u @ torch.linalg.cholesky(SIGMA).T
    sig = torch.full((len(w),), sigma, dtype=torch.float64)
    k = SIGMA + sigma**2 * EYE
    k_inv, s_inv = torch.linalg.inv(k), torch.linalg.inv(SIGMA)
    delta = torch.tensor([0.05, -0.05], dtype=torch.float64) / sigma

    def expected(score) -> float:
        return float((w * dsm_loss(score, x0, sig, z)).sum())

    best = expected(noised_score)
    lam = torch.linalg.eigvalsh(SIGMA)
    assert best == pytest.approx(float(0.5 * (lam / (lam + sigma**2)).sum()), rel=1e-10)  # 1/2 tr Cov[z | x]
    d = s_inv - k_inv
    alternatives = {
        "clean": (lambda x, s: -(x - MU) @ s_inv, 0.5 * sigma**2 * torch.trace(d @ k @ d)),
        "x1.05": (lambda x, s: 1.05 * noised_score(x, s), 0.5 * 0.05**2 * sigma**2 * torch.trace(k_inv)),
        "x0.95": (lambda x, s: 0.95 * noised_score(x, s), 0.5 * 0.05**2 * sigma**2 * torch.trace(k_inv)),
        "shift": (lambda x, s: noised_score(x, s) + delta, 0.5 * sigma**2 * delta.pow(2).sum()),
    }
    for name, (score, excess) in alternatives.items():
        got = expected(score) - best
        assert got > 0, name
        assert got == pytest.approx(float(excess), rel=1e-6, abs=1e-13), name


def test_ncsn_loss_estimates_the_multilevel_objective() -> None:
    """ncsn_loss at the optimum: mean over i ~ U{1..L} of 1/2 sum_j lam_j / (lam_j + sigma_i^2), within 4 SE."""
    params = NCSNParams(n_sigmas=10, sigma_min=0.01, sigma_max=5.0)
    model = NCSN(GaussianScoreNet(), Box(-50, 50, (2,)), params)
    g = torch.Generator().manual_seed(3)
    x0 = (MU + torch.randn(N, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(SIGMA).T).float()
    loss, diag = ncsn_loss(model, x0, g, params)
    assert loss.shape == (N,) and diag["loss"] == pytest.approx(float(loss.mean()))
    lam, sig = torch.linalg.eigvalsh(SIGMA), geometric_sigmas(5.0, 0.01, 10)
    target = float((0.5 * lam / (lam + sig[:, None] ** 2)).sum(1).mean())
    se = float(loss.double().std()) / math.sqrt(N)
    assert abs(float(loss.double().mean()) - target) < 4 * se
    with pytest.raises(ValueError, match="noise levels"):
        ncsn_loss(model, x0[:4], g, NCSNParams(n_sigmas=5, sigma_min=0.01, sigma_max=5.0))


# ---------------------------------------------------------------- annealed Langevin


def annealed_law(sigmas: Tensor, t: int, eps: float, box: Box, denoise: bool) -> tuple[Tensor, Tensor]:
    """Exact mean and covariance of Song & Ermon 2019, Algorithm 1, on the noised Gaussian's score.

    x' = x + a/2 s(x) + sqrt(a) z with s affine; uniform start on the box (mean centre, cov w^2/12 I);
    denoising x' = x + sigma_L^2 s(x, sigma_L).
    """
    m = torch.full((2,), (box.low + box.high) / 2, dtype=torch.float64)
    c = (box.high - box.low) ** 2 / 12 * EYE
    for sigma in sigmas:
        a = eps * (sigma / sigmas[-1]) ** 2
        k_inv = torch.linalg.inv(SIGMA + sigma**2 * EYE)
        step = EYE - a / 2 * k_inv
        for _ in range(t):
            m, c = step @ m + a / 2 * k_inv @ MU, step @ c @ step.T + a * EYE
    if denoise:
        k_inv = torch.linalg.inv(SIGMA + sigmas[-1] ** 2 * EYE)
        step = EYE - sigmas[-1] ** 2 * k_inv
        m, c = step @ m + sigmas[-1] ** 2 * k_inv @ MU, step @ c @ step.T
    return m, c


def test_annealed_langevin_reproduces_the_gaussian() -> None:
    # L=10 levels 3 -> 0.1, T=100, eps=5e-3: the exact law has Sigma_12 + 0.0104 (the lowest levels barely
    # mix: alpha_L = eps). The paper's eps=2e-5 with sigma_L=0.01 would leave Cov + 0.06 on this 2D data.
    budget = {"n_sigmas": 10, "sigma_min": 0.1, "sigma_max": 3.0, "steps_per_sigma": 100, "eps": 5e-3}
    box = Box(-4, 4, (2,))
    params = NCSNParams(n_sigmas=10, sigma_min=0.1, sigma_max=3.0)
    model = NCSN(GaussianScoreNet(), box, params)
    out = model.sample(N, generator=torch.Generator().manual_seed(4), sampler="annealed_langevin", **budget)
    assert out.cost.nfe == 10 * 100 + 1
    m, c = annealed_law(geometric_sigmas(3.0, 0.1, 10), 100, 5e-3, box, denoise=True)
    assert_moments(out.x, m, c)  # (1) the chain follows Algorithm 1: sample moments within 4 SE of its exact law
    assert (m - MU).abs().max() < 1e-6 and (c - SIGMA).abs().max() < 0.015  # (2) that law is (mu, Sigma) + bias
    assert_moments(out.x, MU, SIGMA, extra=0.015)
    assert out.info["sigmas"] == pytest.approx(geometric_sigmas(3.0, 0.1, 10).tolist())
    plain = model.sample(8, generator=torch.Generator().manual_seed(5), sampler="annealed_langevin", **budget,
                         denoise=False)
    assert plain.cost.nfe == 10 * 100


def test_annealed_langevin_runs_on_ddpm_scores_and_refuses_unknown_levels() -> None:
    model = gaussian_ddpm()
    budget = {"n_sigmas": 3, "sigma_min": 0.05, "sigma_max": 10.0, "steps_per_sigma": 4, "init": "prior"}
    out = model.sample(6, generator=torch.Generator().manual_seed(6), sampler="annealed_langevin", **budget)
    assert out.cost.nfe == 3 * 4 + 1 and out.info["noise_process"]["kind"] == "VP"
    with pytest.raises(ValueError, match="range"):
        model.sample(2, generator=torch.Generator(), sampler="annealed_langevin", sigma_min=1e-3)
    with pytest.raises(ValueError, match="init"):
        model.sample(2, generator=torch.Generator(), sampler="annealed_langevin", init="zeros")


# ---------------------------------------------------------------- DPM-Solver++ and DDIM inversion


def eps_map(t: int, ab: Tensor) -> tuple[Tensor, Tensor]:
    """E[eps | x_t] = E x + e as (E, e), float64, at integer t."""
    a = ab[t]
    e_mat = (1 - a).sqrt() * torch.linalg.inv(a * SIGMA + (1 - a) * EYE)
    return e_mat, -a.sqrt() * e_mat @ MU


def dpm_solver_map(timesteps: list[int], ab: Tensor) -> tuple[Tensor, Tensor]:
    """x_0 = A x_T + b of DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), float64, on the Gaussian predictor.

    alpha = sqrt(ab), sigma = sqrt(1-ab), lambda = log(alpha/sigma), h_i = lambda_i - lambda_{i-1};
    x_i = sigma_i/sigma_{i-1} x_{i-1} - alpha_i (e^{-h_i} - 1) D_i with D_i = m_{i-1} on the first step and
    D_i = (1 + 1/(2 r_i)) m_{i-1} - 1/(2 r_i) m_{i-2}, r_i = h_{i-1}/h_i, after; the last step goes to
    sigma = 0 at first order (diffusers' final_sigmas_type='zero'), i.e. returns m.
    Affine maps are kept as (matrix, offset) pairs acting on x_T.
    """
    x, prev_m, prev_h = (EYE.clone(), torch.zeros(2, dtype=torch.float64)), None, None
    for i, t in enumerate(timesteps):
        e_mat, e_off = eps_map(t, ab)
        a_s, s_s = ab[t].sqrt(), (1 - ab[t]).sqrt()
        # data prediction m = (x - sigma eps) / alpha, affine in x_T
        m = ((EYE - s_s * e_mat) @ x[0] / a_s, ((EYE - s_s * e_mat) @ x[1] - s_s * e_off) / a_s)
        if i + 1 == len(timesteps):
            return m
        a_t, s_t = ab[timesteps[i + 1]].sqrt(), (1 - ab[timesteps[i + 1]]).sqrt()
        h = torch.log(a_t / s_t) - torch.log(a_s / s_s)
        if prev_m is None:
            d = m
        else:
            r = prev_h / h
            d = tuple((1 + 1 / (2 * r)) * mi - 1 / (2 * r) * pi for mi, pi in zip(m, prev_m))
        x = tuple(s_t / s_s * xi - a_t * (torch.exp(-h) - 1) * di for xi, di in zip(x, d))
        prev_m, prev_h = m, h
    raise AssertionError("unreachable")


def test_dpm_solver_reproduces_the_gaussian() -> None:
    model = gaussian_ddpm()
    scheduler = model.make_dpm_scheduler()
    scheduler.set_timesteps(20)
    assert scheduler.config.algorithm_type == "dpmsolver++" and scheduler.config.solver_order == 2
    assert not scheduler.config.thresholding and scheduler.config.timestep_spacing == "leading"
    ab = model.make_ddpm_scheduler().alphas_cumprod.double()
    a_mat, b = dpm_solver_map(scheduler.timesteps.tolist(), ab)
    out = model.sample(N, generator=torch.Generator().manual_seed(7), sampler="dpm_solver", steps=20)
    assert out.cost.nfe == 20 and out.info["timesteps"] == 20
    # (1) diffusers' chain is the paper's map, sample by sample (x_T is the sampler's only randomness)
    x_T = torch.randn((N, 2), generator=torch.Generator().manual_seed(7)).double()
    torch.testing.assert_close(out.x.double(), x_T @ a_mat.T + b, atol=2e-4, rtol=1e-4)
    # (2) its law N(b, A A^T) is (mu, Sigma) up to two known biases. The mean's is the prior's alone:
    # x_T ~ N(0, I) ignores sqrt(ab_940) mu (diffusers' 'leading' DPM spacing starts at t = 20 * (1000 // 21)),
    # so b - mu = -A sqrt(ab_940) mu exactly, 0.0086 here. The covariance's is the solver's 2nd-order
    # discretization error: 0.0147 at 20 steps, 0.0028 at 50 (O(h^2)). Hence a tolerance of 0.02.
    t_first = int(scheduler.timesteps[0])
    torch.testing.assert_close(b - MU, -a_mat @ (ab[t_first].sqrt() * MU), atol=1e-9, rtol=0)
    assert (b - MU).abs().max() < 0.02 and (a_mat @ a_mat.T - SIGMA).abs().max() < 0.02
    scheduler.set_timesteps(50)
    a50, _ = dpm_solver_map(scheduler.timesteps.tolist(), ab)
    assert (a50 @ a50.T - SIGMA).abs().max() < 0.004
    assert_moments(out.x, MU, SIGMA, extra=0.02)  # and the samples, within 4 SE of (mu, Sigma) + bias


def test_ddim_inversion_then_ddim_returns_the_start() -> None:
    model = gaussian_ddpm()
    x0 = (MU + torch.randn(1000, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
          @ torch.linalg.cholesky(SIGMA).T).float()
    # plain inversion follows Song et al. 2021 eq. 13 run forwards: x_t = sqrt(ab_t) x0_hat + sqrt(1-ab_t) eps(x_t', t)
    ab = model.make_ddpm_scheduler().alphas_cumprod.double()
    x = x0.double()
    for t in range(0, 1000, 20):
        a_prev, a = (ab[t - 20] if t >= 20 else torch.tensor(1.0, dtype=torch.float64)), ab[t]
        e_mat, e_off = eps_map(t, ab)
        eps = x @ e_mat.T + e_off
        x = a.sqrt() * (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt() + (1 - a).sqrt() * eps
    model.net.reset()
    x_T = ddim_invert(model, x0, steps=50)
    assert model.net.forward_calls == 50
    torch.testing.assert_close(x_T.double(), x, atol=1e-4, rtol=1e-4)
    plain_error = (ddim_decode(model, x_T, steps=50) - x0).abs().max()
    # fixed-point iterations invert the DDIM sampler's own step: back to x0 up to float32 rounding
    model.net.reset()
    x_T = ddim_invert(model, x0, steps=50, fixed_point_iters=5)
    assert model.net.forward_calls == 50 * 6
    error = (ddim_decode(model, x_T, steps=50) - x0).abs().max()
    assert error < 1e-4
    assert plain_error > 100 * error  # eps at x_t' instead of x_t costs O(1/steps): 0.14 at 50 steps


# ---------------------------------------------------------------- registration and training


def test_registrations() -> None:
    spec = METHODS.get("ncsn")
    assert spec.family == "score" and spec.notebook == "train_score.ipynb"
    assert NCSN.capabilities == {"score"} and "score" in DDPM.capabilities
    assert SAMPLERS.get("annealed_langevin").requires == "score"
    assert SAMPLERS.get("dpm_solver").requires == "eps_prediction"
    [(name, budget)] = spec.eval_samplers(NCSNParams())
    assert name == "annealed_langevin" and set(budget) == set(SAMPLERS.get(name).parameters())
    assert ("dpm_solver", {"steps": 20}) in METHODS.get("ddpm").eval_samplers(DDPMParams())


def _dataset(shape: tuple[int, ...], box: Box, n: int = 64) -> Dataset:
    g = torch.Generator().manual_seed(0)
    train, val, test = (box.clamp(0.3 * torch.randn((n, *shape), generator=g)) for _ in range(3))
    return Dataset("gauss", train, val, test, box, convention="identity")


@pytest.mark.parametrize(
    ("shape", "box", "steps"), [((2,), Box(-4, 4, (2,)), 100), ((1, 8, 8), Box(-1, 1, (1, 8, 8)), 20)]
)
def test_training_smoke(shape: tuple[int, ...], box: Box, steps: int) -> None:
    torch.manual_seed(0)
    params = NCSNParams(n_sigmas=4, sigma_min=0.05, sigma_max=1.0)
    dataset = _dataset(shape, box)
    model = build_ncsn(dataset, params)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)

    def held_out_loss() -> float:  # the same x, levels and noise every time
        with torch.no_grad():
            return float(ncsn_loss(model, dataset.val, torch.Generator().manual_seed(1), params)[0].mean())

    before = held_out_loss()
    for _ in range(steps):
        loss, diag = ncsn_loss(model, dataset.train[torch.randint(0, 64, (32,), generator=g)], g, params)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
        assert math.isfinite(diag["loss"])
    assert held_out_loss() < 0.9 * before
    out = model.sample(4, generator=g, sampler="annealed_langevin", n_sigmas=2, sigma_min=0.05, steps_per_sigma=3)
    assert out.x.shape == (4, *shape) and torch.isfinite(out.x).all()
    assert out.cost.nfe == 2 * 3 + 1
