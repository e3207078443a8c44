"""Annealed importance sampling (Neal 2001) and SMC samplers (Del Moral, Doucet & Jasra 2006) for log Z of exp(-E).

Path: geometric, gamma_beta(x) = pi_0(x)^(1 - beta) exp(-beta E(x)), pi_0 = N(0, s^2 I) (normalized, Z_0 = 1), on
0 = beta_0 < beta_1 < ... < beta_K = 1 (linear, as Arbel et al. 2021's AFT/SMC). For k = 1..K: reweight by
(beta_k - beta_{k-1}) (E_0(x) - E(x)); SMC resamples (systematic, Carpenter et al. 1999) when the normalized ESS of
the weights falls below ``ess_threshold``; then ``mcmc_steps`` transitions of a kernel invariant for gamma_{beta_k}
(ULA: unadjusted, so biased; MALA, Roberts & Tweedie 1996; HMC with L leapfrog steps, Neal 2011). log Z_hat sums the
log mean incremental weights between resamplings; E[Z_hat] = Z for exact kernels, in either mode (AIS: never
resample).

Every replicate (R independent runs of N particles) runs in one batch [R, N, d] with its own weights, resampling
decisions and step size. Step sizes: a schedule h(beta) interpolated linearly between (step_times, step_sizes), as
AFT's ``hmc_step_config``, times a per-replicate multiplier m adapted between temperatures towards
``target_accept`` (log m += adapt_rate (acceptance - target), the rule of ``samplers/corrected.py``) when
``adapt_rate`` > 0; within a temperature the kernel is fixed, so each move leaves gamma_{beta_k} invariant.

Cost: E and grad E are evaluated once per new point and kept (grad U_beta = (1 - beta) grad E_0 + beta grad E, E_0
analytic), so ``grad_evals`` per particle = 1 + K * mcmc_steps * (1 for ULA/MALA, L for HMC). Written by hand: the
SMC libraries of the field (blackjax, particles) are JAX/NumPy; this batches replicates in torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

Energy = Callable[[Tensor], Tensor]
EnergyGrad = Callable[[Tensor], tuple[Tensor, Tensor]]
KERNELS = ("ula", "mala", "hmc")


@dataclass
class SMCParams:
    """Settings of one AIS/SMC estimate (Del Moral et al. 2006; Arbel et al. 2021's funnel: 2000 particles,
    threshold 0.3, one HMC step of 10 leapfrog steps per temperature)."""

    n_steps: int = 128  # K temperatures after beta_0 = 0
    particles: int = 2000  # N per replicate
    replicates: int = 30  # R independent estimates (the seeds of the published tables)
    kernel: str = "hmc"  # ula | mala | hmc
    resample: bool = True  # SMC; False: AIS (never resample)
    ess_threshold: float = 0.3  # resample when ESS / N < threshold
    init_scale: float = 1.0  # pi_0 = N(0, s^2 I)
    step_times: tuple[float, ...] = (0.0, 1.0)  # beta at which step_sizes are given
    step_sizes: tuple[float, ...] = (0.1, 0.1)  # HMC h, or MALA/ULA eps, at step_times (linear between)
    leapfrog_steps: int = 10
    mcmc_steps: int = 1  # kernel transitions per temperature
    target_accept: float = 0.65
    adapt_rate: float = 0.0  # 0: the schedule as given (fixed)
    seed: int = 0

    def check(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel {self.kernel!r}: choose one of {KERNELS}")
        if self.n_steps < 1 or self.particles < 2 or self.replicates < 1 or self.leapfrog_steps < 1:
            raise ValueError(f"n_steps={self.n_steps}, particles={self.particles}, replicates={self.replicates}, "
                             f"leapfrog_steps={self.leapfrog_steps}: need >= 1, >= 2, >= 1, >= 1")
        if len(self.step_times) != len(self.step_sizes) or not all(h > 0 for h in self.step_sizes):
            raise ValueError(f"step_times {self.step_times} and step_sizes {self.step_sizes}: equal lengths, sizes > 0")
        if not 0.0 <= self.ess_threshold <= 1.0:
            raise ValueError(f"ess_threshold={self.ess_threshold}: a fraction of N in [0, 1]")


@dataclass
class SMCResult:
    """R estimates of log Z with what they cost, and the final particles with their normalized log weights."""

    log_z: Tensor  # [R]
    x: Tensor  # [R, N, d] final particles
    log_weights: Tensor  # [R, N], normalized (logsumexp = 0)
    ess: Tensor  # [R], normalized ESS of the final weights
    min_ess: Tensor  # [R], the smallest normalized ESS met after any reweighting
    resamplings: Tensor  # [R], number of resampling events
    acceptance: Tensor | None  # [R] mean acceptance (None for ULA)
    grad_evals: int  # per particle: evaluations of (E, grad E)
    step_multiplier: Tensor  # [R] final m
    info: dict[str, Any] = field(default_factory=dict)


def step_schedule(params: SMCParams, beta: float) -> float:
    """h(beta), linear between the given points (AFT's ``jnp.interp(beta, step_times, step_sizes)``)."""
    return float(np.interp(beta, params.step_times, params.step_sizes))


def systematic_resample(log_w: Tensor, generator: torch.Generator) -> Tensor:
    """Indices [R, N] by systematic resampling (Carpenter et al. 1999) of each row's normalized weights."""
    r, n = log_w.shape
    cdf = torch.cumsum(torch.softmax(log_w, dim=1), dim=1)
    cdf[:, -1] = 1.0
    u = torch.rand((r, 1), generator=generator, dtype=cdf.dtype, device=cdf.device)
    positions = (u + torch.arange(n, dtype=cdf.dtype, device=cdf.device)) / n
    return torch.searchsorted(cdf, positions).clamp_max(n - 1)


def normalized_ess(log_w: Tensor) -> Tensor:
    """(sum w)^2 / (N sum w^2) per row (Kong 1992)."""
    return (2 * torch.logsumexp(log_w, -1) - torch.logsumexp(2 * log_w, -1)).exp() / log_w.shape[-1]


class CountedEnergy:
    """E and grad E in one call, counted per call (each call evaluates every particle once); ``energy_and_grad``
    (closed form) when given, else autograd of ``energy``."""

    def __init__(self, energy: Energy, energy_and_grad: EnergyGrad | None = None) -> None:
        self.energy, self.energy_and_grad, self.calls = energy, energy_and_grad, 0

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        if self.energy_and_grad is not None:
            e, g = self.energy_and_grad(x)
            return e.detach(), g.detach()
        with torch.enable_grad():
            y = x.detach().requires_grad_(True)
            e = self.energy(y)
            (g,) = torch.autograd.grad(e.sum(), y)
        return e.detach(), g.detach()


@dataclass
class State:
    """Particles with their target energy E and its gradient (kept, never recomputed)."""

    x: Tensor
    e: Tensor
    g: Tensor

    def select(self, keep: Tensor, other: State) -> State:
        m = keep[..., None]
        return State(torch.where(m, self.x, other.x), torch.where(keep, self.e, other.e),
                     torch.where(m, self.g, other.g))

    def gather(self, idx: Tensor) -> State:
        i = idx[..., None].expand(-1, -1, self.x.shape[-1])
        return State(self.x.gather(1, i), self.e.gather(1, idx), self.g.gather(1, i))


def base_energy(x: Tensor, s: float) -> tuple[Tensor, Tensor]:
    """E_0 = |x|^2 / (2 s^2) + d/2 log(2 pi s^2) (pi_0 = N(0, s^2 I), normalized) and its gradient."""
    d = x.shape[-1]
    return 0.5 * (x**2).sum(-1) / s**2 + 0.5 * d * math.log(2 * math.pi * s**2), x / s**2


def potential(st: State, beta: float, s: float) -> tuple[Tensor, Tensor]:
    """U_beta = (1 - beta) E_0 + beta E and its gradient, from the kept E and grad E."""
    e0, g0 = base_energy(st.x, s)
    return (1 - beta) * e0 + beta * st.e, (1 - beta) * g0 + beta * st.g


def _mh(log_alpha: Tensor, generator: torch.Generator) -> Tensor:
    u = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype, device=log_alpha.device)
    return torch.log(u) < log_alpha  # NaN log alpha (a diverged proposal) is rejected


