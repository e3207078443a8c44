"""sn_pcd_ebm: a PCD EBM (Du & Mordatch 2019) whose energy is a spectral-normalized MLP (Miyato et al. 2018) times a
learned scale, registered with ebmbench from outside its package.

Spectral norm bounds each layer's Lipschitz constant by 1, which steadies the energy's gradient for Langevin chains
but also caps the energy's range; the learned scale exp(s) gives the range back with one parameter. Everything else
is ebmbench's: the model class (its capabilities, the CountingNet that counts every call), the PCD objective, the
evaluation samplers, the training loop and every metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.methods.base import METHODS, MethodSpec
from ebmbench.methods.ebm import EBM, PCDParams, pcd_eval_samplers, pcd_loss
from ebmbench.nets.conv import apply_spectral_norm
from ebmbench.nets.mlp import mlp
from ebmbench.params import param


@dataclass
class SNPCDParams(PCDParams):
    """The PCD EBM's parameters, with the spectral-normalized energy's own."""

    log_scale_init: float = param(1.0, "initial log of the learned energy scale s: E(x) = exp(s) f_SN(x)")
    l2_weight: float = param(0.01, "alpha in alpha * (E(x+)^2 + E(x-)^2)", range=">= 0")


class ScaledSNEnergy(nn.Module):
    """E(x) = exp(s) f(x), f a SiLU MLP with every linear weight spectral-normalized."""

    def __init__(self, dim: int, hidden: int, depth: int, log_scale_init: float) -> None:
        super().__init__()
        self.f = apply_spectral_norm(mlp(dim, 1, hidden, depth))
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale_init)))

    def forward(self, x: Tensor) -> Tensor:
        return self.log_scale.exp() * self.f(x.flatten(1)).squeeze(-1)


def build(dataset: Dataset, params: SNPCDParams) -> EBM:
    """The PCD EBM of ebmbench around the scaled spectral-normalized energy (vector data only)."""
    if len(dataset.shape) != 1:
        raise ValueError(f"sn_pcd_ebm models vector data; {dataset.name!r} has shape {dataset.shape}")
    net = ScaledSNEnergy(dataset.shape[0], params.hidden, params.depth, params.log_scale_init)
    return EBM(net, dataset.support, params)


METHODS.register("sn_pcd_ebm", MethodSpec(
    name="sn_pcd_ebm", family="ebm", params=SNPCDParams, build=build, objective=pcd_loss,
    eval_samplers=pcd_eval_samplers, notebook="",  # "": the ebm family's notebook (notebooks/train_ebm.ipynb)
    cite="Du & Mordatch 2019 (PCD EBM) with spectral normalization, Miyato et al. 2018"))
