"""The DDPM variational bound (Ho et al. 2020, eq. 5) for any model with capability ``eps_prediction``.

-log p(x0) <= L = KL(q(x_T | x0) || N(0, I)) + sum_{t=2}^{T} KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))
                  - log p(x0 | x1),

in Ho et al.'s 1-based t; the model's diffusers schedule indexes t from 0, so its x at index s is Ho's
x_{s+1}. The reverse step p(x_{s-1} | x_s) = N(mu(x_s), sigma_s^2 I) with
mu = (x_s - beta_s / sqrt(1 - ab_s) eps(x_s, s)) / sqrt(alpha_s) (eq. 11) and the model's fixed variance:
``fixed_small`` sigma_s^2 = beta~_s = (1 - ab_{s-1}) / (1 - ab_s) beta_s, ``fixed_large`` sigma_s^2 = beta_s.
beta~_0 = 0, so the decoder at s = 0 uses beta~_1 for both, as Ho et al.'s code (posterior_log_variance_clipped
and the fixedlarge variance both replace index 0 by beta~_1). Decoders: Gaussian N(x0; mu, sigma^2 I) for
continuous data; for discrete levels the discretized Gaussian of eq. 13, each level's bin of width w cut at
+-w/2 and the end bins extended to +-inf, so the bound is on the probability of the discrete data.

The T - 1 KL terms are summed exactly over t (one x_t draw per term and data point), or estimated by
``t_samples`` uniform draws of t per data point, scaled by T - 1 (unbiased); the prior and decoder terms
are always computed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ebmbench.data.base import Dataset
from ebmbench.mathutil import log_ndtr_diff
from ebmbench.metrics import likelihood
from ebmbench.metrics.base import Measured, Metric, NotApplicable, register
from ebmbench.protocol import EpsModel, GenerativeModel

VARIANCES = ("fixed_small", "fixed_large")


@dataclass
class ELBOParams:
    """Settings of the DDPM bound (Ho et al. 2020, eq. 5)."""

    t_samples: int = 0  # KL terms per data point: 0 sums all T - 1; n > 0 draws n timesteps uniformly
    batch_size: int = 512  # data points per batch
    max_points: int = 0  # test points evaluated (0: the whole test split)
    seed: int = 0  # seeds the noise of x_t and the timestep draws


@dataclass
class Schedule:
    """The model's diffusion schedule in float64: beta_s, alpha_s, ab_s for s = 0..T-1, and sigma_s^2."""

    beta: Tensor
    ab: Tensor
    variance_type: str

    @property
    def T(self) -> int:  # noqa: N802  (the paper's T)
        return len(self.beta)

    @property
    def ab_prev(self) -> Tensor:
        return torch.cat([self.beta.new_ones(1), self.ab[:-1]])

    @property
    def posterior_variance(self) -> Tensor:
        """beta~_s = (1 - ab_{s-1}) / (1 - ab_s) beta_s (Ho et al. eq. 7); 0 at s = 0."""
        return (1 - self.ab_prev) / (1 - self.ab) * self.beta

    @property
    def model_variance(self) -> Tensor:
        """sigma_s^2 of p(x_{s-1} | x_s); at s = 0 (the decoder) beta~_1, as Ho et al.'s code."""
        var = self.posterior_variance.clone() if self.variance_type == "fixed_small" else self.beta.clone()
        var[0] = self.posterior_variance[1]
        return var


def model_schedule(model: EpsModel) -> Schedule:
    """beta, alpha-bar and the reverse variance of the model's pinned DDPM scheduler (diffusers), on its device."""
    scheduler = model.make_ddpm_scheduler()
    variance_type = scheduler.config.variance_type
    if variance_type not in VARIANCES:
        raise NotApplicable(f"variance_type {variance_type!r}: the bound is computed for {VARIANCES}")
    beta, ab = (v.double().to(model.device) for v in (scheduler.betas, scheduler.alphas_cumprod))
    return Schedule(beta, ab, variance_type)


def gaussian_kl(mean_q: Tensor, var_q: Tensor, mean_p: Tensor, var_p: Tensor) -> Tensor:
    """KL(N(mean_q, var_q I) || N(mean_p, var_p I)) per sample, variances per sample, in float64."""
    d = mean_q[0].numel()
    sq = (mean_q - mean_p).pow(2).flatten(1).sum(dim=1)
    return 0.5 * (d * (var_q / var_p - 1 + (var_p / var_q).log()) + sq / var_p)


