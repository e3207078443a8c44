"""Probability-flow ODE likelihood (Song et al. 2021, Sec. 4.3 and App. D.2) through the continuous-sigma score.

Any model with capability ``score`` exposes s(x, sigma) = grad log p_sigma(x) in the scaled (VE) coordinates
x = x0 + sigma z, and its noise process with [sigma_min, sigma_max]. In those coordinates the probability
flow is dx/dsigma = -sigma s(x, sigma) (Karras et al. 2022, eq. 4 with s = 1); it is integrated in
t = ln sigma, dx/dt = -sigma^2 s(x, sigma), so NCSN (VE) and DDPM (VP) are solved by the same code. Along it
d/dt log p_t(x_t) = -div(dx/dt) = sigma^2 div s, so with Delta = int_{t_min}^{t_max} sigma^2 div s dt

    log p_{sigma_min}(x) = log N(x(t_max); 0, sigma_max^2 I) - Delta

(the instantaneous change of variables, Chen et al. 2018). The divergence is exact in low dimension
(one backward pass per coordinate) and otherwise Hutchinson's estimator eps^T (ds/dx) eps with Rademacher
eps, one draw per data point held fixed over the solve (Grathwohl et al. 2019), which keeps log p unbiased.

The two ends. sigma_max: the prior is N(0, sigma_max^2 I) as in Song et al. 2021; it is exact only when
sigma_max is large against the data. Replacing the model's p_{sigma_max} by it adds to the NLL, in expectation,
b = KL(p_data * N(0, sigma_max^2 I) || N(0, sigma_max^2 I)), which the standard error does not contain. b is
bracketed in closed form (``prior_mismatch``): from below by the KL of the moment-matched Gaussian (the
Pythagorean identity of the moment projection), from above by E|x0|^2 / (2 sigma_max^2) (joint convexity of KL).
Rule: a continuous-data row with the exact trace is labelled ``exact`` only when that upper bound is at most
PRIOR_BIAS_TOL = 0.01 nats, i.e. sigma_max >= sqrt(50 E|x0|^2) (about 7 times the data's RMS norm); otherwise it
is an ``estimate``, with the bracket and the reason in meta (NCSN at sigma_max = 3 on eight_gaussians: about
0.02 to 0.23 nats). sigma_min: the solve
starts at the data with sigma = sigma_min, i.e. the model is taken to be the sigma_min-perturbed density
p_{sigma_min} = p_data * N(0, sigma_min^2 I) evaluated at the clean data (as Song et al. 2021 starting at
t = eps, and EDM's sigma_min), with no extra decoder term.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torchdiffeq import odeint

from ebmbench.data.base import Dataset
from ebmbench.metrics import likelihood
from ebmbench.metrics.base import Measured, Metric, register
from ebmbench.protocol import GenerativeModel, ScoreModel

ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")  # torchdiffeq's adaptive RK solvers
FIRST_STEP = 1e-3  # first step of the solve, as a fraction of ln(sigma_max / sigma_min)
PRIOR_BIAS_TOL = 0.01  # nats: the most the N(0, sigma_max^2 I) prior may add (upper bound) to a row labelled exact
PRIOR_MOMENT_POINTS = 2000  # training points whose moments bracket the prior's bias


@dataclass
class PFODEParams:
    """Settings of the probability-flow ODE likelihood (Song et al. 2021)."""

    method: str = "dopri5"  # adaptive torchdiffeq solver: dopri5 (Dormand-Prince 5(4), Song et al.'s RK45) | ...
    rtol: float = 1e-5  # relative tolerance of the adaptive solver (Song et al. 2021: 1e-5)
    atol: float = 1e-5  # absolute tolerance of the adaptive solver (Song et al. 2021: 1e-5)
    exact_trace_max_dim: int = 2  # exact divergence up to this many dimensions, Hutchinson above
    n_probes: int = 1  # independent Hutchinson draws per data point (each a separate solve)
    batch_size: int = 512  # data points solved together (the solver's steps are shared by a batch)
    max_points: int = 0  # test points evaluated (0: the whole test split)
    seed: int = 0  # seeds the probes and the dequantization noise


@dataclass
class FlowSolve:
    """log p_{sigma_min}(x) per point from one solve, and what the solve cost."""

    log_p: Tensor  # (B,) float64
    nfe: int  # ODE right-hand-side evaluations, one score evaluation each
    net_calls: int  # network calls counted by the model's CountingNet during the solve
    wall_s: float


def divergence_exact(s: Tensor, x: Tensor) -> Tensor:
    """sum_i ds_i/dx_i by one backward pass per coordinate (exact)."""
    flat = s.flatten(1)
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(flat.shape[1]):
        (g,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
        div = div + g.flatten(1)[:, i]
    return div


def divergence_hutchinson(s: Tensor, x: Tensor, probe: Tensor) -> Tensor:
    """eps^T (ds/dx) eps, E over Rademacher eps = the divergence (Hutchinson 1989); one vector-Jacobian product."""
    (vjp,) = torch.autograd.grad(s, x, probe)
    return (vjp * probe).flatten(1).sum(dim=1)


class ProbabilityFlow:
    """Right-hand side of (x, Delta) in t = ln sigma: (-sigma^2 s, sigma^2 div s); counts its calls."""

    def __init__(self, model: ScoreModel, probe: Tensor | None, dtype: torch.dtype) -> None:
        self.model, self.probe, self.dtype, self.calls = model, probe, dtype, 0

    def __call__(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        self.calls += 1
        x, delta = state  # torchdiffeq concatenates the state, so x arrives in delta's float64
        sigma = t.exp()  # a 0-d tensor on the solver's device: float(t.exp()) was a host read per evaluation
        with torch.enable_grad():
            x = x.detach().to(self.dtype).requires_grad_(True)
            s = self.model.score(x, sigma)
            div = divergence_exact(s, x) if self.probe is None else divergence_hutchinson(s, x, self.probe)
        return (-(sigma**2) * s).detach().to(delta.dtype), (sigma**2 * div).detach().to(delta.dtype)


def gaussian_log_prob(x: Tensor, std: float) -> Tensor:
    """log N(x; 0, std^2 I) per sample, in float64."""
    flat = x.double().flatten(1)
    d = flat.shape[1]
    return -0.5 * flat.pow(2).sum(dim=1) / std**2 - d * math.log(std) - 0.5 * d * math.log(2 * math.pi)


def rademacher(x: Tensor, generator: torch.Generator) -> Tensor:
    signs = torch.randint(0, 2, x.shape, generator=generator, device=generator.device).to(device=x.device)
    return (2 * signs - 1).to(x.dtype)


def solve_log_prob(model: GenerativeModel, x: Tensor, params: PFODEParams, generator: torch.Generator) -> FlowSolve:
    """log p_{sigma_min}(x) of the model's probability flow: one solve from sigma_min to sigma_max."""
    if params.method not in ADAPTIVE:
        raise ValueError(f"method {params.method!r}: choose an adaptive torchdiffeq solver, one of {ADAPTIVE}")
    process = model.noise_process
    exact = x[0].numel() <= params.exact_trace_max_dim
    flow = ProbabilityFlow(model, None if exact else rademacher(x, generator), x.dtype)
    t = torch.tensor([math.log(process.sigma_min), math.log(process.sigma_max)], dtype=torch.float64)
    delta0 = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    calls0 = model.net.forward_calls
    start = time.perf_counter()
    # the adaptive steps must not leave [sigma_min, sigma_max], where the score is undefined: a small first
    # step (the default probe step may overshoot) and t_max as a step the solver must land on, not pass
    options = {"first_step": FIRST_STEP * float(t[1] - t[0]), "step_t": t[1:]}
    with torch.no_grad():
        xs, deltas = odeint(flow, (x.double(), delta0), t.to(x.device), rtol=params.rtol, atol=params.atol,
                            method=params.method, options=options)
    wall = time.perf_counter() - start
    log_p = gaussian_log_prob(xs[-1], process.sigma_max) - deltas[-1]
    return FlowSolve(log_p.cpu(), flow.calls, model.net.forward_calls - calls0, wall)


