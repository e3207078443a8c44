"""EBM objectives beyond PCD: short-run MCMC, CD-k, denoising and sliced score matching, NCE.

Each objective trains the same kind of model, an energy exp(-E(x))/Z on the dataset's support
box, and is registered as its own method (family "ebm"). None of them keeps persistent chains:
the model is built with a one-entry replay buffer that is never filled and does not declare the
``replay_buffer`` capability, so evaluation draws fresh Langevin chains only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.mathutil import log_ndtr_diff
from ebmbench.methods.base import METHODS, MethodSpec
from ebmbench.methods.ebm import (
    EnergyModel,
    EnergyNetParams,
    build_energy_net,
    contrastive_loss,
    energy_eval_samplers,
)
from ebmbench.params import param
from ebmbench.protocol import Box
from ebmbench.samplers.compiled import grad_fn
from ebmbench.samplers.langevin import ula_chain


@dataclass
class ShortRunParams(EnergyNetParams):
    """Short-run non-persistent MCMC EBM (Nijkamp et al. 2019); Langevin noise is sqrt(2 * eps * T)."""

    langevin_steps: int = param(20, "K ULA steps from uniform noise, in training AND at evaluation", range=">= 1")
    l2_weight: float = param(
        0.1, "alpha in alpha * (E(x+)^2 + E(x-)^2); 0 is Nijkamp et al.'s plain loss", range=">= 0")

    @property
    def sample_steps(self) -> int:
        """The model is defined by its K-step short-run sampler, so evaluation runs the same K."""
        return self.langevin_steps
    # the study's random-search ranges (issue 15, ebmbench/study.py): name -> (scale, low, high) | ("choice", ...)
    search_space: ClassVar[dict[str, tuple]] = {
        "lr": ("log", 1e-4, 3e-3), "langevin_eps": ("log", 1e-3, 3e-2), "spectral_norm": ("choice", False, True),
        "langevin_steps": ("int_log", 5, 40), "langevin_T": ("log", 0.3, 1.0), "l2_weight": ("log", 1e-3, 0.3)}


@dataclass
class CDkParams(EnergyNetParams):
    """Contrastive divergence CD-k (Hinton 2002); Langevin noise is sqrt(2 * eps * T)."""

    langevin_steps: int = param(20, "k ULA steps started at the data batch", range=">= 1")
    l2_weight: float = param(0.1, "alpha in alpha * (E(x+)^2 + E(x-)^2)", range=">= 0")
    sample_steps: int = param(
        200, "K of the fresh chains from uniform noise that sample() runs at evaluation", range=">= 1")
    # the study's random-search ranges (issue 15, ebmbench/study.py): name -> (scale, low, high) | ("choice", ...)
    search_space: ClassVar[dict[str, tuple]] = {
        "lr": ("log", 1e-4, 3e-3), "langevin_eps": ("log", 1e-3, 3e-2), "spectral_norm": ("choice", False, True),
        "langevin_steps": ("int_log", 5, 40), "langevin_T": ("log", 0.3, 1.0), "l2_weight": ("log", 1e-3, 0.3)}


@dataclass
class DSMParams(EnergyNetParams):
    """Denoising score matching on s_theta = -grad E (Vincent 2011); evaluation by Langevin."""

    sigma: float = param(0.1, "noise level: x~ = x + sigma * eps; exp(-E) then fits the sigma-noised data", range="> 0")
    sample_steps: int = param(
        200, "K of the fresh chains from uniform noise that sample() runs at evaluation", range=">= 1")
    # the study's random-search ranges (issue 15, ebmbench/study.py): name -> (scale, low, high) | ("choice", ...)
    search_space: ClassVar[dict[str, tuple]] = {
        "lr": ("log", 1e-4, 3e-3), "langevin_eps": ("log", 1e-3, 3e-2), "spectral_norm": ("choice", False, True),
        "sigma": ("log", 0.02, 0.5)}


@dataclass
class SSMParams(EnergyNetParams):
    """Sliced score matching on s_theta = -grad E (Song et al. 2019); evaluation by Langevin."""

    projection: str = param(
        "rademacher", "distribution of the slices v: rademacher | gaussian", choices=("rademacher", "gaussian"))
    n_projections: int = param(1, "slices v per data point", range=">= 1")
    variance_reduction: bool = param(True, "SSM-VR: 0.5 |s|^2 in place of 0.5 (v^T s)^2 (needs E[v v^T] = I)")
    sample_steps: int = param(
        200, "K of the fresh chains from uniform noise that sample() runs at evaluation", range=">= 1")
    # the study's random-search ranges (issue 15, ebmbench/study.py): name -> (scale, low, high) | ("choice", ...)
    search_space: ClassVar[dict[str, tuple]] = {
        "lr": ("log", 1e-4, 3e-3), "langevin_eps": ("log", 1e-3, 3e-2), "spectral_norm": ("choice", False, True),
        "n_projections": ("int", 1, 4), "variance_reduction": ("choice", True, False)}


@dataclass
class NCEParams(EnergyNetParams):
    """Noise-contrastive estimation with a learned log-normalizer c (Gutmann & Hyvarinen 2010)."""

    noise: str = param(
        "gaussian", "q: gaussian (batch mean and per-coordinate std, truncated to the box) | uniform",
        choices=("gaussian", "uniform"))
    noise_ratio: int = param(
        4, "nu, noise samples per data sample (larger: closer to maximum likelihood)", range=">= 1")
    noise_min_std: float = param(
        0.05, "floor of the fitted per-coordinate std (constant pixels have std 0)", range="> 0")
    sample_steps: int = param(
        200, "K of the fresh chains from uniform noise that sample() runs at evaluation", range=">= 1")
    # the study's random-search ranges (issue 15, ebmbench/study.py): name -> (scale, low, high) | ("choice", ...)
    search_space: ClassVar[dict[str, tuple]] = {
        "lr": ("log", 1e-4, 3e-3), "langevin_eps": ("log", 1e-3, 3e-2), "spectral_norm": ("choice", False, True),
        "noise_ratio": ("int_log", 1, 16), "noise": ("choice", "gaussian", "uniform")}


class NCEEBM(EnergyModel):
    """An EBM with a learned log-normalizer c: log p_theta(x) = -E(x) - c (Gutmann & Hyvarinen 2010)."""

    def __init__(self, net: nn.Module, support: Box, params: NCEParams) -> None:
        super().__init__(net, support, params)
        # c starts at the log-volume of the box: exp(-E) with E near 0 is then close to uniform
        self.log_z = nn.Parameter(torch.tensor(float(support.log_volume)))

    @property
    def learned_log_z(self) -> float:
        """c, NCE's estimate of log Z = log of the box integral of exp(-E)."""
        return float(self.log_z.detach())