def prior_kl(x0: Tensor, sch: Schedule) -> Tensor:
    """KL(q(x_T | x0) || N(0, I)) = KL(N(sqrt(ab_T) x0, (1 - ab_T) I) || N(0, I))."""
    ab = sch.ab[-1]
    ones = x0.new_ones(x0.shape[0])
    return gaussian_kl(ab.sqrt() * x0, (1 - ab) * ones, torch.zeros_like(x0), ones)


def per_sample(v: Tensor, x: Tensor) -> Tensor:
    return v.view(-1, *([1] * (x.dim() - 1)))


def noisy(model: GenerativeModel, x0: Tensor, s: Tensor, sch: Schedule, generator: torch.Generator
          ) -> tuple[Tensor, Tensor]:
    """x_s = sqrt(ab_s) x0 + sqrt(1 - ab_s) eps in float64, and the model's mean mu(x_s, s) (eq. 11)."""
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)  # the generator's device
    ab, beta = per_sample(sch.ab[s], x0), per_sample(sch.beta[s], x0)
    x_s = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    with torch.no_grad():
        eps_hat = model.eps(x_s.to(model_dtype(model)), s).double()
    mu = (x_s - beta / (1 - ab).sqrt() * eps_hat) / (1 - beta).sqrt()
    return x_s, mu


def step_kl(model: GenerativeModel, x0: Tensor, s: Tensor, sch: Schedule, generator: torch.Generator) -> Tensor:
    """KL(q(x_{s-1} | x_s, x0) || p(x_{s-1} | x_s)) for s >= 1, one x_s draw per sample (Ho et al. eq. 6-7)."""
    x_s, mu = noisy(model, x0, s, sch, generator)
    ab, ab_prev, beta = (per_sample(v[s], x0) for v in (sch.ab, sch.ab_prev, sch.beta))
    mean_q = ab_prev.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * x_s
    return gaussian_kl(mean_q, sch.posterior_variance[s], mu, sch.model_variance[s])


def discretized_gaussian_nll(x0: Tensor, mu: Tensor, std: float, width: float, low: float, high: float) -> Tensor:
    """-log prod_i int_{bin(x0_i)} N(y; mu_i, std^2) dy, bins x0 +- w/2 and the end bins open (Ho et al. eq. 13)."""
    inf = torch.full_like(x0, math.inf)
    hi = torch.where(x0 >= high - width / 4, inf, (x0 + width / 2 - mu) / std)
    lo = torch.where(x0 <= low + width / 4, -inf, (x0 - width / 2 - mu) / std)
    return -log_ndtr_diff(hi, lo).flatten(1).sum(dim=1)


def gaussian_nll(x0: Tensor, mu: Tensor, std: float) -> Tensor:
    """-log N(x0; mu, std^2 I) per sample."""
    z = (x0 - mu) / std
    return (0.5 * z.pow(2) + math.log(std) + 0.5 * math.log(2 * math.pi)).flatten(1).sum(dim=1)


def decoder_nll(model: GenerativeModel, x0: Tensor, sch: Schedule, width: float, low: float, high: float,
                generator: torch.Generator) -> Tensor:
    """-log p(x0 | x_1): Gaussian density (width 0) or the discretized Gaussian (width > 0), std sigma_1."""
    _, mu = noisy(model, x0, torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device), sch, generator)
    std = float(sch.model_variance[0].sqrt())
    return discretized_gaussian_nll(x0, mu, std, width, low, high) if width else gaussian_nll(x0, mu, std)


def model_dtype(model: GenerativeModel) -> torch.dtype:
    return next(model.parameters()).dtype


