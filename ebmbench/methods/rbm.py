"""Bernoulli-Bernoulli RBM trained by CD-k (Hinton 2002) or PCD (Tieleman 2008); exact log Z by enumeration.

Energy E(v, h) = -b.v - c.h - h.W v over binary v (D visible) and h (H hidden). Summing out h
gives the free energy F(v) = -b.v - sum_j softplus(c_j + W_j.v), so exp(-F(v)) / Z is the exact
marginal of v; summing out v instead gives log Z = logsumexp_h [c.h + sum_i softplus(b_i + (W^T h)_i)],
exact and cheap for H <= 20 by enumerating the 2^H hidden states.

Cost convention: one counted call of ``self.net`` is either one free-energy evaluation or one
block Gibbs sweep v -> h -> v' (mode ``"gibbs_sweep"``), so the NFE of the Gibbs sampler is its
number of sweeps. A sweep's two matmuls (W v and W^T h) cost about one forward plus one backward
of the free energy, i.e. about one Langevin step; FLOPs are counted separately by the cost metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812  (the usual alias; F(v) in docstrings is the free energy)
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.mathutil import visible_logits
from ebmbench.methods.base import METHODS, MethodSpec
from ebmbench.params import param
from ebmbench.protocol import SAMPLERS, Box, GenerativeModel, SamplerOutput, SamplerSpec

MAX_ENUMERATED_HIDDEN = 20  # 2^20 hidden states: exact log Z stays a few seconds on a CPU
LOG_Z_CHUNK = 4096  # hidden states per chunk of the enumeration
TRACE_POINTS = 16  # about this many entries in the Gibbs sampler's free-energy trace


@dataclass
class RBMParams:
    """Parameters of the Bernoulli-Bernoulli RBM trained by CD-k (Hinton 2002)."""

    n_hidden: int = param(
        16, "H hidden units; log Z is exact by enumerating the 2^H hidden states (H <= 20)", range=">= 1")
    cd_k: int = param(1, "Gibbs sweeps per training step for the negatives (the k of CD-k / PCD-k)", range=">= 1")
    persistent: bool = param(False, "False: CD-k, chains start at the data; True: PCD (method rbm_pcd)")
    n_chains: int = param(512, "persistent chains (PCD only); all of them advance cd_k sweeps per step", range=">= 1")
    gibbs_steps: int = param(1000, "sweeps of the fresh Gibbs chains that sample() runs at evaluation", range=">= 1")
    init_std: float = param(0.01, "W ~ N(0, init_std^2) (Hinton 2010, A Practical Guide to Training RBMs, Sec. 8)",
                             range=">= 0")
    visible_bias_from_data: bool = param(True, "b_i = logit of the smoothed train pixel mean (Hinton 2010); else b = 0")


@dataclass
class RBMPCDParams(RBMParams):
    """Parameters of the RBM trained by persistent contrastive divergence (Tieleman 2008)."""

    persistent: bool = param(True, "PCD: negatives come from persistent chains that are never reset")


class RBMNet(nn.Module):
    """The RBM's parameters W (H x D), b (D), c (H); forward returns F(v) or runs one Gibbs sweep.

    Everything is computed in the dtype of the input v (float64 for exact likelihoods).
    """

    def __init__(self, n_visible: int, n_hidden: int, init_std: float = 0.01,
                 visible_bias: Tensor | None = None) -> None:
        super().__init__()
        self.W = nn.Parameter(init_std * torch.randn(n_hidden, n_visible))
        self.b = nn.Parameter(torch.zeros(n_visible) if visible_bias is None else visible_bias.clone().float())
        self.c = nn.Parameter(torch.zeros(n_hidden))

    @property
    def n_hidden(self) -> int:
        return self.W.shape[0]

    def forward(self, v: Tensor, mode: str = "free_energy", generator: torch.Generator | None = None):
        """``"free_energy"``: F(v) per sample; ``"gibbs_sweep"``: one block Gibbs sweep (see ``gibbs_sweep``)."""
        if mode == "free_energy":
            return self.free_energy(v)
        if mode == "gibbs_sweep":
            if generator is None:
                raise ValueError("a Gibbs sweep needs the torch.Generator that drives it")
            return self.gibbs_sweep(v, generator)
        raise ValueError(f"RBMNet mode {mode!r}: choose 'free_energy' or 'gibbs_sweep'")

    def free_energy(self, v: Tensor) -> Tensor:
        """F(v) = -b.v - sum_j softplus(c_j + W_j.v), one value per sample."""
        flat = v.flatten(1)
        return self._free_energy(flat, self._hidden_input(flat))

    def gibbs_sweep(self, v: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """h ~ p(h | v), v' ~ p(v' | h); returns v' (shaped like v), p(v' = 1 | h) and F(v) of the input."""
        flat = v.flatten(1)
        a = self._hidden_input(flat)
        h = torch.bernoulli(torch.sigmoid(a), generator=generator)
        p_v = torch.sigmoid(F.linear(h, self.W.to(v.dtype).T, self.b.to(v.dtype)))
        v_next = torch.bernoulli(p_v, generator=generator)
        return v_next.view_as(v), p_v.view_as(v), self._free_energy(flat, a)

    def log_partition(self) -> Tensor:
        """log Z = logsumexp_h [c.h + sum_i softplus(b_i + (W^T h)_i)] over all 2^H hidden states, in float64.

        By hand: no library enumerates RBM hidden states. Chunked so memory stays O(chunk * D).
        """
        parts = [torch.logsumexp(self.hidden_log_weights(lo, min(lo + LOG_Z_CHUNK, 2**self.n_hidden))[1], dim=0)
                 for lo in range(0, 2**self.n_hidden, LOG_Z_CHUNK)]
        return torch.logsumexp(torch.stack(parts), dim=0)

    def hidden_log_weights(self, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """Hidden states number lo..hi-1 as rows of bits h (float64), and their unnormalized log marginals
        log sum_v exp(-E(v, h)) = c.h + sum_i softplus(b_i + (W^T h)_i): the one enumeration of hidden states."""
        W, b, c = self.W.double(), self.b.double(), self.c.double()
        idx = torch.arange(lo, hi, device=W.device)
        h = ((idx.unsqueeze(1) >> torch.arange(self.n_hidden, device=W.device)) & 1).double()  # binary digits of idx
        return h, h @ c + F.softplus(F.linear(h, W.T, b)).sum(dim=1)

    def exact_sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Exact v ~ exp(-F(v)) / Z in float64: h from its marginal over all 2^H hidden states, then v ~ p(v | h)."""
        h_all, log_p = self.hidden_log_weights(0, 2**self.n_hidden)
        pick = torch.multinomial(torch.softmax(log_p, dim=0).to(generator.device), n, replacement=True,
                                 generator=generator)
        h = h_all[pick.to(h_all.device)]
        return torch.bernoulli(torch.sigmoid(F.linear(h, self.W.double().T, self.b.double())), generator=generator)

    def _hidden_input(self, flat: Tensor) -> Tensor:
        return F.linear(flat, self.W.to(flat.dtype), self.c.to(flat.dtype))  # c + W v

    def _free_energy(self, flat: Tensor, hidden_input: Tensor) -> Tensor:
        return -(flat @ self.b.to(flat.dtype)) - F.softplus(hidden_input).sum(dim=1)


