"""Annealed importance sampling (Neal 2001) for log Z of any energy model, with forward and reverse bounds.

Path: geometric, f_beta = f_0^(1 - beta) exp(-beta E) from a tractable base f_0 with known Z_0 to the
model, for 0 = beta_0 < beta_1 < ... < beta_K = 1 (K annealing steps, K - 1 intermediate distributions).

- Continuous data: f_0 uniform on the support box, or a diagonal Gaussian truncated to it; transitions
  are HMC or Metropolis-adjusted Langevin (``hmc_chain``, ``mala_chain``) on U_beta = (1 - beta) E_0 + beta E,
  which reject moves that leave the box, so every f_beta is exactly the density on the box.
- Binary models with capability ``gibbs`` (``ebmbench.protocol.GibbsModel``: a Bernoulli-Bernoulli RBM that
  gives its W, b, c by ``ais_parameters()`` and exact samples by ``exact_sample()`` when it can): the
  path of Salakhutdinov & Murray 2008, geometric in the joint (v, h) from a base-rate RBM (W = 0, visible
  biases from the data marginals), so every intermediate distribution has block Gibbs conditionals.

Forward AIS (x_0 ~ f_0 / Z_0) gives weights with E[w] = Z / Z_0, hence E[log Z_0 + log mean w] <= log Z: a
stochastic lower bound. Reverse AIS runs the same path backwards from samples of the model; its weights
have E[w] = Z_0 / Z, hence log Z_0 - log mean w is a stochastic upper bound (Grosse et al. 2015, BDMC;
Burda et al. 2015, RAISE) -- exactly so only when the start is an exact sample of the model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from ebmbench.data.base import Dataset, tensors_hash
from ebmbench.mathutil import visible_logits
from ebmbench.metrics import likelihood
from ebmbench.metrics.base import Measured, Metric, NotApplicable, register
from ebmbench.protocol import Box, GenerativeModel, GibbsModel
from ebmbench.samplers.corrected import sigma_table
from ebmbench.samplers.hmc import hmc_chain
from ebmbench.samplers.mala import mala_chain
from ebmbench.samplers.metropolis import MCMCStats, settle

Energy = Callable[[Tensor], Tensor]
SIGMOID_DELTA = 4.0  # steepness of the sigmoid schedule (Grosse et al. 2015, BDMC code)


@dataclass
class AISParams:
    """Settings of AIS (Neal 2001) and of its reverse run (Grosse et al. 2015)."""

    n_steps: int = 1000  # K annealing steps: distributions beta_0 = 0 < ... < beta_K = 1
    runs: int = 10  # R independent AIS runs; standard errors are over runs
    chains: int = 16  # M chains per run; a run estimates log Z_0 + log mean_m w_m
    schedule: str = "sigmoid"  # spacing of beta: sigmoid (Grosse et al. 2015) | linear
    base: str = "uniform"  # continuous base f_0: uniform on the box | gaussian (train moments, cut to the box)
    base_min_std: float = 0.05  # gaussian base: std floor, as a fraction of the box width
    kernel: str = "hmc"  # continuous transitions: hmc | mala (binary models always use block Gibbs)
    mcmc_steps: int = 1  # transitions (HMC iterations, MALA steps or Gibbs sweeps) per distribution
    step_size: float = 0.05  # HMC leapfrog step h, or the MALA step eps
    leapfrog_steps: int = 5  # HMC leapfrog steps L per iteration
    step_jitter: float = 0.2  # HMC: h drawn uniformly from step_size * [1 - jitter, 1 + jitter]
    start_steps: int = 2000  # reverse start without an exact sampler: transitions of the long-run chains
    grid_cells: int = 256  # reverse start in 2D: cells per axis of the grid draw
    seed: int = 0  # seeds the generator of every draw (metrics get no generator)
    reverse: bool = True  # also run reverse AIS (its start costs start_steps transitions per chain)
    level_step: float = 0.1  # diffusion path: MALA eps at level t is level_step * sigma_t^2 + level_step_floor
    level_step_floor: float = 0.002


@dataclass
class AISResult:
    """log Z from R independent runs of M chains each, in one direction."""

    direction: str  # forward (stochastic lower bound) | reverse (stochastic upper bound)
    log_z: float  # mean over runs of log Z_hat_r
    stderr: float  # standard deviation over runs / sqrt(R)
    per_run: list[float]  # log Z_hat_r
    pooled: float  # one estimate from all R * M weights together
    ess: float  # mean over runs of the effective sample size (sum w)^2 / sum w^2 of its M weights
    log_z0: float  # log normalizer of the base
    nfe: int  # energy evaluations (continuous) or Gibbs sweeps (binary) per chain
    wall_s: float
    acceptance: float | None  # mean Metropolis acceptance of the transitions (continuous only)
    start: str  # forward: the base; reverse: how the model samples were drawn
    approximate_start: bool  # reverse only: True when the start is not an exact model sample
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Path(Protocol):
    """A sequence of unnormalized densities f_beta from a base with known Z_0 to the model."""

    log_z0: float

    def sample_base(self, n: int, generator: torch.Generator) -> Tensor: ...

    def delta_log_f(self, x: Tensor, beta_from: float, beta_to: float) -> Tensor: ...

    def transition(self, x: Tensor, beta: float, generator: torch.Generator, steps: int) -> Tensor: ...


def schedule(n_steps: int, kind: str = "sigmoid") -> list[float]:
    """beta_0 = 0 < ... < beta_K = 1: linear, or a sigmoid rescaled to [0, 1] (Grosse et al. 2015)."""
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps}: AIS needs at least one annealing step")
    t = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    if kind == "linear":
        betas = t
    elif kind == "sigmoid":
        s = torch.sigmoid(SIGMOID_DELTA * (2.0 * t - 1.0))
        betas = (s - s[0]) / (s[-1] - s[0])
    else:
        raise ValueError(f"schedule {kind!r}: choose 'sigmoid' or 'linear'")
    betas[0], betas[-1] = 0.0, 1.0
    return betas.tolist()


def anneal(path: Path, x: Tensor, betas: list[float], generator: torch.Generator, steps: int = 1) -> Tensor:
    """log w = sum_k log f_{beta_k}(x_{k-1}) - log f_{beta_{k-1}}(x_{k-1}), x_k ~ T_{beta_k}(x_{k-1}) (Neal 2001).

    Transitions run at the inner betas only: one at the last beta would not change the weights.
    """
    log_w = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for k in range(1, len(betas)):
        log_w = log_w + path.delta_log_f(x, betas[k - 1], betas[k])
        if k < len(betas) - 1:
            x = path.transition(x, betas[k], generator, steps)
    return log_w


def log_mean_exp(a: Tensor, dim: int = -1) -> Tensor:
    return torch.logsumexp(a, dim=dim) - math.log(a.shape[dim])


def effective_sample_size(log_w: Tensor) -> Tensor:
    """(sum w)^2 / sum w^2 along the last dimension (Kong 1992), from log weights."""
    return (2 * torch.logsumexp(log_w, dim=-1) - torch.logsumexp(2 * log_w, dim=-1)).exp()


def summarize(log_w: Tensor, log_z0: float, direction: str, runs: int) -> dict[str, Any]:
    """Per-run log Z_hat_r = log Z_0 +- log mean w (forward +, reverse -), their mean and standard error."""
    sign = 1.0 if direction == "forward" else -1.0
    w = log_w.reshape(runs, -1)
    per_run = log_z0 + sign * log_mean_exp(w)
    stderr = float(per_run.std() / math.sqrt(runs)) if runs > 1 else math.nan
    return {"log_z": float(per_run.mean()), "stderr": stderr, "per_run": per_run.tolist(),
            "pooled": log_z0 + sign * float(log_mean_exp(log_w)), "ess": float(effective_sample_size(w).mean())}


# ---------------------------------------------------------------- continuous data: energies on a box


class CountingEnergy:
    """An energy callable that counts its calls (one batched evaluation each)."""

    def __init__(self, energy: Energy) -> None:
        self.energy, self.calls = energy, 0

    def __call__(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.energy(x)


class UniformBase:
    """f_0 = 1 on the box: E_0 = 0, Z_0 = the box volume."""

    def __init__(self, box: Box) -> None:
        self.box, self.log_z0 = box, box.log_volume

    def energy(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0])

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device) -> Tensor:
        return self.box.uniform(n, generator, generator.device).to(device=device, dtype=dtype)

    def describe(self) -> str:
        return f"uniform on the box [{self.box.low}, {self.box.high}]^{self.box.dim}"


class TruncatedGaussianBase:
    """f_0 = exp(-|(x - m) / s|^2 / 2) on the box: Z_0 = prod_i s_i sqrt(2 pi) (Phi(b_i) - Phi(a_i))."""

    def __init__(self, box: Box, mean: Tensor, std: Tensor) -> None:
        self.box = box
        self.mean, self.std = mean.double().reshape(box.shape), std.double().reshape(box.shape)
        self.a, self.b = (box.low - self.mean) / self.std, (box.high - self.mean) / self.std
        mass = torch.special.ndtr(self.b) - torch.special.ndtr(self.a)
        self.log_z0 = float((self.std.log() + 0.5 * math.log(2 * math.pi) + mass.log()).sum())

    def energy(self, x: Tensor) -> Tensor:
        z = (x - self.mean.to(x)) / self.std.to(x)
        return 0.5 * z.pow(2).flatten(1).sum(dim=1)

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device) -> Tensor:
        """Inverse-CDF draws, x = m + s Phi^-1(Phi(a) + u (Phi(b) - Phi(a))), in float64."""
        u = torch.rand((n, *self.box.shape), generator=generator, device=generator.device, dtype=torch.float64)
        lo, hi = torch.special.ndtr(self.a), torch.special.ndtr(self.b)
        x = self.mean + self.std * torch.special.ndtri(lo + u.cpu() * (hi - lo))
        return self.box.clamp(x).to(device=device, dtype=dtype)

    def describe(self) -> str:
        return "diagonal Gaussian with the training split's moments, truncated to the box"


Base = UniformBase | TruncatedGaussianBase


class EnergyPath:
    """f_beta = f_0^(1 - beta) exp(-beta E) on a box, with HMC or MALA transitions on U_beta."""

    def __init__(self, energy: Energy, box: Box, base: Base, params: AISParams, dtype: torch.dtype,
                 device: torch.device) -> None:
        if params.kernel not in ("hmc", "mala"):
            raise ValueError(f"kernel {params.kernel!r}: choose 'hmc' or 'mala'")
        self.energy, self.box, self.base, self.params = CountingEnergy(energy), box, base, params
        self.log_z0, self.dtype, self.device = base.log_z0, dtype, device
        self.accepted: list[float] = []
        self.chains: list[MCMCStats] = []  # the transitions' device-side stats, read once after annealing

    def sample_base(self, n: int, generator: torch.Generator) -> Tensor:
        return self.base.sample(n, generator, self.dtype, self.device)

    def delta_log_f(self, x: Tensor, beta_from: float, beta_to: float) -> Tensor:
        """log f_b'(x) - log f_b(x) = (b' - b) (E_0(x) - E(x)): one energy evaluation."""
        with torch.no_grad():
            gap = self.base.energy(x).double() - self.energy(x).double()
        return (beta_to - beta_from) * gap

    def transition(self, x: Tensor, beta: float, generator: torch.Generator, steps: int) -> Tensor:
        """``steps`` HMC iterations or MALA steps leaving f_beta / Z_beta invariant."""
        p = self.params

        def u(y: Tensor) -> Tensor:
            return (1.0 - beta) * self.base.energy(y) + beta * self.energy(y)

        if p.kernel == "hmc":
            x, stats = hmc_chain(u, x, steps=steps, leapfrog_steps=p.leapfrog_steps, step_size=p.step_size,
                                 step_jitter=p.step_jitter, generator=generator, box=self.box, sync=False)
        else:
            x, stats = mala_chain(u, x, steps=steps, eps=p.step_size, generator=generator, box=self.box, sync=False)
        self.chains.append(stats)  # no host read per annealing step: ``settle_chains`` reads them all at the end
        return x


# ---------------------------------------------------------------- binary data: RBMs (Salakhutdinov & Murray 2008)


class RBMPath:
    """Geometric path in (v, h) from a base-rate RBM (W = 0, visible biases b_A) to the RBM (W, b, c).

    Marginal of v: log f_beta(v) = (1 - beta) b_A.v + beta b.v + sum_j softplus(beta (c_j + W_j.v)), so
    Z_0 = 2^H prod_i (1 + e^{b_A,i}) and f_1 = exp(-F(v)) (Salakhutdinov & Murray 2008, Sec. 4.1). Written
    by hand: no library anneals RBMs; the sweeps are the RBM's own conditionals at inverse temperature beta.
    """

    def __init__(self, W: Tensor, b: Tensor, c: Tensor, b_base: Tensor) -> None:
        self.W, self.b, self.c = W.double(), b.double(), c.double()
        self.b_base = b_base.double().to(self.W.device)
        self.log_z0 = float(self.W.shape[0] * math.log(2.0) + F.softplus(self.b_base).sum())
        self.sweeps = 0

    def sample_base(self, n: int, generator: torch.Generator) -> Tensor:
        p = torch.sigmoid(self.b_base).expand(n, -1)
        return torch.bernoulli(p.to(generator.device), generator=generator).to(self.W.device)

    def delta_log_f(self, v: Tensor, beta_from: float, beta_to: float) -> Tensor:
        a = F.linear(v, self.W, self.c)
        bias = (beta_to - beta_from) * (v @ (self.b - self.b_base))
        return bias + (F.softplus(beta_to * a) - F.softplus(beta_from * a)).sum(dim=1)

    def transition(self, v: Tensor, beta: float, generator: torch.Generator, steps: int) -> Tensor:
        """``steps`` block Gibbs sweeps h ~ p_beta(h | v), v ~ p_beta(v | h)."""
        for _ in range(steps):
            h = torch.bernoulli(torch.sigmoid(beta * F.linear(v, self.W, self.c)), generator=generator)
            logits = (1.0 - beta) * self.b_base + beta * F.linear(h, self.W.T, self.b)
            v = torch.bernoulli(torch.sigmoid(logits), generator=generator)
            self.sweeps += 1
        return v


# ---------------------------------------------------------------- running both directions


def run_forward(path: Path, params: AISParams, generator: torch.Generator) -> dict[str, Any]:
    """R * M forward chains from the base: log Z_0 + log mean w, a stochastic lower bound."""
    x = path.sample_base(params.runs * params.chains, generator)
    log_w = anneal(path, x, schedule(params.n_steps, params.schedule), generator, params.mcmc_steps)
    return summarize(log_w, path.log_z0, "forward", params.runs)


def run_reverse(path: Path, x_model: Tensor, params: AISParams, generator: torch.Generator) -> dict[str, Any]:
    """R * M reverse chains from model samples: log Z_0 - log mean w, a stochastic upper bound if they are exact."""
    log_w = anneal(path, x_model, schedule(params.n_steps, params.schedule)[::-1], generator, params.mcmc_steps)
    return summarize(log_w, path.log_z0, "reverse", params.runs)


def _timed(fn: Callable[[], dict[str, Any]], path: Path) -> tuple[dict[str, Any], float, int, float | None]:
    """Run one direction; return its summary, wall clock, cost per chain and mean acceptance."""
    calls0 = _cost(path)
    if isinstance(path, EnergyPath):
        path.accepted.clear()
    start = time.perf_counter()
    out = fn()
    if isinstance(path, EnergyPath):
        settle_chains(path, "AIS transitions")
    wall = time.perf_counter() - start
    acc = sum(path.accepted) / len(path.accepted) if isinstance(path, EnergyPath) and path.accepted else None
    return out, wall, _cost(path) - calls0, acc


def settle_chains(path: EnergyPath | DiffusionPath, what: str) -> None:
    """Raise if an energy along any transition was NaN or inf, else move their acceptances into ``accepted``
    (one host read for the whole anneal)."""
    chains, path.chains = path.chains, []
    path.accepted = settle(chains, what)


def _cost(path: Path) -> int:
    return path.energy.calls if isinstance(path, EnergyPath) else path.sweeps  # type: ignore[attr-defined]


def ais(path: Path, params: AISParams, generator: torch.Generator, x_model: Tensor | None = None,
        start: str = "", approximate_start: bool = True, reverse_generator: torch.Generator | None = None
        ) -> dict[str, AISResult]:
    """Forward AIS, and reverse AIS when model samples ``x_model`` (R * M of them) are given (drawing from
    ``reverse_generator`` if given, so that the forward estimate does not depend on whether reverse runs)."""
    base = path.base.describe() if isinstance(path, EnergyPath) else "base-rate RBM (W = 0)"
    out, wall, cost, acc = _timed(lambda: run_forward(path, params, generator), path)
    results = {"forward": AISResult("forward", **out, log_z0=path.log_z0, nfe=cost, wall_s=wall, acceptance=acc,
                                    start=base, approximate_start=False)}
    if x_model is not None:
        rev_gen = reverse_generator or generator
        out, wall, cost, acc = _timed(lambda: run_reverse(path, x_model, params, rev_gen), path)
        results["reverse"] = AISResult("reverse", **out, log_z0=path.log_z0, nfe=cost, wall_s=wall,
                                       acceptance=acc, start=start, approximate_start=approximate_start)
    return results


# ---------------------------------------------------------------- from a model: path and reverse start by capability


def continuous_base(model: GenerativeModel, dataset: Dataset | None, params: AISParams) -> Base:
    """The base on the model's support box: uniform, or a Gaussian with the training split's moments."""
    box = model.support
    if params.base == "uniform":
        return UniformBase(box)
    if params.base == "gaussian":
        if dataset is None:
            raise ValueError("base 'gaussian' takes its moments from a dataset's training split")
        flat = dataset.train.double().flatten(1)
        floor = params.base_min_std * (box.high - box.low)
        return TruncatedGaussianBase(box, flat.mean(dim=0), flat.std(dim=0).clamp_min(floor))
    raise ValueError(f"base {params.base!r}: choose 'uniform' or 'gaussian'")


def model_dtype(model: GenerativeModel) -> torch.dtype:
    return next(model.parameters()).dtype


def build_path(model: GenerativeModel, dataset: Dataset | None, params: AISParams) -> Path:
    """Block Gibbs on the RBM path for capability ``gibbs``; HMC/MALA on the energy for capability ``energy``."""
    if model.has("gibbs"):
        W, b, c = cast(GibbsModel, model).ais_parameters()
        b_base = visible_logits(dataset.train) if dataset is not None else torch.zeros_like(b)
        return RBMPath(W, b, c, b_base)
    base = continuous_base(model, dataset, params)
    return EnergyPath(model.energy, model.support, base, params, model_dtype(model), model.device)


def reverse_start(model: GenerativeModel, path: Path, n: int, params: AISParams, generator: torch.Generator
                  ) -> tuple[Tensor, str, bool]:
    """Model samples to start reverse AIS from: (x, how they were drawn, approximate?).

    Exact where the model allows it (an RBM's ``exact_sample``, e.g. by enumerating its hidden units; a
    normalized density with a one-shot sampler, cut to the box by rejection), the grid draw in 2D, else
    long-run chains (approximate).
    """
    if isinstance(path, RBMPath):
        v = cast(GibbsModel, model).exact_sample(n, generator)
        if v is not None:
            return v, "exact: hidden units enumerated, then v ~ p(v | h)", False
        v = path.transition(path.sample_base(n, generator), 1.0, generator, params.start_steps)
        return v, f"{params.start_steps} block Gibbs sweeps from the base-rate RBM", True
    if model.has("log_prob") and model.has("generate"):
        return exact_by_rejection(model, n, generator), "exact: the model's sampler, cut to the box by rejection", False
    if model.support.dim == 2:
        x = likelihood.sample_grid(model.energy, model.support, n, generator, params.grid_cells,
                                   model_dtype(model), model.device)
        x = path.transition(x, 1.0, generator, params.start_steps)
        return x, (f"grid draw ({params.grid_cells}^2 cells, exact up to grid resolution), then "
                   f"{params.start_steps} {params.kernel} transitions at the model"), False
    x = path.transition(path.sample_base(n, generator), 1.0, generator, params.start_steps)
    return x, f"{params.start_steps} {params.kernel} transitions at the model from the base", True


def exact_by_rejection(model: GenerativeModel, n: int, generator: torch.Generator, max_rounds: int = 20) -> Tensor:
    """n exact draws of the model's density cut to its box: its one-shot sampler, keeping draws inside the box."""
    kept, have = [], 0
    for _ in range(max_rounds):
        with torch.no_grad():
            x = model.sample(n, generator=generator, sampler="generator").x
        x = x[model.support.contains(x)]
        kept.append(x)
        have += len(x)
        if have >= n:
            return torch.cat(kept)[:n]
    raise NotApplicable(f"only {have} of {n * max_rounds} model samples fell inside the support box")