def log_prob_batches(model: GenerativeModel, x: Tensor, params: PFODEParams, generator: torch.Generator
                     ) -> tuple[Tensor, dict[str, Any]]:
    """(n_probes, N) log p over batches of ``batch_size``, with the summed NFE, net calls and wall clock."""
    rows, nfe, calls, wall = [], 0, 0, 0.0
    for _ in range(params.n_probes):
        parts = []
        for lo in range(0, len(x), params.batch_size):
            r = solve_log_prob(model, x[lo:lo + params.batch_size], params, generator)
            parts.append(r.log_p)
            nfe, calls, wall = nfe + r.nfe, calls + r.net_calls, wall + r.wall_s
        rows.append(torch.cat(parts))
    n_solves = params.n_probes * math.ceil(len(x) / params.batch_size)
    cost = {"nfe_per_solve": nfe / n_solves, "nfe_total": nfe, "net_calls_total": calls, "solves": n_solves,
            "wall_s": wall}
    return torch.stack(rows), cost


def prior_mismatch(x0: Tensor, sigma_max: float) -> tuple[float, float]:
    """Bounds (lower, upper) on KL(p_data * N(0, s^2 I) || N(0, s^2 I)), the prior's bias (Song et al. 2021, App. D).

    Lower: KL(N(m, C + s^2 I) || N(0, s^2 I)) with the data's mean m and covariance C (moment projection onto
    Gaussians, Pythagorean identity); upper: E|x0|^2 / (2 s^2), the mean KL of the components N(x0, s^2 I).
    """
    flat = x0.detach().double().cpu().flatten(1)
    mean, s2 = flat.mean(dim=0), sigma_max**2
    ratio = torch.linalg.svdvals(flat - mean).pow(2) / (len(flat) * s2)  # eigenvalues of C / s^2 (1/N moments)
    lower = 0.5 * float((ratio - torch.log1p(ratio)).sum() + mean.pow(2).sum() / s2)
    upper = float(flat.pow(2).sum(dim=1).mean()) / (2 * s2)
    return lower, upper