def build_energy_model(dataset: Dataset, params: Any) -> EnergyModel:
    return EnergyModel(build_energy_net(dataset, params), dataset.support, params)


def build_nce_model(dataset: Dataset, params: NCEParams) -> NCEEBM:
    return NCEEBM(build_energy_net(dataset, params), dataset.support, params)


def short_run_eval(params: ShortRunParams) -> list[tuple[str, dict[str, Any]]]:
    """Fresh chains of the training K: the model is defined by its short-run sampler (Nijkamp et al. 2019)."""
    return energy_eval_samplers(params)


# ---------------------------------------------------------------- MCMC-trained objectives


def run_chains(model: EnergyModel, x0: Tensor, generator: torch.Generator, params: ShortRunParams | CDkParams
               ) -> tuple[Tensor, Tensor]:
    """K ULA steps from ``x0`` (parameter gradients untouched; the returned chains are detached), and the
    chain's finiteness probe (0, or NaN after a NaN/inf energy), which the training guard reads."""
    x, stats = ula_chain(model.energy, x0, steps=params.langevin_steps, eps=params.langevin_eps,
                         temperature=params.langevin_T, generator=generator, box=model.support,
                         support_mode=params.support_mode, grad_clip=params.langevin_grad_clip, grad=grad_fn(model))
    return x, stats["probe"]


def chain_contrastive_loss(model: EnergyModel, x_pos: Tensor, x0: Tensor, generator: torch.Generator,
                           params: ShortRunParams | CDkParams) -> tuple[Tensor, dict[str, Tensor]]:
    """The contrastive loss on negatives from K ULA steps started at ``x0``, with the chain's probe."""
    x_neg, probe = run_chains(model, x0, generator, params)
    loss, diag = contrastive_loss(model, x_pos, x_neg, params.l2_weight)
    return loss, {**diag, "chain_probe": probe}


