"""Noise processes on one continuous noise level sigma (Karras et al. 2022, EDM; Song et al. 2021, SDEs as objects).

Every process writes its noisy variable as x = s(sigma) * (x0 + sigma * z), z ~ N(0, I):

- VE (Song & Ermon 2019; NCSN): s = 1, so x = x0 + sigma z.
- VP (Ho et al. 2020; DDPM): x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) z, i.e. s = sqrt(ab_t) and
  sigma_t = sqrt((1 - ab_t) / ab_t); conversely ab = 1 / (1 + sigma^2).

The *scaled coordinates* are x_hat = x / s(sigma) = x0 + sigma z. A model with capability
``score`` exposes ``score(x_hat, sigma) = grad_{x_hat} log p_sigma(x_hat)`` where
p_sigma = p_data * N(0, sigma^2 I), always in these scaled (VE) coordinates, plus its
``noise_process`` (with the sigma range it was trained on); ``ebmbench.protocol.ScoreModel`` writes
this promise down. So any VE sampler (annealed Langevin, EDM solvers) runs on any score model, whatever
its native parameterization.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def as_sigma(sigma: float | Tensor, x: Tensor) -> Tensor:
    """sigma as a (B,) tensor on x's device and dtype: a float broadcasts to every sample. A float is filled in on
    the device (``torch.as_tensor(float, device=cuda)`` would be a blocking host-to-device copy)."""
    if not isinstance(sigma, Tensor):
        return torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype)
    s = sigma.to(device=x.device, dtype=x.dtype)
    return s.expand(x.shape[0]) if s.dim() == 0 else s.reshape(x.shape[0])


def per_sample(v: Tensor, x: Tensor) -> Tensor:
    """A (B,) tensor viewed as (B, 1, ..., 1) to broadcast against x."""
    return v.view(-1, *([1] * (x.dim() - 1)))


class NoiseProcess:
    """x = s(sigma) (x0 + sigma z) on sigma in [sigma_min, sigma_max] (Karras et al. 2022, eq. 7-8)."""

    kind: str = ""

    def __init__(self, sigma_min: float, sigma_max: float) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def scale(self, sigma: Tensor) -> Tensor:
        """s(sigma): native x = s(sigma) * x_hat."""
        raise NotImplementedError

    def perturb(self, x0: Tensor, sigma: Tensor, z: Tensor) -> Tensor:
        """The native noisy variable s(sigma) (x0 + sigma z); ``sigma`` has shape (B,)."""
        return per_sample(self.scale(sigma), x0) * (x0 + per_sample(sigma, x0) * z)

    def check(self, sigma: float | Tensor, rtol: float = 1e-3) -> None:
        """Refuse noise levels outside the trained range (0.1 % slack: float32 schedules put DDPM's
        sigma_0 at 0.0100013, not 0.01); the score is unknown there. A float needs no device sync, and a tensor is
        checked by a device-side assert (``torch._assert_async``), so neither reads the device on the host."""
        if isinstance(sigma, Tensor):  # checked on the device (an accelerator raises when it gets there): no host read
            inside = (sigma.min() >= self.sigma_min * (1 - rtol)) & (sigma.max() <= self.sigma_max * (1 + rtol))
            try:
                torch._assert_async(inside, f"sigma leaves the {self.kind} process' range")
                return
            except RuntimeError:  # on the CPU the check is immediate: say which sigma
                pass
        lo, hi = (float(sigma.min()), float(sigma.max())) if isinstance(sigma, Tensor) else (sigma, sigma)
        if lo < self.sigma_min * (1 - rtol) or hi > self.sigma_max * (1 + rtol):
            raise ValueError(
                f"sigma in [{lo:.4g}, {hi:.4g}] leaves the {self.kind} process' range "
                f"[{self.sigma_min:.4g}, {self.sigma_max:.4g}]"
            )

    def describe(self) -> dict[str, float | str]:
        return {"kind": self.kind, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class VENoise(NoiseProcess):
    """Variance exploding x = x0 + sigma z (Song & Ermon 2019; Song et al. 2021, eq. 9)."""

    kind = "VE"

    def scale(self, sigma: Tensor) -> Tensor:
        return torch.ones_like(sigma)


def interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation as numpy.interp (xp increasing); torch has none."""
    i = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    w = ((x - x0) / (x1 - x0)).clamp(0, 1)
    return f0 + w * (f1 - f0)


class VPNoise(NoiseProcess):
    """Variance preserving on a discrete schedule ab_t, t = 0..T-1 (Ho et al. 2020; Song et al. 2021, eq. 11).

    sigma_t = sqrt((1 - ab_t) / ab_t). Between grid points, t(sigma) interpolates t linearly in
    log sigma (as k-diffusion's DiscreteSchedule and diffusers' ``_sigma_to_t``), so a fractional
    timestep goes to the eps net, and the scale uses the continuous s = 1 / sqrt(1 + sigma^2).
    """

    kind = "VP"

    def __init__(self, alphas_cumprod: Tensor) -> None:
        ab = alphas_cumprod.detach().double().cpu()
        self.alphas_cumprod = ab
        self.sigmas = ((1 - ab) / ab).sqrt()  # increasing in t
        if not (self.sigmas[1:] > self.sigmas[:-1]).all():
            raise ValueError("VPNoise needs sigma_t strictly increasing in t (alphas_cumprod decreasing)")
        self.log_sigmas = self.sigmas.log()
        super().__init__(float(self.sigmas[0]), float(self.sigmas[-1]))

    def scale(self, sigma: Tensor) -> Tensor:
        return (1 + sigma**2).rsqrt()

    def tables(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(t grid, log sigma_t) in float64 on ``device``, copied there once (no copy per call)."""
        cache = self.__dict__.setdefault("_tables", {})
        if device not in cache:
            ts = torch.arange(len(self.sigmas), dtype=torch.float64)
            cache[device] = (ts.to(device), self.log_sigmas.to(device))
        return cache[device]

    def timestep(self, sigma: Tensor) -> Tensor:
        """Fractional t with log sigma_t = log sigma, linear in log sigma between grid points (on sigma's device)."""
        ts, log_sigmas = self.tables(sigma.device)
        return interp(sigma.detach().double().log(), log_sigmas, ts).to(torch.float32)

    def sigma_at(self, t: Tensor) -> Tensor:
        """sigma at a (possibly fractional) timestep: the inverse of ``timestep``."""
        ts, log_sigmas = self.tables(t.device)
        return interp(t.detach().double(), ts, log_sigmas).exp()

    def describe(self) -> dict[str, float | str]:
        return {**super().describe(), "timesteps": len(self.sigmas), "sigma_to_t": "linear in log sigma"}


def geometric_sigmas(sigma_max: float, sigma_min: float, n: int) -> Tensor:
    """sigma_1 > ... > sigma_L, a geometric sequence from sigma_max to sigma_min (Song & Ermon 2019, Sec. 4.2)."""
    if n < 1:
        raise ValueError(f"need at least one noise level, got {n}")
    if n == 1:
        return torch.tensor([float(sigma_min)], dtype=torch.float64)
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n, dtype=torch.float64)