def ula_move(st: State, f: CountedEnergy, beta: float, s: float, h: Tensor, gen: torch.Generator) -> State:
    """x' = x - h grad U + sqrt(2 h) xi (no correction: invariant only as h -> 0)."""
    _, gu = potential(st, beta, s)
    xi = torch.randn(st.x.shape, generator=gen, dtype=st.x.dtype, device=st.x.device)
    y = st.x - h * gu + (2 * h).sqrt() * xi
    return State(y, *f(y))


def mala_move(st: State, f: CountedEnergy, beta: float, s: float, h: Tensor, gen: torch.Generator
              ) -> tuple[State, Tensor]:
    """One MALA step on U_beta (Roberts & Tweedie 1996); returns the state and per-particle acceptance."""
    u_x, gu_x = potential(st, beta, s)
    xi = torch.randn(st.x.shape, generator=gen, dtype=st.x.dtype, device=st.x.device)
    y = st.x - h * gu_x + (2 * h).sqrt() * xi
    prop = State(y, *f(y))
    u_y, gu_y = potential(prop, beta, s)
    # log q(x|y) - log q(y|x), q(b|a) = N(b; a - h grad U(a), 2h I)
    back = ((st.x - prop.x + h * gu_y) ** 2).sum(-1) / (4 * h[..., 0])
    log_q = -back + 0.5 * (xi**2).sum(-1)
    accept = _mh(u_x - u_y + log_q, gen)
    return prop.select(accept, st), accept


