"""EBM trained by persistent contrastive divergence with a replay buffer (Du & Mordatch 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.methods.base import METHODS, MethodSpec
from ebmbench.nets.cifar import ENERGY_ARCHS, energy_net
from ebmbench.nets.conv import apply_spectral_norm, conv_energy_for
from ebmbench.nets.mlp import EnergyMLP
from ebmbench.params import param
from ebmbench.protocol import SAMPLERS, Box, GenerativeModel, SamplerOutput, SamplerSpec, draw_position
from ebmbench.samplers.compiled import grad_fn
from ebmbench.samplers.langevin import ula, ula_chain


@dataclass
class EnergyNetParams:
    """The energy network and the Langevin chains that evaluate it: shared by every EBM objective."""

    hidden: int = param(128, "MLP width (vector data)", range=">= 1")
    depth: int = param(3, "MLP hidden layers (vector data)", range=">= 1")
    channels: str = param("32,64", "conv energy channels (image data)", grammar="int list")
    spectral_norm: bool = param(False, "spectral norm on every conv/linear weight of the energy")
    arch: str = param(
        "default", 'network: "default" (by data shape) or a paper network of ebmbench.nets.cifar',
        choices=("default", *ENERGY_ARCHS))
    langevin_eps: float = param(
        0.01, "Langevin step size eps (training chains, where used, and evaluation)", range="> 0")
    langevin_T: float = param(1.0, "Langevin temperature T (T != 1 means tempered samples)", range="> 0")
    langevin_grad_clip: float = param(
        0.0, "per-sample L2 clip of grad E in Langevin chains (0 = off); not the optimizer's", range=">= 0")
    support_mode: str = param(
        "clamp", "how chains keep to the support box: clamp | reflect | none", choices=("clamp", "reflect", "none"))
    long_run_factor: int = param(
        0, "also evaluate chains this many times longer (0 = off; shows long-run behaviour)", range=">= 0")


@dataclass
class PCDParams(EnergyNetParams):
    """Parameters of the PCD EBM (IGEBM recipe); Langevin noise is sqrt(2 * eps * T)."""

    buffer_size: int = param(10000, "replay buffer entries", range=">= 1")
    reinit_frac: float = param(0.05, "fraction of each batch restarted from uniform noise", range="in [0, 1]")
    langevin_steps: int = param(20, "K steps per training iteration", range=">= 1")
    l2_weight: float = param(0.1, "alpha in alpha * (E(x+)^2 + E(x-)^2)", range=">= 0")
    sample_steps: int = param(200, "K of the fresh chains that sample() runs at evaluation", range=">= 1")
    buffer_extra_steps: int = param(0, "extra Langevin steps on replay-buffer draws at evaluation", range=">= 0")
    # the study's random-search ranges (issue 15, ebmbench/study.py): name -> (scale, low, high) | ("choice", ...)
    search_space: ClassVar[dict[str, tuple]] = {
        "lr": ("log", 1e-4, 3e-3), "langevin_eps": ("log", 1e-3, 3e-2), "spectral_norm": ("choice", False, True),
        "langevin_steps": ("int_log", 5, 40), "langevin_T": ("log", 0.3, 1.0), "l2_weight": ("log", 1e-3, 0.3),
        "buffer_size": ("int_log", 1000, 20000), "reinit_frac": ("linear", 0.0, 0.2)}


class EnergyModel(GenerativeModel):
    """An energy model exp(-E(x))/Z on a box, what every EBM objective trains (LeCun et al. 2006); sampled by
    fresh Langevin chains with the Langevin settings of its params (any ``EnergyNetParams``)."""

    family = "ebm"
    capabilities = frozenset({"energy"})
    default_sampler = "langevin"

    def __init__(self, net: nn.Module, support: Box, params: EnergyNetParams) -> None:
        super().__init__(net, support)
        self.params = params

    def energy(self, x: Tensor) -> Tensor:
        return self.net(x)

    def langevin_kwargs(self) -> dict:
        p = self.params
        return dict(eps=p.langevin_eps, temperature=p.langevin_T, support_mode=p.support_mode,
                    grad_clip=p.langevin_grad_clip)


class EBM(EnergyModel):
    """An energy model with a persistent replay buffer of chains (PCD: Tieleman 2008; Du & Mordatch 2019)."""

    capabilities = frozenset({"energy", "replay_buffer"})

    def __init__(self, net: nn.Module, support: Box, params: PCDParams) -> None:
        super().__init__(net, support, params)
        self.register_buffer("buffer", torch.zeros(params.buffer_size, *support.shape))
        # chain length of each buffer entry in Langevin steps; -1 marks an unfilled buffer
        self.register_buffer("buffer_age", torch.full((params.buffer_size,), -1, dtype=torch.long))
        self.buffer_ready = False  # buffer_age checked since the last load (fill_buffer_once)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self.buffer_ready = False  # the loaded buffer may be unfilled: check it again on next use
        return super().load_state_dict(*args, **kwargs)


def build_energy_net(dataset: Dataset, params: Any) -> nn.Module:
    """MLP energy for vector data, conv energy for (C, H, W) images; spectral norm on request (Miyato et al. 2018)."""
    shape = dataset.shape
    if getattr(params, "arch", "default") != "default":
        return energy_net(params.arch, shape)
    if len(shape) == 1:
        net = EnergyMLP(shape[0], params.hidden, params.depth)
        return apply_spectral_norm(net) if params.spectral_norm else net
    channels = tuple(int(c) for c in params.channels.split(","))
    return conv_energy_for(shape, channels, params.spectral_norm)


def build_pcd_ebm(dataset: Dataset, params: PCDParams) -> EBM:
    return EBM(build_energy_net(dataset, params), dataset.support, params)


def restart_chains(x0: Tensor, restart: Tensor, support: Box, generator: torch.Generator,
                   sync_free: bool | None = None) -> Tensor:
    """Chains of ``x0`` flagged in ``restart`` start again from uniform noise on the support.

    On the CPU the noise is drawn for the flagged chains only (the random stream every CPU result so far used;
    counting them is a free host read there). On an accelerator (``sync_free``) it is drawn for every chain and
    kept where flagged: the same distribution without a host sync per training step.
    """
    if not (x0.device.type != "cpu" if sync_free is None else sync_free):
        x0[restart] = support.uniform(int(restart.sum()), generator, x0.device)
        return x0
    fresh = support.uniform(x0.shape[0], generator, x0.device)
    return torch.where(restart.view(-1, *[1] * (x0.dim() - 1)), fresh, x0)


def fill_buffer_once(model: EBM, generator: torch.Generator) -> None:
    """Fill the buffer with uniform noise on its first use; its age is read from the device once per model
    (and again after a load_state_dict), not at every training step."""
    if model.buffer_ready:
        return
    if model.buffer_age[0] < 0:
        model.buffer.copy_(model.support.uniform(model.params.buffer_size, generator, model.buffer.device))
        model.buffer_age.zero_()
    model.buffer_ready = True


def draw_negatives(model: EBM, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Take ``batch`` buffer chains, restart a fraction from noise, advance them K steps, store back.

    Returns the chains and the chain's finiteness probe (0, or NaN after a NaN/inf energy; read by the guard).
    """
    p, device = model.params, model.buffer.device
    fill_buffer_once(model, generator)
    idx = torch.randperm(p.buffer_size, generator=generator, device=device)[:batch]
    x0 = model.buffer[idx].clone()
    ages = model.buffer_age[idx].clone()
    restart = torch.rand(batch, generator=generator, device=device) < p.reinit_frac
    x0 = restart_chains(x0, restart, model.support, generator)
    ages[restart] = 0
    x, stats = ula_chain(model.energy, x0, steps=p.langevin_steps, generator=generator, box=model.support,
                         grad=grad_fn(model), **model.langevin_kwargs())
    model.buffer[idx] = x
    model.buffer_age[idx] = ages + p.langevin_steps
    return x, stats["probe"]