def short_run_loss(model: EnergyModel, x_pos: Tensor, generator: torch.Generator, params: ShortRunParams
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """Negatives: K ULA steps from uniform noise, no buffer (Nijkamp et al. 2019, short-run MCMC)."""
    x0 = model.support.uniform(x_pos.shape[0], generator, x_pos.device)
    return chain_contrastive_loss(model, x_pos, x0, generator, params)


def cdk_loss(model: EnergyModel, x_pos: Tensor, generator: torch.Generator, params: CDkParams
             ) -> tuple[Tensor, dict[str, Tensor]]:
    """Negatives: k ULA steps started at the data batch (Hinton 2002, contrastive divergence CD-k)."""
    return chain_contrastive_loss(model, x_pos, x_pos, generator, params)


# ---------------------------------------------------------------- score matching


def energy_grad(model: EnergyModel, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(x as a graph leaf, E(x), grad_x E(x)) with create_graph=True, so losses of the gradient train theta."""
    x = x.detach().requires_grad_(True)
    e = model.energy(x)
    (grad,) = torch.autograd.grad(e.sum(), x, create_graph=True)
    return x, e, grad


def dsm_loss(model: EnergyModel, x: Tensor, generator: torch.Generator, params: DSMParams
             ) -> tuple[Tensor, dict[str, Tensor]]:
    """Denoising score matching, s = -grad E (Vincent 2011): 0.5 |sigma s(x~) + eps|^2, x~ = x + sigma eps.

    This is Vincent's 0.5 |s(x~) - (x - x~) / sigma^2|^2 weighted by sigma^2 (same minimizer, O(1) scale);
    its minimizer is the score of the sigma-noised data, not of the data.
    """
    sigma = params.sigma
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    _, e, grad = energy_grad(model, x + sigma * eps)
    loss = 0.5 * (eps - sigma * grad).flatten(1).pow(2).sum(dim=1)  # sigma s + eps = eps - sigma grad E
    diag = {"loss": loss.detach().mean(), "energy_noised": e.detach().mean(),
            "score_norm": grad.detach().flatten(1).norm(dim=1).mean()}
    return loss, diag


def projections(like: Tensor, n: int, kind: str, generator: torch.Generator) -> Tensor:
    """n slices v per sample, shape (n, *like.shape), with E[v v^T] = I."""
    shape = (n, *like.shape)
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
    if kind == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
        return (2 * bits - 1).to(like.dtype)
    raise ValueError(f"projection {kind!r}: choose 'rademacher' or 'gaussian'")


def ssm_loss(model: EnergyModel, x: Tensor, generator: torch.Generator, params: SSMParams
             ) -> tuple[Tensor, dict[str, Tensor]]:
    """Sliced score matching, s = -grad E (Song et al. 2019): v^T (ds/dx) v + 0.5 (v^T s)^2, or SSM-VR.

    With s = -grad E, v^T (ds/dx) v = -v^T H_E v. SSM-VR replaces 0.5 (v^T s)^2 by its expectation
    over v, 0.5 |s|^2, which holds for Rademacher and Gaussian v alike (E[v v^T] = I).
    """
    x, e, grad = energy_grad(model, x)
    hess_terms, fit_terms = [], []
    for v in projections(x, params.n_projections, params.projection, generator):
        (hv,) = torch.autograd.grad((grad * v).sum(), x, create_graph=True)  # H_E v
        hess_terms.append(-(hv * v).flatten(1).sum(dim=1))  # v^T (ds/dx) v
        fit_terms.append(0.5 * (grad * v).flatten(1).sum(dim=1).pow(2))
    hess = torch.stack(hess_terms).mean(dim=0)
    fit = 0.5 * grad.flatten(1).pow(2).sum(dim=1) if params.variance_reduction else torch.stack(fit_terms).mean(0)
    loss = hess + fit
    diag = {"loss": loss.detach().mean(), "energy_pos": e.detach().mean(),
            "trace_term": hess.detach().mean(), "score_norm": grad.detach().flatten(1).norm(dim=1).mean()}
    return loss, diag


# ---------------------------------------------------------------- noise-contrastive estimation


class TruncatedDiagonalGaussian:
    """N(mu, diag(std^2)) truncated to a box: exact log-density and inverse-CDF sampling.

    By hand: torch.distributions has no truncated normal. Diagonal because the box mass of a
    full-covariance Gaussian has no closed form, and NCE needs q normalized on the support.
    Coordinates whose window [a, b] lies in the upper tail are mirrored to the lower tail,
    where Phi and its inverse keep their precision.
    """

    def __init__(self, mu: Tensor, std: Tensor, box: Box) -> None:
        self.mu, self.std, self.box = mu, std, box
        a, b = (box.low - mu) / std, (box.high - mu) / std  # standardized faces
        self.flip = a > 0
        self.lo, self.hi = torch.where(self.flip, -b, a), torch.where(self.flip, -a, b)  # window, lower tail
        self.log_mass = log_ndtr_diff(self.hi, self.lo)  # per coordinate, log(Phi(b) - Phi(a))

    def log_prob(self, y: Tensor) -> Tensor:
        z = (y - self.mu) / self.std
        per_coord = -0.5 * z**2 - 0.5 * math.log(2 * math.pi) - self.std.log() - self.log_mass
        return per_coord.flatten(1).sum(dim=1)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        u = torch.rand((n, *self.mu.shape), generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        cdf_lo, cdf_hi = torch.special.ndtr(self.lo), torch.special.ndtr(self.hi)
        p = (cdf_lo + u * (cdf_hi - cdf_lo)).clamp(torch.finfo(u.dtype).tiny, 1 - torch.finfo(u.dtype).eps)
        z = torch.special.ndtri(p)
        return self.box.clamp(self.mu + self.std * torch.where(self.flip, -z, z))


class UniformOnBox:
    """Uniform density on the support box."""

    def __init__(self, box: Box, device: torch.device) -> None:
        self.box, self.device = box, device

    def log_prob(self, y: Tensor) -> Tensor:
        return torch.full((y.shape[0],), -self.box.log_volume, device=y.device, dtype=y.dtype)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.box.uniform(n, generator, self.device)


def noise_for(batch: Tensor, box: Box, params: NCEParams) -> TruncatedDiagonalGaussian | UniformOnBox:
    """NCE's noise density q, fitted to (and detached from) the training batch where it is Gaussian."""
    if params.noise == "uniform":
        return UniformOnBox(box, batch.device)
    if params.noise == "gaussian":
        x = batch.detach()
        return TruncatedDiagonalGaussian(x.mean(dim=0), x.std(dim=0).clamp_min(params.noise_min_std), box)
    raise ValueError(f"noise {params.noise!r}: choose 'gaussian' or 'uniform'")


def nce_loss(model: NCEEBM, x: Tensor, generator: torch.Generator, params: NCEParams
             ) -> tuple[Tensor, dict[str, Tensor]]:
    """NCE (Gutmann & Hyvarinen 2010): logistic loss of G = log p_theta - log q - log nu, data vs nu noise draws."""
    nu, b = params.noise_ratio, x.shape[0]
    q = noise_for(x, model.support, params)
    y = q.sample(nu * b, generator)
    e = model.energy(torch.cat([x, y]))
    log_q = q.log_prob(torch.cat([x, y])).to(e.dtype)
    g = -e - model.log_z - log_q - math.log(nu)
    g_data, g_noise = g[:b], g[b:].view(nu, b)
    loss = -nn.functional.logsigmoid(g_data) - nn.functional.logsigmoid(-g_noise).sum(dim=0)
    e_pos, e_noise = e[:b].detach(), e[b:].detach()
    accuracy = 0.5 * ((g_data > 0).float().mean() + (g_noise < 0).float().mean())
    diag = {"loss": loss.detach().mean(), "log_z": model.log_z.detach().clone(), "classifier_accuracy": accuracy,
            "energy_pos": e_pos.mean(), "energy_neg": e_noise.mean(), "energy_gap": e_noise.mean() - e_pos.mean()}
    return loss, diag


# ---------------------------------------------------------------- registration

_EBM_NOTEBOOK = "train_ebm.ipynb"
for _spec in (
    MethodSpec(name="short_run_ebm", family="ebm", params=ShortRunParams, build=build_energy_model,
               objective=short_run_loss, eval_samplers=short_run_eval, notebook=_EBM_NOTEBOOK,
               cite="Nijkamp et al. 2019, Learning Non-Convergent Non-Persistent Short-Run MCMC toward "
                    "Energy-Based Model"),
    MethodSpec(name="cdk_ebm", family="ebm", params=CDkParams, build=build_energy_model, objective=cdk_loss,
               eval_samplers=energy_eval_samplers, notebook=_EBM_NOTEBOOK,
               cite="Hinton 2002, Training Products of Experts by Minimizing Contrastive Divergence"),
    MethodSpec(name="dsm_ebm", family="ebm", params=DSMParams, build=build_energy_model, objective=dsm_loss,
               eval_samplers=energy_eval_samplers, notebook=_EBM_NOTEBOOK,
               cite="Vincent 2011, A Connection Between Score Matching and Denoising Autoencoders"),
    MethodSpec(name="ssm_ebm", family="ebm", params=SSMParams, build=build_energy_model, objective=ssm_loss,
               eval_samplers=energy_eval_samplers, notebook=_EBM_NOTEBOOK,
               cite="Song et al. 2019, Sliced Score Matching: A Scalable Approach to Density and Score Estimation"),
    MethodSpec(name="nce_ebm", family="ebm", params=NCEParams, build=build_nce_model, objective=nce_loss,
               eval_samplers=energy_eval_samplers, notebook=_EBM_NOTEBOOK,
               cite="Gutmann & Hyvarinen 2010, Noise-Contrastive Estimation: A New Estimation Principle for "
                    "Unnormalized Statistical Models"),
):
    METHODS.register(_spec.name, _spec)
