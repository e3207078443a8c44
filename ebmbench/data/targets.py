"""The sampling literature's analytic targets, with exact log Z, exact samplers, modes and a support.

- ``funnel``: Neal's funnel in d = 10, x_0 ~ N(0, 3^2), x_{1..9} | x_0 ~ N(0, e^{x_0} I) (Neal 2003; the target of
  Vargas et al. 2023, DDS, and Arbel et al. 2021, AFT). The energy is the normalized -log p, so log Z = 0.
- ``gmm40``: FAB's 2D mixture of 40 equal-weight Gaussians (Midgley et al. 2023): after torch.manual_seed(0), means
  (rand(40, 2) - 0.5) * 2 * 40 and diagonal scale softplus(1.0) (lollcat/fab-torch, fab/target_distributions/gmm.py
  and examples/gmm.py at c8ae67bb47a7e765595d154be597bf9a8e75f238; experiments/config/gmm.yaml at the newest
  commit: dim 2, n_mixes 40, loc_scaling 40, log_var_scaling 1.0). Normalized: log Z = 0. Also a 2D training set
  (``toy2d.get_density`` finds it), so the 2D metrics (reverse_kl, mode_tv, their floors) apply.
- ``many_well``: 16 copies of the double well E(x1, x2) = x1^4 - 6 x1^2 - 0.5 x1 + 0.5 x2^2 in d = 32 (FAB's
  ManyWellEnergy, a = -0.5, b = -6, c = 1; Blessing et al. 2024, configs/target/many_well.yaml). Unnormalized:
  log Z = 16 (log Z_1 + 1/2 log 2 pi), Z_1 = int exp(-x^4 + 6 x^2 + 0.5 x) dx by Gauss-Legendre quadrature.

Each target gives ``energy(x)`` on [..., d] (any batch shape), ``log_z``, ``sample(n, generator)`` (exact; many-well:
x2 Gaussian, x1 by inverse CDF of a fine tabulated CDF, exact to that table's resolution), ``mode_of(x)`` and
``n_modes`` (funnel: one mode) and ``init_scale``: the std of the initial N(0, s^2 I) of SMC in Blessing et al.
(configs/target/*.yaml, smc.initial_scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numpy as np
import torch
from torch import Tensor

from ebmbench.data.toy2d import PLANAR_TARGETS, IsotropicMixture
from ebmbench.protocol import Box
from ebmbench.registry import Registry

FAB_GMM_SEED, FAB_N_MIXES, FAB_LOC_SCALING, FAB_LOG_VAR_SCALING = 0, 40, 40.0, 1.0
DOUBLE_WELL = (1.0, -6.0, -0.5)  # E_1(x) = c x^4 + b x^2 + a x with c = 1, b = -6, a = -0.5 (FAB's many well)
WELL_GRID = (-6.0, 6.0, 200_001)  # the tabulated 1D double-well density: exp(-E_1) < e^-1000 outside [-6, 6]


def fab_gmm_means() -> Tensor:
    """(rand(40, 2) - 0.5) * 2 * 40 right after torch.manual_seed(0), as fab-torch's GMM builds them (float32),
    drawn without touching the global generator (a fresh CPU generator seeded 0 gives the same stream)."""
    g = torch.Generator().manual_seed(FAB_GMM_SEED)
    return (torch.rand((FAB_N_MIXES, 2), generator=g) - 0.5) * 2 * FAB_LOC_SCALING


def fab_gmm_std() -> float:
    """softplus(log_var_scaling) with log_var_scaling = 1: fab-torch's scale_tril diagonal (a std, not a variance)."""
    return float(torch.nn.functional.softplus(torch.tensor(FAB_LOG_VAR_SCALING, dtype=torch.float32)))


def make_gmm40():
    """The ``IsotropicMixture`` of FAB's GMM-40 on the box [-50, 50]^2 (means lie in [-40, 40]^2)."""
    class GMM40(IsotropicMixture):
        """40 equal-weight Gaussians, std softplus(1) = 1.3133, means from torch.manual_seed(0) (Midgley et al.
        2023, FAB). Box [-50, 50]^2: every mean is 10 or more from the edge, 7.6 stds. Modes: the 40 components."""

        name = "gmm40"
        box = Box(-50.0, 50.0, (2,))

        def __init__(self) -> None:
            super().__init__(fab_gmm_means().double(), fab_gmm_std(), torch.arange(FAB_N_MIXES))

    return GMM40()