def contrastive_loss(model: EnergyModel, x_pos: Tensor, x_neg: Tensor, l2_weight: float
                     ) -> tuple[Tensor, dict[str, Tensor]]:
    """E(x+) - E(x-) + alpha (E(x+)^2 + E(x-)^2), per sample, with the energy gap as diagnostic (Du & Mordatch 2019).

    Diagnostics are 0-d device tensors, read when the training guard syncs (no host sync per step).
    """
    e_pos, e_neg = model.energy(x_pos), model.energy(x_neg)
    loss = e_pos - e_neg + l2_weight * (e_pos**2 + e_neg**2)
    e_pos, e_neg = e_pos.detach(), e_neg.detach()
    diag = {"loss": loss.detach().mean(), "energy_pos": e_pos.mean(),
            "energy_neg": e_neg.mean(), "energy_gap": e_neg.mean() - e_pos.mean()}
    return loss, diag


def pcd_loss(model: EBM, x_pos: Tensor, generator: torch.Generator, params: PCDParams
             ) -> tuple[Tensor, dict[str, Tensor]]:
    """Contrastive divergence on negatives from the replay buffer (Du & Mordatch 2019)."""
    x_neg, probe = draw_negatives(model, x_pos.shape[0], generator)
    loss, diag = contrastive_loss(model, x_pos, x_neg, params.l2_weight)
    return loss, {**diag, "buffer_age_mean": model.buffer_age.float().mean(), "chain_probe": probe}