def estimate_log_z(model: GenerativeModel, dataset: Dataset | None, params: AISParams | None = None,
                   reverse: bool = True) -> dict[str, AISResult]:
    """Forward (and reverse) AIS estimates of log Z of ``model`` on its support, chosen by capability."""
    params = params or AISParams()
    generator = torch.Generator(device=model.device).manual_seed(params.seed)
    path = build_path(model, dataset, params)
    if not reverse:
        return ais(path, params, generator)
    # the reverse direction draws from its own stream: the forward estimate is the same with or without it
    rev_gen = torch.Generator(device=model.device).manual_seed(params.seed + 1)
    cost0, start_time = _cost(path), time.perf_counter()
    x, start, approximate = reverse_start(model, path, params.runs * params.chains, params, rev_gen)
    start_cost = {"start_nfe_per_chain": _cost(path) - cost0, "start_wall_s": time.perf_counter() - start_time}
    results = ais(path, params, generator, x, start, approximate, reverse_generator=rev_gen)
    results["reverse"].info.update(start_cost)
    return results


# ---------------------------------------------------------------- a time-indexed energy: the model's own noise levels


class DiffusionPath:
    """f_0 = N(0, I) (the VP prior, x_T; N(0, sigma_max^2 I) in scaled coordinates), then exp(-E(x, t)) at the model's
    timesteps t_K > ... > t_1 = 0, the last cut to the support box (Du et al. 2023's energies; AIS, Neal 2001).

    Annealing "beta" k = 0..K indexes the distributions; each E(., t) has its own unknown normalizer, which AIS
    never needs. Transitions: ``mcmc_steps`` MALA steps on exp(-E(., t)) with eps = level_step sigma_t^2 +
    level_step_floor, on R^2 at every level but the last (the last distribution gets no transition).
    """

    def __init__(self, model: Any, params: AISParams) -> None:
        self.model, self.params = model, params
        T = len(model.make_ddpm_scheduler().alphas_cumprod)  # noqa: N806  (the paper's T)
        n = min(params.n_steps, T)
        self.timesteps = torch.linspace(T - 1, 0, n).round().long().unique_consecutive().tolist()
        self.betas = [float(k) for k in range(len(self.timesteps) + 1)]
        self.box, self.dim = model.support, model.support.dim
        self.log_z0 = 0.5 * self.dim * math.log(2 * math.pi)
        self.sigmas = sigma_table(model.make_ddpm_scheduler())  # sigma_t per timestep on the host: no read a level
        self.accepted: list[float] = []
        self.chains: list[MCMCStats] = []

    def sample_base(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn((n, *self.box.shape), generator=generator, device=generator.device).to(self.model.device)

    def _t(self, k: int, n: int) -> Tensor:
        return torch.full((n,), self.timesteps[k - 1], dtype=torch.long, device=self.model.device)

    def log_f(self, x: Tensor, k: int) -> Tensor:
        if k == 0:
            return -0.5 * x.double().flatten(1).pow(2).sum(dim=1)
        with torch.no_grad():
            out = -self.model.energy_t(x, self._t(k, len(x))).double()
        if k == len(self.timesteps):
            out = torch.where(self.box.contains(x), out, -math.inf)
        return out

    def delta_log_f(self, x: Tensor, beta_from: float, beta_to: float) -> Tensor:
        return self.log_f(x, round(beta_to)) - self.log_f(x, round(beta_from))

    def step(self, k: int) -> float:
        return self.params.level_step * self.sigmas[self.timesteps[k - 1]] ** 2 + self.params.level_step_floor

    def transition(self, x: Tensor, beta: float, generator: torch.Generator, steps: int) -> Tensor:
        k = round(beta)
        if k == 0:  # the base: exact draws need no chain
            return x

        def energy(y: Tensor) -> Tensor:
            return self.model.energy_t(y, self._t(k, len(y)))

        box = self.box if k == len(self.timesteps) else None
        x, stats = mala_chain(energy, x, steps=steps, eps=self.step(k), generator=generator, box=box, sync=False)
        self.chains.append(stats)
        return x


def diffusion_log_z(model: Any, params: AISParams, x_model: Tensor | None = None) -> dict[str, dict[str, Any]]:
    """log Z of exp(-E(x, 0)) on the box by AIS along the model's noise levels: forward from N(0, I) (stochastic
    lower bound), and reverse from ``x_model`` (stochastic upper bound when they are exact samples)."""
    path = DiffusionPath(model, params)
    out = {}
    starts = {"forward": None, "reverse": x_model}
    for direction, x0 in starts.items():
        if direction == "reverse" and x0 is None:
            continue
        generator = torch.Generator(device=model.device).manual_seed(params.seed + (direction == "reverse"))
        x = path.sample_base(params.runs * params.chains, generator) if x0 is None else x0
        betas = path.betas if direction == "forward" else path.betas[::-1]
        path.accepted.clear()
        calls0, t0 = model.net.forward_calls, time.perf_counter()
        log_w = anneal(path, x, betas, generator, params.mcmc_steps)
        settle_chains(path, "diffusion AIS transitions")
        out[direction] = {**summarize(log_w, path.log_z0, direction, params.runs),
                          "nfe_per_chain": model.net.forward_calls - calls0, "wall_s": time.perf_counter() - t0,
                          "levels": len(path.timesteps), "acceptance": (sum(path.accepted) / len(path.accepted)
                                                                        if path.accepted else None)}
    return out


def diffusion_nll_row(model: Any, dataset: Dataset, direction: str, params: AISParams | None = None,
                      max_points: int = 0) -> Measured:
    """Held-out NLL = mean E(x, 0) + log Z, log Z by AIS along the model's own noise levels; in 2D beside the same
    log Z by quadrature of exp(-E(x, 0)) on the box (the exact answer), with each estimator's cost."""
    params = params or AISParams()
    if direction == "reverse" and not params.reverse:
        raise NotApplicable("reverse AIS was not run (AISParams.reverse=False)")
    x_model, start = None, ""
    if direction == "reverse":
        if model.support.dim != 2:
            raise NotApplicable("reverse AIS along the noise levels starts from a grid draw, tractable in 2D only")
        g = torch.Generator(device=model.device).manual_seed(params.seed + 1)
        with torch.no_grad():
            x_model = likelihood.sample_grid(model.energy, model.support, params.runs * params.chains, g,
                                             params.grid_cells, model_dtype(model), model.device)
        start = f"grid draw ({params.grid_cells}^2 cells) of exp(-E(x, 0)) on the box"
    r = diffusion_log_z(model, params, x_model)[direction]
    x = likelihood.heldout_points(dataset, max_points).to(model.device)
    with torch.no_grad():
        nll = model.energy(x).double().cpu() + r["log_z"]
    value = float(nll.mean())
    stderr = math.sqrt(float(nll.var()) / len(nll) + (r["stderr"] if r["stderr"] == r["stderr"] else 0.0) ** 2)
    meta = {**kind_of(direction, False, False), "method": f"AIS (Neal 2001) along the model's {r['levels']} noise "
            f"levels, {direction}", "log_z": r["log_z"], "log_z_stderr": r["stderr"], "ess": r["ess"],
            "nfe_per_chain": r["nfe_per_chain"], "wall_s": r["wall_s"], "acceptance": r["acceptance"],
            "start": start or "N(0, I), the VP prior", "split": "test", "units": "nats per sample", "n": len(nll),
            "ais_params": asdict(params)}
    if model.support.dim == 2:
        t0 = time.perf_counter()
        with torch.no_grad():
            log_z, err, grid = likelihood.log_partition_refined(model.energy, model.support, tol=1e-4, n_start=64,
                                                                n_max=2048, device=model.device)
        meta.update(log_z_quadrature=log_z, quadrature_error=err, quadrature_grid=grid,
                    quadrature_evaluations=grid * grid + (grid // 2) ** 2, quadrature_wall_s=time.perf_counter() - t0,
                    ais_minus_quadrature=r["log_z"] - log_z)
    meta.update(likelihood.forward_kl_meta(dataset, likelihood.heldout_points(dataset, max_points), nll,
                                           meta["likelihood_kind"], r["stderr"] ** 2 if r["stderr"] == r["stderr"]
                                           else 0.0))
    return value, stderr, meta


# ---------------------------------------------------------------- the metrics

_CACHE: dict[tuple, dict[str, AISResult]] = {}


def cached_estimate(model: GenerativeModel, dataset: Dataset, params: AISParams) -> dict[str, AISResult]:
    """Both directions once per (model weights, dataset, params): the forward and reverse rows share them."""
    key = (tensors_hash(*model.state_dict().values()), dataset.content_hash, tuple(asdict(params).values()))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = estimate_log_z(model, dataset, params, reverse=params.reverse)
    return _CACHE[key]


def check_applicable(model: GenerativeModel, dataset: Dataset) -> None:
    """Binary data needs a binary model: the registry has checked capability 'energy' or 'gibbs'."""
    if dataset.levels == 2 and not model.has("gibbs"):
        raise NotApplicable("binary data: AIS here anneals binary models by block Gibbs (capability "
                                     "'gibbs'); a continuous density on the box is not a probability of 0/1 images")


def mean_energy(model: GenerativeModel, dataset: Dataset, params: AISParams, max_points: int = 0
                ) -> tuple[Tensor, dict[str, Any]]:
    """Per test image E(x) (+ the dequantization term for discrete levels) and the data convention."""
    x = likelihood.heldout_points(dataset, max_points).to(model.device)
    if model.has("gibbs"):
        with torch.no_grad():
            return model.energy(x.double()).double().cpu(), {"convention": "binary pmf", "data_term": "none"}
    width = likelihood.bin_width(dataset.levels, dataset.support)
    if not width:
        with torch.no_grad():
            return model.energy(x).double().cpu(), {"convention": "continuous density on the support box"}
    g = torch.Generator(device=model.device).manual_seed(params.seed + 1)
    y, log_vol = likelihood.dequantize_in_box(x, width, model.support, g)
    with torch.no_grad():
        e = model.energy(y).double().cpu() - log_vol.cpu()
    convention = (f"uniform dequantization over {dataset.levels} levels (bin width {width:.4g}), bins cut to the "
                  "box, one draw per image: E(y) + log Z - log|bin cap box| bounds the discrete NLL from above")
    return e, {"convention": convention, "bin_width": width}


def nll_row(model: GenerativeModel, dataset: Dataset, direction: str, params: AISParams | None = None,
            max_points: int = 0) -> Measured:
    """Held-out NLL = mean E(x) + log Z_hat with log Z from AIS in one direction; the bound's way is in meta.

    On the first ``max_points`` of the test split (0: all); with an exact data density (2D) the paired forward
    KL, whose standard error adds log Z_hat's variance over runs, is in meta too.
    """
    check_applicable(model, dataset)
    params = params or AISParams()
    if direction == "reverse" and not params.reverse:
        raise NotApplicable("reverse AIS was not run (AISParams.reverse=False)")
    results = cached_estimate(model, dataset, params)
    r = results[direction]
    e, meta = mean_energy(model, dataset, params, max_points)
    nll = e + r.log_z
    value = float(nll.mean())
    # var(mean E) over test images plus var(log Z_hat) over runs: independent sources
    stderr = math.sqrt(float(nll.var()) / len(nll) + r.stderr**2)
    meta.update(kind_of(direction, "bin_width" in meta, r.approximate_start))
    fwd, rev = results["forward"], results.get("reverse")
    meta.update(
        method=f"AIS (Neal 2001), {direction}", log_z=r.log_z, log_z_stderr=r.stderr, log_z_pooled=r.pooled,
        log_z_forward=fwd.log_z, log_z_reverse=rev.log_z if rev else None,
        gap=(rev.log_z - fwd.log_z) if rev else None, ess=r.ess, ess_fraction=r.ess / params.chains,
        nfe_per_chain=r.nfe, nfe_unit="one Gibbs sweep" if model.has("gibbs") else "one energy evaluation",
        wall_s=r.wall_s, acceptance=r.acceptance, start=r.start, approximate_start=r.approximate_start,
        split="test", units="nats per sample", n=len(nll), test_split_size=len(dataset.test),
        bits_per_dim=likelihood.bits_per_dim(value, model.support.dim),
        ais_params=asdict(params), **r.info,
    )
    x = likelihood.heldout_points(dataset, max_points)
    meta.update(likelihood.forward_kl_meta(dataset, x, nll, meta["likelihood_kind"], r.stderr**2))
    return value, stderr, meta


def kind_of(direction: str, dequantized: bool, approximate_start: bool) -> dict[str, str]:
    """Which way the row's NLL errs: a lower bound on log Z makes the NLL optimistic (too low)."""
    if direction == "reverse" and approximate_start:
        return {"likelihood_kind": "estimate", "bound_direction": (
            "reverse AIS from approximate (long-run chain) samples: an upper bound only if the chains mixed")}
    if direction == "forward":
        if dequantized:
            return {"likelihood_kind": "estimate", "bound_direction": (
                "neither: forward AIS underestimates log Z (NLL too low) while dequantization overestimates the "
                "discrete NLL")}
        return {"likelihood_kind": "lower bound", "bound_direction": (
            "forward AIS: E[log Z_hat] <= log Z, so this NLL is a stochastic LOWER bound (optimistic)")}
    return {"likelihood_kind": "upper bound", "bound_direction": (
        "reverse AIS: E[log Z_hat] >= log Z when started from exact samples, so this NLL is a stochastic UPPER "
        "bound (conservative); with approximate_start it is an estimate")}


def configure(cfg: Any) -> dict[str, Any]:
    """The run's AIS budget and test points; a run that skips the reverse row does not pay for reverse AIS's
    long start chains inside the forward row."""
    return {"params": AISParams(n_steps=cfg.ais_steps, runs=cfg.ais_runs, chains=cfg.ais_chains, seed=cfg.seed,
                                reverse=not cfg.skipped("nll_ais_reverse")), **likelihood.points_kwargs(cfg)}


def configure_diffusion(cfg: Any) -> dict[str, Any]:
    """As ``configure``, the reverse run decided by its own row (nll_ais_diffusion_reverse)."""
    out = configure(cfg)
    out["params"].reverse = not cfg.skipped("nll_ais_diffusion_reverse")
    return out


register(
    Metric("nll_ais_diffusion_forward", "model", partial(diffusion_nll_row, direction="forward"),
           "Neal 2001 AIS along the noise levels of an energy-parameterized diffusion model (Du et al. 2023)",
           configure_diffusion, requires="time_energy"),
    Metric("nll_ais_diffusion_reverse", "model", partial(diffusion_nll_row, direction="reverse"),
           "Grosse et al. 2015 BDMC along the noise levels of an energy-parameterized diffusion model",
           configure_diffusion, requires="time_energy"),
    Metric("nll_ais_forward", "model", partial(nll_row, direction="forward"),
           "Neal 2001, annealed importance sampling", configure, requires="energy | gibbs"),
    Metric("nll_ais_reverse", "model", partial(nll_row, direction="reverse"),
           "Grosse et al. 2015 BDMC; Burda et al. 2015 RAISE", configure, requires="energy | gibbs"),
)