def bound_terms(model: GenerativeModel, x0: Tensor, sch: Schedule, width: float, low: float, high: float,
                params: ELBOParams, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample (prior KL, summed step KLs, decoder NLL) of the bound, in nats, float64."""
    x0 = x0.double()
    n, T = x0.shape[0], sch.T
    if params.t_samples <= 0 or params.t_samples >= T - 1:
        steps = sum(step_kl(model, x0, torch.full((n,), s, dtype=torch.long, device=x0.device), sch, generator)
                    for s in range(1, T))
    else:
        draws = [torch.randint(1, T, (n,), generator=generator, device=x0.device)
                 for _ in range(params.t_samples)]
        steps = (T - 1) / params.t_samples * sum(step_kl(model, x0, s, sch, generator) for s in draws)
    return prior_kl(x0, sch), steps, decoder_nll(model, x0, sch, width, low, high, generator)


def negative_elbo(model: GenerativeModel, x: Tensor, width: float, low: float, high: float, params: ELBOParams,
                  generator: torch.Generator) -> tuple[Tensor, dict[str, Any]]:
    """-ELBO per data point over batches, with the mean of each term and the cost."""
    sch = model_schedule(model)
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    calls0, start = model.net.forward_calls, time.perf_counter()
    for lo in range(0, len(x), params.batch_size):
        parts.append(bound_terms(model, x[lo:lo + params.batch_size], sch, width, low, high, params, generator))
    wall = time.perf_counter() - start
    prior, steps, decoder = (torch.cat(t).cpu() for t in zip(*parts))
    n_batches = math.ceil(len(x) / params.batch_size)
    info = {"prior_kl": float(prior.mean()), "step_kl_sum": float(steps.mean()), "decoder_nll": float(decoder.mean()),
            "nfe_per_point": (model.net.forward_calls - calls0) / n_batches, "wall_s": wall,
            "variance_type": sch.variance_type, "T": sch.T}
    return prior + steps + decoder, info


def model_metric_elbo(model: GenerativeModel, dataset: Dataset, params: ELBOParams | None = None
                      ) -> Measured:
    """Held-out -ELBO of a noise-prediction diffusion model (Ho et al. 2020, eq. 5): an upper bound on its NLL.

    ``model`` has capability ``eps_prediction`` (``ebmbench.protocol.EpsModel``); the registry checks it."""
    params = params or ELBOParams()
    generator = torch.Generator(model.device).manual_seed(params.seed)  # noise drawn where it is used, no copies
    x = likelihood.heldout_points(dataset, params.max_points).to(model.device)
    box = dataset.support
    width = likelihood.bin_width(dataset.levels, box)
    nll, info = negative_elbo(model, x, width, box.low, box.high, params, generator)
    value, stderr = float(nll.mean()), float(nll.std() / math.sqrt(len(nll)))
    exact_sum = params.t_samples <= 0 or params.t_samples >= info["T"] - 1
    decoder = (f"discretized Gaussian over {dataset.levels} levels (bin width {width:.4g}, end bins to +-inf; "
               "Ho et al. eq. 13)" if width else "Gaussian N(x0; mu(x_1), sigma_1^2 I)")
    meta = {
        "method": "DDPM variational bound (Ho et al. 2020, eq. 5)", "likelihood_kind": "upper bound",
        "bound_direction": "-ELBO >= -log p(x0): a stochastic upper bound on the NLL (conservative)",
        "decoder": decoder, "reverse_variance": info["variance_type"] + (
            " (beta-tilde_t, posterior)" if info["variance_type"] == "fixed_small" else " (beta_t)"),
        "decoder_variance": "beta-tilde_1 (Ho et al.'s clipped log variance)",
        "timesteps": "all T - 1 KL terms, one x_t draw each" if exact_sum else
        f"{params.t_samples} uniform timesteps per point, scaled by T - 1",
        "convention": "probability of the discrete levels" if width else "continuous density",
        **info, "split": "test", "units": "nats per sample", "n": len(nll), "test_split_size": len(dataset.test),
        "elbo_params": asdict(params), "bits_per_dim": likelihood.bits_per_dim(value, x[0].numel()),
        **likelihood.forward_kl_meta(dataset, x, nll, "upper bound"),
    }
    return value, stderr, meta


def configure(cfg: Any) -> dict[str, Any]:
    """The run's test points, seed and timestep draws (``elbo_t_samples``)."""
    return {"params": ELBOParams(max_points=cfg.likelihood_points, seed=cfg.seed, t_samples=cfg.elbo_t_samples)}


register(Metric("nll_elbo", "model", model_metric_elbo, "Ho et al. 2020, eq. 5", configure,
                requires="eps_prediction"))