class RBM(GenerativeModel):
    """A Bernoulli-Bernoulli RBM: energy = free energy F(v), exact log p(v), block Gibbs sampling."""

    family = "rbm"
    capabilities = frozenset({"energy", "log_prob", "gibbs"})
    default_sampler = "gibbs"

    def __init__(self, net: RBMNet, support: Box, params: RBMParams) -> None:
        super().__init__(net, support)
        self.params = params
        if net.n_hidden > MAX_ENUMERATED_HIDDEN:  # declared per instance: log Z is intractable here
            self.capabilities = type(self).capabilities - {"log_prob"}
        # PCD's persistent chains (Tieleman 2008) are buffers, so checkpoints capture them exactly
        self.register_buffer("chains", torch.zeros(params.n_chains if params.persistent else 0, *support.shape))
        # Gibbs sweeps the persistent chains have run; -1 marks chains not yet started
        self.register_buffer("chain_sweeps", torch.tensor(-1, dtype=torch.long))
        self.chains_ready = False  # chain_sweeps checked since the last load (advance_chains)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self.chains_ready = False  # the loaded chains may be unstarted: check them again on next use
        return super().load_state_dict(*args, **kwargs)

    @property
    def rbm(self) -> RBMNet:
        return self.net.net

    def energy(self, x: Tensor) -> Tensor:
        """The free energy F(v) (counted), so that exp(-F(v)) / Z is the exact marginal of v."""
        return self.net(x, "free_energy")

    def gibbs_sweep(self, v: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """One counted block Gibbs sweep: (v', p(v' = 1 | h), F(v))."""
        return self.net(v, "gibbs_sweep", generator)

    def log_partition(self) -> Tensor:
        """Exact log Z in float64 by enumerating the hidden states; refuses when there are too many."""
        h = self.rbm.n_hidden
        if h > MAX_ENUMERATED_HIDDEN:
            raise ValueError(
                f"exact log Z enumerates 2^n_hidden hidden states; n_hidden={h} exceeds the limit of "
                f"{MAX_ENUMERATED_HIDDEN} (2^{h} states): use n_hidden <= {MAX_ENUMERATED_HIDDEN} or an AIS estimate"
            )
        return self.rbm.log_partition()

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(v) = -F(v) - log Z in float64, for binary v."""
        if not ((x == 0) | (x == 1)).all():
            raise ValueError("an RBM's log_prob is a probability mass on binary images: x must be 0/1")
        log_z = self.log_partition()
        return -self.net(x.double(), "free_energy") - log_z

    def ais_parameters(self) -> tuple[Tensor, Tensor, Tensor]:
        """(W, b, c), detached: the ``gibbs`` capability's parameters for AIS (ebmbench.protocol.GibbsModel)."""
        return self.rbm.W.detach(), self.rbm.b.detach(), self.rbm.c.detach()

    def exact_sample(self, n: int, generator: torch.Generator) -> Tensor | None:
        """n exact draws of v (float64) by enumerating the hidden states; None when there are too many of them."""
        if self.rbm.n_hidden > MAX_ENUMERATED_HIDDEN:
            return None
        with torch.no_grad():
            return self.rbm.exact_sample(n, generator)


def gibbs(model: RBM, n: int, generator: torch.Generator, steps: int = 1000) -> SamplerOutput:
    """Fresh block Gibbs chains v -> h -> v of ``steps`` sweeps from Bernoulli(1/2) noise (Geman & Geman 1984)."""
    v = torch.bernoulli(torch.full((n, *model.support.shape), 0.5, device=model.device), generator=generator)
    every = max(1, steps // TRACE_POINTS)
    trace, at = [], []
    with torch.no_grad():
        for t in range(steps):
            v, _, free = model.gibbs_sweep(v, generator)
            if t % every == 0 or t == steps - 1:
                trace.append(free.mean())  # read once, after the chain (no host sync per sweep)
                at.append(t)
    info = {"init": "Bernoulli(1/2) noise", "nfe_unit": "one block Gibbs sweep v -> h -> v",
            "free_energy_trace": torch.stack(trace).tolist() if trace else [], "free_energy_trace_sweeps": at}
    return SamplerOutput(v, nfe=steps, info=info, temperature=1.0)


def build_rbm(dataset: Dataset, params: RBMParams) -> RBM:
    """An RBM with D = pixels visible units and ``params.n_hidden`` hidden units on binary data."""
    if dataset.levels != 2:
        raise ValueError(f"an RBM models binary data; dataset {dataset.name!r} has levels={dataset.levels} "
                         "(use a binarized dataset such as 'digits_binary')")
    if params.cd_k < 1:
        raise ValueError(f"cd_k={params.cd_k}: CD/PCD needs at least one Gibbs sweep per step")
    bias = visible_logits(dataset.train) if params.visible_bias_from_data else None
    net = RBMNet(math.prod(dataset.shape), params.n_hidden, params.init_std, bias)
    return RBM(net, dataset.support, params)


def build_rbm_cd(dataset: Dataset, params: RBMParams) -> RBM:
    if params.persistent:
        raise ValueError("method 'rbm_cd' is CD-k with persistent=False; for PCD use method 'rbm_pcd'")
    return build_rbm(dataset, params)


def build_rbm_pcd(dataset: Dataset, params: RBMParams) -> RBM:
    if not params.persistent or params.n_chains < 1:
        raise ValueError("method 'rbm_pcd' needs persistent=True and n_chains >= 1; for CD-k use method 'rbm_cd'")
    return build_rbm(dataset, params)


def diagnostics(loss: Tensor, f_pos: Tensor, f_neg: Tensor, v: Tensor, p_recon: Tensor) -> dict[str, Tensor]:
    """Loss, mean free energies of data and negatives, their gap, and the one-sweep reconstruction error
    (0-d device tensors: no host sync per step; the training guard reads them)."""
    return {
        "loss": loss.detach().mean(),
        "free_energy_data": f_pos.detach().mean(),
        "free_energy_model": f_neg.detach().mean(),
        "free_energy_gap": f_neg.detach().mean() - f_pos.detach().mean(),
        "recon_error": (v - p_recon).pow(2).mean(),  # mean squared error of p(v | h), h ~ p(h | v)
    }


def cd_loss(model: RBM, v: Tensor, generator: torch.Generator, params: RBMParams
            ) -> tuple[Tensor, dict[str, Tensor]]:
    """CD-k surrogate F(v) - F(v_k), v_k = k Gibbs sweeps from v, negatives detached (Hinton 2002)."""
    with torch.no_grad():
        v_neg, p_recon, _ = model.gibbs_sweep(v, generator)
        for _ in range(params.cd_k - 1):
            v_neg, _, _ = model.gibbs_sweep(v_neg, generator)
    f_pos, f_neg = model.energy(v), model.energy(v_neg)
    loss = f_pos - f_neg
    return loss, diagnostics(loss, f_pos, f_neg, v, p_recon)


def advance_chains(model: RBM, generator: torch.Generator, k: int) -> Tensor:
    """Run every persistent chain k more Gibbs sweeps (started from Bernoulli(1/2) noise on first use)."""
    if not model.chains_ready:  # chain_sweeps is read from the device once per model (and after a load)
        if int(model.chain_sweeps) < 0:
            model.chains.copy_(torch.bernoulli(torch.full_like(model.chains, 0.5), generator=generator))
            model.chain_sweeps.zero_()
        model.chains_ready = True
    v = model.chains
    for _ in range(k):
        v, _, _ = model.gibbs_sweep(v, generator)
    model.chains.copy_(v)
    model.chain_sweeps += k
    return v


def pcd_loss(model: RBM, v: Tensor, generator: torch.Generator, params: RBMParams
             ) -> tuple[Tensor, dict[str, Tensor]]:
    """PCD surrogate F(v_i) - mean_j F(chain_j) over all persistent chains, negatives detached (Tieleman 2008)."""
    with torch.no_grad():
        _, p_recon, _ = model.gibbs_sweep(v, generator)  # for the reconstruction diagnostic only
        v_neg = advance_chains(model, generator, params.cd_k)
    f_pos, f_neg = model.energy(v), model.energy(v_neg)
    loss = f_pos - f_neg.mean()
    return loss, {**diagnostics(loss, f_pos, f_neg, v, p_recon), "chain_sweeps": model.chain_sweeps.clone()}


def rbm_eval_samplers(params: RBMParams) -> list[tuple[str, dict]]:
    """Fresh block Gibbs chains of ``gibbs_steps`` sweeps from noise."""
    return [("gibbs", {"steps": params.gibbs_steps})]


SAMPLERS.register(
    "gibbs",
    SamplerSpec("gibbs", requires="gibbs", fn=gibbs, cite="Geman & Geman 1984 (block Gibbs sampling of an RBM)"),
)
METHODS.register(
    "rbm_cd",
    MethodSpec(name="rbm_cd", family="rbm", params=RBMParams, build=build_rbm_cd, objective=cd_loss,
               eval_samplers=rbm_eval_samplers, notebook="train_rbm.ipynb",
               cite="Hinton 2002, Training Products of Experts by Minimizing Contrastive Divergence"),
)
METHODS.register(
    "rbm_pcd",
    MethodSpec(name="rbm_pcd", family="rbm", params=RBMPCDParams, build=build_rbm_pcd, objective=pcd_loss,
               eval_samplers=rbm_eval_samplers, notebook="train_rbm.ipynb",
               cite="Tieleman 2008, Training Restricted Boltzmann Machines using Approximations to the "
                    "Likelihood Gradient"),
)