class Target:
    """An unnormalized density exp(-E(x)) on R^d with its exact log Z and exact samples."""

    name: str
    dim: int
    log_z: float
    n_modes: int
    init_scale: float  # SMC's initial N(0, s^2 I) (Blessing et al. 2024)
    support: Box
    source: str

    def energy(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """E(x) and grad E(x) by autograd (subclasses give it in closed form; tests compare the two)."""
        with torch.enable_grad():
            y = x.detach().requires_grad_(True)
            e = self.energy(y)
            (g,) = torch.autograd.grad(e.sum(), y)
        return e.detach(), g

    def mode_of(self, x: Tensor) -> Tensor:
        """The mode each point lies in (funnel: 0 everywhere)."""
        return torch.zeros(x.shape[:-1], dtype=torch.long, device=x.device)

    def log_prob(self, x: Tensor) -> Tensor:
        return -self.energy(x) - self.log_z


class Funnel(Target):
    """Neal's funnel: x_0 ~ N(0, 3^2), x_i | x_0 ~ N(0, e^{x_0}); E = -log p, exact."""

    name, n_modes, init_scale, log_z = "funnel", 1, 1.0, 0.0
    source = "Neal 2003; Vargas et al. 2023 (DDS) and Arbel et al. 2021 (AFT): d = 10, x0 ~ N(0, 3^2)"

    def __init__(self, dim: int = 10, scale: float = 3.0) -> None:
        self.dim, self.scale = dim, scale
        self.support = Box(-math.inf, math.inf, (dim,))

    def energy(self, x: Tensor) -> Tensor:
        x0, rest = x[..., 0], x[..., 1:]
        log_p0 = -0.5 * (x0 / self.scale) ** 2 - math.log(self.scale) - 0.5 * math.log(2 * math.pi)
        d = self.dim - 1
        log_rest = -0.5 * (rest**2).sum(-1) * torch.exp(-x0) - 0.5 * d * x0 - 0.5 * d * math.log(2 * math.pi)
        return -(log_p0 + log_rest)

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """dE/dx0 = x0 / 9 - |x_rest|^2 e^{-x0} / 2 + (d - 1) / 2, dE/dx_i = x_i e^{-x0}."""
        x0, rest = x[..., :1], x[..., 1:]
        scaled = rest * torch.exp(-x0)
        g0 = x0 / self.scale**2 - 0.5 * (rest * scaled).sum(-1, keepdim=True) + 0.5 * (self.dim - 1)
        return self.energy(x), torch.cat([g0, scaled], -1)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn((n, self.dim), generator=generator, dtype=torch.float64)
        x0 = self.scale * z[:, :1]
        return torch.cat([x0, z[:, 1:] * torch.exp(0.5 * x0)], 1)


class GMM40(Target):
    """FAB's GMM-40 (``make_gmm40``): E = -log p, exact; 40 modes; SMC starts from N(0, 40^2 I)."""

    name, dim, n_modes, init_scale, log_z = "gmm40", 2, FAB_N_MIXES, 40.0, 0.0
    source = ("Midgley et al. 2023 (FAB): lollcat/fab-torch fab/target_distributions/gmm.py, examples/gmm.py "
              "@ c8ae67bb47a7e765595d154be597bf9a8e75f238")

    def __init__(self) -> None:
        self.density = make_gmm40()
        self.support = self.density.box
        self.means, self.std = self.density.means, self.density.std

    def _log_joint(self, x: Tensor) -> Tensor:
        """log(w_k N(x; m_k, s^2 I)) [..., 40], with |x - m|^2 = |x|^2 - 2 x.m + |m|^2 (one matmul)."""
        m = self.means.to(x)
        sq = (x**2).sum(-1, keepdim=True) - 2 * x @ m.T + (m**2).sum(-1)
        return -0.5 * sq / self.std**2 - math.log(2 * math.pi * self.std**2) - math.log(FAB_N_MIXES)

    def energy(self, x: Tensor) -> Tensor:
        """-log sum_k w_k N(x; m_k, s^2 I), on any batch shape (differentiable; the toy density's table is not)."""
        return -torch.logsumexp(self._log_joint(x), dim=-1)

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """grad E = (x - sum_k r_k m_k) / s^2, r the components' responsibilities."""
        lj = self._log_joint(x)
        lse = torch.logsumexp(lj, dim=-1, keepdim=True)
        resp = torch.exp(lj - lse)
        return -lse[..., 0], (x - resp @ self.means.to(x)) / self.std**2

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.density.draw(n, generator)

    def mode_of(self, x: Tensor) -> Tensor:
        """The nearest mean (equal weights and stds: the most responsible component)."""
        m = self.means.to(x)
        return ((x[..., None, :] - m) ** 2).sum(-1).argmin(-1)


def double_well_energy(x1: Tensor) -> Tensor:
    c, b, a = DOUBLE_WELL
    return c * x1**4 + b * x1**2 + a * x1


@cache
def double_well_table() -> tuple[np.ndarray, np.ndarray, float]:
    """The 1D double well's grid, its CDF (trapezoid) and log Z_1 (Gauss-Legendre, 400 nodes on [-6, 6])."""
    lo, hi, n = WELL_GRID
    nodes, weights = np.polynomial.legendre.leggauss(400)
    t = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
    e = double_well_energy(torch.from_numpy(t)).numpy()
    log_z1 = float(np.log(0.5 * (hi - lo) * np.sum(weights * np.exp(-e))))
    grid = np.linspace(lo, hi, n)
    p = np.exp(-double_well_energy(torch.from_numpy(grid)).numpy() - log_z1)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(grid))])
    return grid, cdf / cdf[-1], log_z1