def hmc_move(st: State, f: CountedEnergy, beta: float, s: float, h: Tensor, steps: int, gen: torch.Generator
             ) -> tuple[State, Tensor]:
    """One HMC iteration of ``steps`` leapfrog steps of size h on U_beta, unit mass (Neal 2011)."""
    u_x, gu = potential(st, beta, s)
    p0 = torch.randn(st.x.shape, generator=gen, dtype=st.x.dtype, device=st.x.device)
    p, y = p0 - 0.5 * h * gu, st
    for i in range(steps):
        x_new = y.x + h * p
        y = State(x_new, *f(x_new))
        _, gu = potential(y, beta, s)
        p = p - (0.5 if i == steps - 1 else 1.0) * h * gu
    u_y, _ = potential(y, beta, s)
    accept = _mh(u_x - u_y + 0.5 * ((p0**2).sum(-1) - (p**2).sum(-1)), gen)
    return y.select(accept, st), accept


def smc(energy: Energy, dim: int, params: SMCParams, dtype: torch.dtype = torch.float64,
        energy_and_grad: EnergyGrad | None = None) -> SMCResult:
    """log Z of exp(-E) on R^dim by SMC (``params.resample``) or AIS, R replicates at once (module docstring)."""
    params.check()
    gen = torch.Generator().manual_seed(params.seed)
    r, n, s = params.replicates, params.particles, params.init_scale
    f = CountedEnergy(energy, energy_and_grad)
    x = s * torch.randn((r, n, dim), generator=gen, dtype=dtype)
    st = State(x, *f(x))
    log_w = torch.full((r, n), -math.log(n), dtype=dtype)
    log_z = torch.zeros(r, dtype=dtype)
    log_m = torch.zeros(r, dtype=dtype)
    betas = torch.linspace(0.0, 1.0, params.n_steps + 1, dtype=torch.float64).tolist()
    resamplings = torch.zeros(r, dtype=torch.long)
    min_ess = torch.ones(r, dtype=dtype)
    acc_sum, acc_n = torch.zeros(r, dtype=dtype), 0
    for k in range(1, len(betas)):
        b0, b1 = betas[k - 1], betas[k]
        e0, _ = base_energy(st.x, s)
        log_w = log_w + (b1 - b0) * (e0 - st.e)
        norm = torch.logsumexp(log_w, -1)
        log_z, log_w = log_z + norm, log_w - norm[:, None]
        ess = normalized_ess(log_w)
        min_ess = torch.minimum(min_ess, ess)
        if params.resample:  # every replicate draws its indices; those above the threshold keep their particles
            low = ess < params.ess_threshold  # (no host read per temperature: the decision stays on the device)
            idx = torch.where(low[:, None], systematic_resample(log_w, gen), torch.arange(n).expand(r, n))
            st = st.gather(idx)
            log_w = torch.where(low[:, None], torch.full_like(log_w, -math.log(n)), log_w)
            resamplings += low.long()
        h = (step_schedule(params, b1) * log_m.exp())[:, None, None]
        for _ in range(params.mcmc_steps):
            if params.kernel == "ula":
                st = ula_move(st, f, b1, s, h, gen)
                continue
            if params.kernel == "mala":
                st, accept = mala_move(st, f, b1, s, h, gen)
            else:
                st, accept = hmc_move(st, f, b1, s, h, params.leapfrog_steps, gen)
            rate = accept.to(dtype).mean(-1)
            acc_sum, acc_n = acc_sum + rate, acc_n + 1
            if params.adapt_rate > 0:
                log_m = log_m + params.adapt_rate * (rate - params.target_accept)
    finite = torch.isfinite(log_z)
    return SMCResult(log_z=log_z, x=st.x, log_weights=log_w, ess=normalized_ess(log_w), min_ess=min_ess,
                     resamplings=resamplings, acceptance=acc_sum / acc_n if acc_n else None, grad_evals=f.calls,
                     step_multiplier=log_m.exp(), info={"finite_replicates": int(finite.sum()), "betas": "linear"})


def resample_final(result: SMCResult, generator: torch.Generator) -> Tensor:
    """Unweighted particles [R, N, d]: the final particles resampled by their weights (systematic)."""
    idx = systematic_resample(result.log_weights, generator)
    return result.x.gather(1, idx[..., None].expand(-1, -1, result.x.shape[-1]))


__all__ = ["KERNELS", "SMCParams", "SMCResult", "normalized_ess", "resample_final", "smc", "systematic_resample"]
