"""RealNVP flow trained by exact maximum likelihood (Dinh et al. 2017).

log p(x) = log N(f(x); 0, I) + log|det df/dx| exactly (change of variables), and x = f^-1(z),
z ~ N(0, I) samples exactly; ``energy = -log_prob`` so that its normalizer is Z = 1 on R^D
(a check for quadrature and AIS). Discrete data (8x8 digits: 17 levels in [-1, 1], step 2/16)
are uniformly dequantized in the objective: x + u, u ~ U[-w/2, w/2)^D with w the level width,
drawn from the run's generator (Theis et al. 2016). The model's density stays the continuous
one; turning it into a likelihood of the discrete levels is the likelihood metrics' convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from ebmbench.data.base import Dataset
from ebmbench.methods.base import METHODS, MethodSpec
from ebmbench.nets.flow import RealNVP
from ebmbench.params import param
from ebmbench.protocol import Box, GenerativeModel
from ebmbench.samplers import oneshot  # noqa: F401  (registers the "generator" sampler)


@dataclass
class RealNVPParams:
    """Parameters of RealNVP (Dinh et al. 2017) with MLP couplings on the flattened data."""

    n_couplings: int = param(8, "affine coupling layers; masks alternate between b and 1 - b", range=">= 2")
    hidden: int = param(128, "width of each coupling's MLP conditioner (s, t)", range=">= 1")
    depth: int = param(2, "hidden layers of each coupling's MLP conditioner", range=">= 1")
    dequantize: bool = param(True, "discrete data: add uniform noise of one level width in training")
    support_mode: str = param(
        "none", "evaluation sampler: keep f^-1(z) to the support by none | clamp | reflect",
        choices=("none", "clamp", "reflect"))
    # the study's random-search ranges (issue 15, ebmbench/study.py): name -> (scale, low, high) | ("choice", ...)
    search_space: ClassVar[dict[str, tuple]] = {
        "lr": ("log", 1e-4, 3e-3), "n_couplings": ("int", 4, 12), "hidden": ("int_log", 64, 256)}


class Flow(GenerativeModel):
    """A flow z = f(x), base N(0, I): ``self.net(x)`` -> (z, log|det|); ``self.net(z, reverse=True)`` -> x."""

    family = "flow"
    capabilities = frozenset({"log_prob", "energy", "generate"})
    default_sampler = "generator"

    def __init__(self, net: nn.Module, support: Box, params: RealNVPParams, shape: tuple[int, ...],
                 bin_width: float = 0.0) -> None:
        super().__init__(net, support)
        self.params = params
        self.latent_shape = tuple(shape)  # z has the data's shape
        self.bin_width = bin_width  # width of one discrete level, used for dequantization (0: continuous)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) = log N(f(x); 0, I) + log|det df/dx| (Dinh et al. 2017, eq. 3); one net call."""
        z, log_det = self.net(x)
        base = Normal(z.new_zeros(()), z.new_ones(()), validate_args=False)  # validation reads the host
        return base.log_prob(z).flatten(1).sum(dim=1) + log_det

    def energy(self, x: Tensor) -> Tensor:
        """E(x) = -log p(x), so Z = 1."""
        return -self.log_prob(x)

    def generate(self, z: Tensor) -> Tensor:
        """x = f^-1(z): exactly one counted call of the net."""
        return self.net(z, reverse=True)


def dequantize(x: Tensor, bin_width: float, generator: torch.Generator) -> Tensor:
    """x + u, u ~ U[-w/2, w/2)^D per coordinate: uniform noise over each level's bin (Theis et al. 2016)."""
    if bin_width <= 0:
        return x
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + (u - 0.5) * bin_width


def flow_nll(model: Flow, x: Tensor, generator: torch.Generator, params: RealNVPParams
             ) -> tuple[Tensor, dict[str, float]]:
    """Negative log-likelihood per sample, -log p(x) in nats, of the (dequantized) batch (Dinh et al. 2017)."""
    nll = -model.log_prob(dequantize(x, model.bin_width, generator))
    return nll, {"loss": nll.detach().mean(), "nll_per_dim": nll.detach().mean() / x[0].numel()}  # 0-d tensors


def level_width(dataset: Dataset, params: RealNVPParams) -> float:
    """Width of one discrete level, (high - low) / (levels - 1); 0 for continuous data or without dequantization."""
    if not params.dequantize or dataset.levels is None:
        return 0.0
    return (dataset.support.high - dataset.support.low) / (dataset.levels - 1)


def build_realnvp(dataset: Dataset, params: RealNVPParams) -> Flow:
    """A RealNVP (Dinh et al. 2017) on the flattened data of ``dataset``."""
    net = RealNVP(dataset.shape, params.n_couplings, params.hidden, params.depth)
    return Flow(net, dataset.support, params, dataset.shape, level_width(dataset, params))


def flow_eval_samplers(params: RealNVPParams) -> list[tuple[str, dict[str, Any]]]:
    """Exact samples x = f^-1(z)."""
    return [("generator", {"support_mode": params.support_mode})]


METHODS.register(
    "realnvp",
    MethodSpec(name="realnvp", family="flow", params=RealNVPParams, build=build_realnvp, objective=flow_nll,
               eval_samplers=flow_eval_samplers, notebook="train_flow.ipynb",
               cite="Dinh et al. 2017, Density Estimation Using Real NVP"),
)