def replay_buffer(model: EBM, n: int, generator: torch.Generator, steps: int = 0) -> SamplerOutput:
    """Draw persistent chains from the replay buffer; their amortized cost is their chain age.

    The batches of one ``sample()`` call take consecutive slices of one permutation of the buffer, so all the
    call's samples are distinct chains (each batch drawing its own permutation repeated chains across batches:
    50,000 samples in batches of 1,000 from a 50,000-chain buffer held about 32,000 distinct ones)."""
    if model.buffer_age[0] < 0:
        raise ValueError("the replay buffer is empty: train the model before sampling from it")
    offset, total = draw_position()
    if max(n, total or 0) > model.params.buffer_size:
        raise ValueError(f"{max(n, total or 0)} samples exceed buffer_size={model.params.buffer_size}: they would "
                         f"repeat chains; lower n_eval_samples (or n) or raise buffer_size")
    if offset == 0 or "_buffer_perm" not in model.__dict__:  # a draw's first batch: one permutation for the call
        model.__dict__["_buffer_perm"] = torch.randperm(model.params.buffer_size, generator=generator,
                                                        device=model.buffer.device)
    idx = model.__dict__["_buffer_perm"][offset:offset + n]
    x, ages = model.buffer[idx].clone(), model.buffer_age[idx].float()
    if steps:
        x, _ = ula(model.energy, x, steps=steps, generator=generator, box=model.support,
                   grad=grad_fn(model), **model.langevin_kwargs())
    info = {"amortized_nfe": float(ages.mean()) + steps, "buffer_age_mean": float(ages.mean())}
    return SamplerOutput(x, nfe=steps, info=info, temperature=model.params.langevin_T)


def energy_eval_samplers(params: Any) -> list[tuple[str, dict]]:
    """Fresh ULA chains of ``sample_steps`` from noise (and ``long_run_factor`` times longer, if set);
    MALA at the same step and HMC with sqrt(2 eps) leapfrog steps at about the same NFE."""
    fresh = {"steps": params.sample_steps, "eps": params.langevin_eps, "temperature": params.langevin_T,
             "support_mode": params.support_mode, "grad_clip": params.langevin_grad_clip}
    plan = [("langevin", fresh)]
    if getattr(params, "long_run_factor", 0):
        plan.append(("langevin", {**fresh, "steps": params.sample_steps * params.long_run_factor}))
    plan.append(("mala", {"steps": params.sample_steps, "eps": params.langevin_eps,
                          "temperature": params.langevin_T}))
    plan.append(("hmc", {"steps": max(1, params.sample_steps // 10), "leapfrog_steps": 10,
                         "step_size": (2 * params.langevin_eps) ** 0.5, "temperature": params.langevin_T}))
    return plan


def pcd_eval_samplers(params: PCDParams) -> list[tuple[str, dict]]:
    """The energy samplers, and the replay buffer (amortized)."""
    return energy_eval_samplers(params) + [("replay_buffer", {"steps": params.buffer_extra_steps})]


SAMPLERS.register(
    "replay_buffer",
    SamplerSpec("replay_buffer", requires="replay_buffer", fn=replay_buffer,
                cite="Du & Mordatch 2019 (replay buffer of persistent chains)"),
)
METHODS.register(
    "pcd_ebm",
    MethodSpec(name="pcd_ebm", family="ebm", params=PCDParams, build=build_pcd_ebm, objective=pcd_loss,
               eval_samplers=pcd_eval_samplers, notebook="train_ebm.ipynb",
               cite="Du & Mordatch 2019, Implicit Generation and Generalization in Energy-Based Models"),
)
