"""Plain MLPs: an energy E(x) -> scalar and a time-conditioned noise predictor."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def mlp(d_in: int, d_out: int, hidden: int, depth: int) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden`` with SiLU (Swish) activations."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.SiLU()]
        d = hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class EnergyMLP(nn.Module):
    """E_theta(x): flattened input -> one scalar energy per sample."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3) -> None:
        super().__init__()
        self.f = mlp(dim, 1, hidden, depth)

    def forward(self, x: Tensor) -> Tensor:
        return self.f(x.flatten(1)).squeeze(-1)


def embedding_freqs(dim: int, max_period: float = 10_000.0, device: torch.device | str | None = None) -> Tensor:
    """The frequencies of the sinusoidal embedding: exp(-ln(max_period) k / (dim / 2)), k < dim / 2."""
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(half, device=device) / half)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0, freqs: Tensor | None = None) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps (Vaswani et al. 2017); ``freqs`` as made once by
    ``embedding_freqs`` (None: made now)."""
    freqs = embedding_freqs(dim, max_period, t.device) if freqs is None else freqs
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeMLP(nn.Module):
    """eps_theta(x_t, t) for low-dimensional data: MLP on [x, embed(t)]."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, t_dim: int = 32) -> None:
        super().__init__()
        self.t_dim = t_dim
        self.f = mlp(dim + t_dim, dim, hidden, depth)
        # not in the state dict (persistent=False): checkpoints keep their keys; moves with the module
        self.register_buffer("freqs", embedding_freqs(t_dim), persistent=False)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        h = torch.cat([x.flatten(1), timestep_embedding(t, self.t_dim, freqs=self.freqs)], dim=1)
        return self.f(h).view_as(x)
