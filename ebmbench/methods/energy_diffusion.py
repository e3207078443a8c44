"""Energy-parameterized diffusion: a scalar E_theta(x_t, t) whose input gradient is DDPM's eps prediction.

eps_theta(x_t, t) = sigma_t grad_x E_theta(x_t, t), sigma_t = sqrt(1 - alpha_bar_t), so -grad_x E_theta(x_t, t)
is the score of p_t in the native (VP) coordinates and exp(-E_theta(., t)) is an unnormalized model of p_t
(Salimans & Ho 2021, "Should EBMs model the energy or the score?"; Du et al. 2023, "Reduce, Reuse, Recycle").
Training is DDPM's L_simple on that eps (``ddpm_loss``, differentiated through grad_x E with create_graph), so
every DDPM sampler, the PF-ODE NLL and the ELBO apply unchanged; the energy adds Metropolis-corrected sampling
(``samplers/corrected.py``) and composition by summed energies (``ebmbench/compose.py``).

The default network is E_theta(x, t) = |x - f_theta(x, t)|^2 / (2 sigma_t) with f a TimeMLP (Salimans & Ho 2021,
Sec. 3, with 1/sigma_t in place of 1/sigma_t^2 so that eps = (I - J_f)^T (x - f) is O(1) at every level).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.methods.base import METHODS, MethodSpec
from ebmbench.methods.diffusion import DDPM, DDPMParams, ddpm_eval_samplers, ddpm_loss
from ebmbench.nets.mlp import TimeMLP
from ebmbench.params import param
from ebmbench.protocol import Box


@dataclass
class EnergyDDPMParams(DDPMParams):
    """DDPM's parameters (Ho et al. 2020) for an energy-parameterized eps (Du et al. 2023), plus corrected sampling."""

    mcmc_steps: int = param(2, "corrected sampler at evaluation: MCMC steps K per noise level", range=">= 0")
    corrected_steps: int = param(100, "corrected sampler at evaluation: noise levels visited", range=">= 1")


def native_sigma(alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """sigma_t = sqrt(1 - alpha_bar_t) per sample; fractional t interpolates alpha_bar linearly (t of shape (B,))."""
    ab = alphas_cumprod.to(t.device)
    if not t.is_floating_point():
        return (1 - ab[t]).sqrt()
    lo = t.floor().long().clamp(0, len(ab) - 1)
    hi = (lo + 1).clamp(max=len(ab) - 1)
    w = (t - lo).to(ab.dtype)
    return (1 - (ab[lo] + w * (ab[hi] - ab[lo]))).sqrt()


class QuadraticEnergyHead(nn.Module):
    """E(x, t) = |x - f(x, t)|^2 / (2 sigma_t): a scalar energy from a vector-valued net f (Salimans & Ho 2021)."""

    def __init__(self, f: nn.Module, alphas_cumprod: Tensor) -> None:
        super().__init__()
        self.f = f
        self.register_buffer("ab", alphas_cumprod.detach().float().clone(), persistent=False)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        r = (x - self.f(x, t)).flatten(1)
        return r.pow(2).sum(dim=1) / (2 * native_sigma(self.ab, t).to(x.dtype))


class EnergyDDPM(DDPM):
    """A DDPM whose eps is sigma_t grad_x E_theta(x_t, t) (Du et al. 2023); the net returns E per sample."""

    capabilities = frozenset({"eps_prediction", "score", "energy", "time_energy"})

    def __init__(self, net: nn.Module, support: Box, params: DDPMParams | None = None,
                 shape: tuple[int, ...] | None = None) -> None:
        super().__init__(net, support, params or EnergyDDPMParams(), shape)
        ab = self.make_ddpm_scheduler().alphas_cumprod.double()
        self.register_buffer("_ab", ab, persistent=False)

    def energy_t(self, x_t: Tensor, t: Tensor) -> Tensor:
        """E_theta(x_t, t) per sample, counted through ``self.net`` (t: (B,) timesteps, integer or fractional)."""
        return self.net(x_t, t)

    def energy(self, x: Tensor) -> Tensor:
        """E_theta(x, 0): the energy at the smallest noise level, read as a density on the data box."""
        return self.energy_t(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))

    def sigma_t(self, t: Tensor) -> Tensor:
        """sqrt(1 - alpha_bar_t) per sample in float64; at fractional t from the VP process' sigma(t), linear in
        log sigma between grid points as ``score`` maps sigma to t (so eps and score agree off the grid)."""
        if not t.is_floating_point():
            return (1 - self._ab.to(t.device)[t]).sqrt()
        s = self.noise_process.sigma_at(t).double()
        return s / (1 + s**2).sqrt()

    def eps(self, x_t: Tensor, t: Tensor) -> Tensor:
        """eps = sigma_t grad_x E(x_t, t); differentiable in x and theta when grad mode is on (training, PF-ODE)."""
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            # a view, not the leaf: torch's FlopCounterMode (metrics/cost.py) raises inside autograd.grad on leaves
            x_in = x_t if x_t.requires_grad else x_t.detach().requires_grad_(True).view_as(x_t)
            e = self.energy_t(x_in, t)
            (g,) = torch.autograd.grad(e.sum(), x_in, create_graph=keep_graph)
        scale = self.sigma_t(t).to(g.dtype).view(-1, *([1] * (g.dim() - 1)))
        out = scale * g
        return out if keep_graph else out.detach()


def build_energy_net(shape: tuple[int, ...], params: DDPMParams, alphas_cumprod: Tensor) -> nn.Module:
    """The quadratic head on a TimeMLP for vector data; other shapes are refused (a conv head is not built here)."""
    if len(shape) != 1 or params.arch != "default":
        raise ValueError(f"energy_ddpm builds a TimeMLP energy for vector data (D,), not shape {shape} with "
                         f"arch {params.arch!r}; use ddpm for images")
    return QuadraticEnergyHead(TimeMLP(shape[0], hidden=params.hidden, depth=params.depth), alphas_cumprod)


def build_energy_ddpm(dataset: Dataset, params: EnergyDDPMParams) -> EnergyDDPM:
    """An energy-parameterized DDPM (Du et al. 2023) for vector data on the dataset's support box."""
    probe = DDPM(nn.Linear(1, 1), dataset.support, params, shape=dataset.shape)
    net = build_energy_net(dataset.shape, params, probe.make_ddpm_scheduler().alphas_cumprod)
    return EnergyDDPM(net, dataset.support, params, shape=dataset.shape)


def energy_ddpm_eval_samplers(params: EnergyDDPMParams) -> list[tuple[str, dict[str, Any]]]:
    """DDPM's samplers (Ho et al. 2020; Song et al. 2021; Lu et al. 2022) and reverse diffusion with MALA."""
    corrected = [("ddpm_mala", {"steps": params.corrected_steps, "mcmc_steps": params.mcmc_steps})]
    return ddpm_eval_samplers(params) + (corrected if params.mcmc_steps > 0 else [])


METHODS.register(
    "energy_ddpm",
    MethodSpec(
        name="energy_ddpm",
        family="diffusion",
        params=EnergyDDPMParams,
        build=build_energy_ddpm,
        objective=ddpm_loss,
        eval_samplers=energy_ddpm_eval_samplers,
        notebook="train_diffusion.ipynb",
        cite="Du et al. 2023, Reduce, Reuse, Recycle (energy-parameterized diffusion); Salimans & Ho 2021",
    ),
)