def continuous_kind(exact_trace: bool, prior_upper: float) -> dict[str, str]:
    """likelihood_kind of a continuous-data row: exact only with the exact trace and a negligible prior bias."""
    if not exact_trace:
        return {"likelihood_kind": "estimate", "note": "unbiased Hutchinson estimate of the flow's log-density"}
    if prior_upper > PRIOR_BIAS_TOL:
        return {"likelihood_kind": "estimate", "estimate_reason": (
            f"the N(0, sigma_max^2 I) prior may add up to {prior_upper:.3g} nats (prior_bias_nats), above the "
            f"{PRIOR_BIAS_TOL} nats an exact label allows: sigma_max is too small against the data; the stderr "
            "does not include this bias")}
    return {"likelihood_kind": "exact", "note": "exact up to the ODE tolerance; the prior's bias is at most "
            f"{prior_upper:.3g} nats (prior_bias_nats)"}


def nll_summary(nll: Tensor) -> tuple[float, float, float | None]:
    """Mean over points and probes; standard error over points (probe noise included); SE over probe draws."""
    per_point = nll.mean(dim=0)
    value, stderr = float(per_point.mean()), float(per_point.std() / math.sqrt(per_point.numel()))
    probe_means = nll.mean(dim=1)
    probe_se = float(probe_means.std() / math.sqrt(len(probe_means))) if len(probe_means) > 1 else None
    return value, stderr, probe_se


def model_metric_pf_ode(model: GenerativeModel, dataset: Dataset, params: PFODEParams | None = None
                        ) -> Measured:
    """Held-out NLL by the probability-flow ODE (Song et al. 2021); bits/dim with dequantization for discrete data.

    ``model`` has capability ``score`` (``ebmbench.protocol.ScoreModel``); the registry checks it."""
    params = params or PFODEParams()
    generator = torch.Generator(device=model.device).manual_seed(params.seed)
    x = likelihood.heldout_points(dataset, params.max_points).to(model.device, next(model.parameters()).dtype)
    width = likelihood.bin_width(dataset.levels, dataset.support)
    y = likelihood.dequantize(x, width, generator) if width else x
    log_p, cost = log_prob_batches(model, y, params, generator)
    dim = x[0].numel()
    nll = -log_p - (dim * math.log(width) if width else 0.0)
    value, stderr, probe_se = nll_summary(nll)
    exact = dim <= params.exact_trace_max_dim
    process = model.noise_process
    prior_bias = prior_mismatch(dataset.train[:PRIOR_MOMENT_POINTS], process.sigma_max)
    meta: dict[str, Any] = {
        "method": "probability-flow ODE (Song et al. 2021), torchdiffeq", **cost,
        "nfe_per_point": cost["nfe_total"] / (cost["solves"] / params.n_probes),
        "trace": "exact (one backward pass per dimension)" if exact else "Hutchinson, Rademacher probes",
        "probe_stderr": 0.0 if exact else probe_se, "noise_process": process.describe(),
        "prior": "N(0, sigma_max^2 I)", "sigma_max_over_data_std": process.sigma_max / float(dataset.train.std()),
        "prior_bias_nats": list(prior_bias), "prior_bias_tol": PRIOR_BIAS_TOL, "prior_bias_definition": (
            "[lower, upper] bounds on KL(p_data * N(0, sigma_max^2 I) || N(0, sigma_max^2 I)), the NLL's expected "
            "excess from the Gaussian prior: moment-matched Gaussian KL, E|x0|^2 / (2 sigma_max^2); training split"),
        "sigma_min_end": "model = p_{sigma_min} (data convolved with N(0, sigma_min^2 I)) at the clean data",
        "split": "test", "units": "nats per sample", "n": len(x), "test_split_size": len(dataset.test),
        "pf_ode_params": asdict(params), "bits_per_dim": likelihood.bits_per_dim(value, dim),
    }
    if width:
        meta.update(likelihood_kind="upper bound", bin_width=width, convention=(
            f"uniform dequantization over {dataset.levels} levels, one draw per image: -log p(y) - D log(bin width) "
            "bounds the discrete NLL from above (as nll_exact)"))
    else:
        meta.update(convention="continuous density", **continuous_kind(exact, prior_bias[1]))
        meta.update(likelihood.forward_kl_meta(dataset, x, nll.mean(dim=0), meta["likelihood_kind"]))
    return value, stderr, meta


def configure(cfg: Any) -> dict[str, Any]:
    """The run's test points, seed and solver tolerance (``pf_ode_tol`` as both rtol and atol)."""
    tol = cfg.pf_ode_tol
    return {"params": PFODEParams(max_points=cfg.likelihood_points, seed=cfg.seed, rtol=tol, atol=tol)}


register(Metric("nll_pf_ode", "model", model_metric_pf_ode, "Song et al. 2021, probability-flow ODE", configure,
                requires="score"))