class ManyWell(Target):
    """16 double wells in d = 32 (Midgley et al. 2023; Blessing et al. 2024): E = sum_i E_1(x_{2i}) + x_{2i+1}^2 / 2.

    Modes: the 2^16 sign patterns of the x1 coordinates (id = the binary number of x1 > 0)."""

    name, init_scale = "many_well", 1.0
    source = "Midgley et al. 2023 (FAB), ManyWellEnergy a=-0.5, b=-6, c=1; Blessing et al. 2024 configs/target"

    def __init__(self, dim: int = 32) -> None:
        if dim % 2:
            raise ValueError(f"many_well dim={dim}: must be even (pairs of double well and Gaussian)")
        self.dim, self.wells = dim, dim // 2
        self.n_modes = 2**self.wells
        self.log_z = self.wells * (double_well_table()[2] + 0.5 * math.log(2 * math.pi))
        self.support = Box(-math.inf, math.inf, (dim,))

    def energy(self, x: Tensor) -> Tensor:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return (double_well_energy(x1) + 0.5 * x2**2).sum(-1)

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """dE/dx1 = 4 c x1^3 + 2 b x1 + a, dE/dx2 = x2."""
        c, b, a = DOUBLE_WELL
        x1, x2 = x[..., 0::2], x[..., 1::2]
        g = torch.stack([4 * c * x1**3 + 2 * b * x1 + a, x2], -1).reshape(x.shape)
        return self.energy(x), g

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """x2 ~ N(0, 1); x1 by inverse CDF, linear between the table's nodes (spacing 6e-5)."""
        grid, cdf, _ = double_well_table()
        u = torch.rand((n, self.wells), generator=generator, dtype=torch.float64).numpy()
        x1 = torch.from_numpy(np.interp(u, cdf, grid))
        x2 = torch.randn((n, self.wells), generator=generator, dtype=torch.float64)
        return torch.stack([x1, x2], -1).reshape(n, self.dim)

    def mode_of(self, x: Tensor) -> Tensor:
        bits = (x[..., 0::2] > 0).long()
        return (bits * (2 ** torch.arange(self.wells, device=x.device))).sum(-1)


TARGETS: Registry[Callable[[], Target]] = Registry("sampling target")
for _cls in (Funnel, GMM40, ManyWell):
    TARGETS.register(_cls.name, _cls)


PLANAR = PLANAR_TARGETS  # 2D targets that are also toy densities and training sets
PLANAR.register("gmm40", make_gmm40)


def get_target(name: str) -> Target:
    """A fresh instance of the named target; unknown names list the valid ones."""
    return TARGETS.get(name)()


__all__ = ["PLANAR", "TARGETS", "Funnel", "GMM40", "ManyWell", "Target", "fab_gmm_means", "get_target", "make_gmm40"]
