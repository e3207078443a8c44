"""Six 2D toy densities with an exact normalized log-density and exact sampling.

Every density is a finite mixture whose components have closed-form densities on R^2
(isotropic Gaussians, Gaussian-smoothed unit squares, anisotropic Gaussians under a
volume-preserving warp), so ``log_prob`` is exact and normalized on R^2. ``sample`` draws
exactly from the mixture truncated to the density's box by rejection; the mass outside the
box is below 1e-6 (``outside_mass_bound`` gives a bound), so the two agree to that accuracy.

Shapes follow the toy data of Grathwohl et al. 2019 (FFJORD, arXiv:1810.01367); the pinwheel
follows Johnson et al. 2016 (arXiv:1603.06277).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ebmbench.data.base import Dataset
from ebmbench.mathutil import log_ndtr_diff
from ebmbench.protocol import Box
from ebmbench.registry import Registry

_CHUNK = 8192  # points per block in log_prob / mode_of (bounds memory at _CHUNK x components)
_CELL = 2.0  # width of the candidate-table cells of IsotropicMixture, in component stds
_NEGLIGIBLE = 50.0  # nats below the best component at which a component is dropped from a cell
_SPACING = 1.5  # distance between neighbouring components along a curve, in component stds
_THRESHOLD_SEED = 20190101  # fixed seed of the samples that define the high-density cut
_THRESHOLD_SAMPLES = 200_000
_HIGH_DENSITY_QUANTILE = 1e-3  # mode_of returns -1 below this quantile of log_prob
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def _points(x: Tensor) -> Tensor:
    """Validate an [N, 2] batch and return it as float64."""
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"expected points of shape [N, 2], got {tuple(x.shape)}")
    return x.to(torch.float64)


def _inside(box: Box, x: Tensor) -> Tensor:
    """Boolean per point of x [N, 2]: inside the closed box (also for N = 0)."""
    return ((x >= box.low) & (x <= box.high)).all(dim=1)


def _out_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


def _rotation(angle: Tensor) -> Tensor:
    """Rotation matrices [..., 2, 2] for angles [...]."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _logsumexp(lj: Tensor) -> Tensor:
    """Row-wise log-sum-exp; terms over 700 nats below the row max count as e^-700 (no denormals)."""
    m = lj.amax(1, keepdim=True)
    out = m[:, 0] + (lj - m).clamp_min_(-700.0).exp_().sum(1).log_()
    return torch.where(m[:, 0] == -math.inf, m[:, 0], out)  # all terms zero: -inf, not NaN


def _box_tail_bound(lo: Tensor, hi: Tensor, std: float, box: Box) -> Tensor:
    """Per component, a union bound on the mass outside ``box`` of [lo, hi] + N(0, std^2 I)."""
    below = torch.special.ndtr((box.low - lo) / std)
    above = torch.special.ndtr((hi - box.high) / std)
    return (below + above).sum(-1)


def _along_curve(curve: Callable[[np.ndarray], np.ndarray], t0: float, t1: float, spacing: float,
                 closed: bool = False) -> Tensor:
    """Points equally spaced in arc length (at most ``spacing`` apart) along a parametric curve."""
    t = np.linspace(t0, t1, 20001)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve(t), axis=0), axis=1))])
    n = math.ceil(arc[-1] / spacing)
    s = np.linspace(0.0, arc[-1], n if closed else n + 1, endpoint=not closed)
    return torch.from_numpy(curve(np.interp(s, arc, t))).to(torch.float64)


class ToyDensity(ABC):
    """A finite mixture on R^2: exact log_prob, exact sampling on ``box``, natural modes.

    Subclasses give each component's log(weight * density) and an exact sampler; components
    are grouped into natural modes by ``component_mode``.
    """

    name: str  # set by each subclass, as is ``box``
    box: Box
    finest_scale: float  # the smallest feature length: a component's or the smoothing std (set by subclasses)

    def __init__(self, weights: Tensor, component_mode: Tensor) -> None:
        weights = weights.to(torch.float64)
        self.weights = weights / weights.sum()
        self.log_weights = self.weights.log()
        self.component_mode = component_mode.to(torch.int64)
        self.n_modes = int(self.component_mode.max()) + 1
        self._threshold: float | None = None

    def length_scales(self) -> tuple[float, ...]:
        """Dyadic multiples finest_scale * 2^j of the finest feature length, up to half the box width."""
        half = (self.box.high - self.box.low) / 2
        return tuple(self.finest_scale * 2.0**j for j in range(math.floor(math.log2(half / self.finest_scale)) + 1))

    @abstractmethod
    def component_log_joint(self, x: Tensor) -> Tensor:
        """log(w_k p_k(x)) as float64 [N, K] for float64 points x [N, 2]."""

    @abstractmethod
    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """n >= 1 exact float64 draws from the untruncated mixture, on the generator's device."""

    @abstractmethod
    def outside_mass_bound(self) -> float:
        """An upper bound on the mixture's mass outside ``box``."""

    def _draw_components(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.multinomial(self.weights.to(generator.device), n, replacement=True, generator=generator)

    def _log_joint(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Log joints [N, M] of the components that matter at x, and their indices (K marks none)."""
        lj = self.component_log_joint(x)
        return lj, torch.arange(lj.shape[1], device=x.device).expand_as(lj)

    def _rowwise(self, x: Tensor, reduce: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """reduce(log_joint, index) -> [n] applied to float64 x in chunks, concatenated."""
        return torch.cat([reduce(*self._log_joint(c)) for c in _points(x).split(_CHUNK)])  # >= 1 chunk

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density (normalized on R^2) at x [N, 2], computed in float64, in x's dtype."""
        return self._rowwise(x, lambda lj, idx: _logsumexp(lj)).to(_out_dtype(x))

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n exact float32 draws from the mixture truncated to ``box`` (rejection), using only generator."""
        if n < 0:
            raise ValueError(f"n={n}: ask for a non-negative number of samples")
        kept, have = [torch.empty(0, 2, device=generator.device)], 0
        while have < n:
            x = self.draw(n - have, generator).to(torch.float32)
            x = x[_inside(self.box, x)]
            kept.append(x)
            have += len(x)
        return torch.cat(kept)

    def _mode_or_outside(self, lj: Tensor, idx: Tensor, threshold: float) -> Tensor:
        """Most probable natural mode (posterior responsibilities summed per mode), -1 below threshold."""
        lp = _logsumexp(lj)
        resp = (lj - lp[:, None]).clamp_min_(-700.0).exp_()
        modes = torch.cat([self.component_mode, torch.tensor([self.n_modes])]).to(lj.device)[idx]
        grouped = resp.new_zeros(len(lj), self.n_modes + 1).scatter_add_(1, modes, resp)
        return torch.where(lp >= threshold, grouped[:, : self.n_modes].argmax(dim=1), -1)  # NaN -> -1

    def log_prob_threshold(self) -> float:
        """The 0.1% quantile of log_prob over exact samples (fixed seed, cached): the high-density cut."""
        if self._threshold is None:
            x = self.sample(_THRESHOLD_SAMPLES, torch.Generator().manual_seed(_THRESHOLD_SEED))
            lp = self.log_prob(x.to(torch.float64))
            self._threshold = float(torch.quantile(lp, _HIGH_DENSITY_QUANTILE))
        return self._threshold

    def natural_mode(self, x: Tensor) -> Tensor:
        """Index of the natural mode x most likely came from, with no high-density cut (compositions cut their own)."""
        return self._rowwise(x, lambda lj, idx: self._mode_or_outside(lj, idx, -math.inf))

    def mode_of(self, x: Tensor) -> Tensor:
        """Index of the natural mode x most likely came from; -1 outside the high-density region."""
        threshold = self.log_prob_threshold()
        return self._rowwise(x, lambda lj, idx: self._mode_or_outside(lj, idx, threshold))


def _candidate_table(means: Tensor, log_weights: Tensor, std: float, box: Box) -> Tensor:
    """For each cell of a grid over ``box``, the components that can matter there (K pads).

    A component is dropped from a cell when, for every point of the cell, its log joint is more
    than _NEGLIGIBLE nats below that of the best component: the dropped terms change the mixture
    density by a relative K * e^-50 < 1e-18, below float64 rounding.
    """
    cell = _CELL * std
    n = math.ceil((box.high - box.low) / cell)
    edges = box.low + cell * torch.arange(n, dtype=torch.float64)
    lo = torch.stack(torch.meshgrid(edges, edges, indexing="ij"), -1).reshape(-1, 1, 2)  # [C, 1, 2]
    near = (lo - means).clamp_min(0) + (means - lo - cell).clamp_min(0)  # per-axis gap to the cell
    far = torch.maximum((means - lo).abs(), (means - lo - cell).abs())  # per-axis farthest corner
    best = (log_weights - (far**2).sum(-1) / (2 * std**2)).amax(1, keepdim=True)
    keep = log_weights - (near**2).sum(-1) / (2 * std**2) >= best - _NEGLIGIBLE
    order = torch.argsort(keep.to(torch.int8), dim=1, descending=True, stable=True)[:, : int(keep.sum(1).max())]
    return torch.where(keep.gather(1, order), order, len(means))


class IsotropicMixture(ToyDensity):
    """Mixture of isotropic Gaussians N(mean_k, std^2 I) with weights w_k (the shared helper).

    log_prob sums, per point, only the components that can matter in its cell of a grid over the
    box (``_candidate_table``); points outside the box use every component.
    """

    def __init__(self, means: Tensor, std: float, component_mode: Tensor, weights: Tensor | None = None) -> None:
        super().__init__(torch.ones(len(means)) if weights is None else weights, component_mode)
        self.means = means.to(torch.float64)
        self.std = self.finest_scale = std
        self.table = _candidate_table(self.means, self.log_weights, std, self.box)
        self._cells_per_axis = math.ceil((self.box.high - self.box.low) / (_CELL * std))

    def _gathered_log_joint(self, x: Tensor, idx: Tensor) -> Tensor:
        """log(w_k N(x; mean_k, std^2 I)) [N, M] for the components idx [N, M] (index K: weight 0)."""
        dev = x.device
        pad = torch.tensor([0.0], dtype=torch.float64)
        mx, my = (torch.cat([self.means[:, d], pad]).to(dev) for d in (0, 1))
        log_w = torch.cat([self.log_weights, pad - math.inf]).to(dev)
        dx, dy = x[:, 0:1] - mx.take(idx), x[:, 1:2] - my.take(idx)
        sq = dx.mul_(dx).addcmul_(dy, dy)
        return sq.mul_(-0.5 / self.std**2).add_(log_w.take(idx)).sub_(math.log(2 * math.pi * self.std**2))

    def component_log_joint(self, x: Tensor) -> Tensor:
        k = len(self.means)
        return self._gathered_log_joint(x, torch.arange(k, device=x.device).expand(len(x), k))

    def _log_joint(self, x: Tensor) -> tuple[Tensor, Tensor]:
        k, dev = len(self.means), x.device
        cell = ((x - self.box.low) / (_CELL * self.std)).floor().nan_to_num(0.0)
        cell = cell.clamp(0, self._cells_per_axis - 1).long()
        idx = self.table.to(dev)[cell[:, 0] * self._cells_per_axis + cell[:, 1]]
        outside = ~_inside(self.box, x)
        if bool(outside.any()):  # the table covers the box only: points outside use every component
            idx = torch.nn.functional.pad(idx, (0, k - idx.shape[1]), value=k)
            idx[outside] = torch.arange(k, device=dev)
        return self._gathered_log_joint(x, idx), idx

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        k = self._draw_components(n, generator)
        noise = torch.randn(n, 2, generator=generator, device=generator.device, dtype=torch.float64)
        return self.means.to(generator.device)[k] + self.std * noise

    def outside_mass_bound(self) -> float:
        return float((self.weights * _box_tail_bound(self.means, self.means, self.std, self.box)).sum())


class EightGaussians(IsotropicMixture):
    """8 equally weighted Gaussians, centres on the circle of radius 2, std 0.2 (FFJORD-style).

    Box [-3, 3]^2; the mass outside it is below 2e-7. Modes: the 8 Gaussians, counterclockwise from (2, 0).
    """

    name = "eight_gaussians"
    box = Box(-3.0, 3.0, (2,))
    RADIUS, STD = 2.0, 0.2

    def __init__(self) -> None:
        angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        means = self.RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
        super().__init__(means, self.STD, torch.arange(8))


class DiagonalBlobs(IsotropicMixture):
    """4 equally weighted Gaussians, std 0.3, centred at (+-sqrt 2, +-sqrt 2): the diagonal modes of eight_gaussians,
    broader. A composition partner (Du et al. 2023): its product with eight_gaussians has four well-separated modes
    (std 0.17) and almost no mass at the other four. Box [-3, 3]^2; the mass outside it is below 1e-7. Modes: the 4
    blobs, counterclockwise from the first quadrant.
    """

    name = "diagonal_blobs"
    box = Box(-3.0, 3.0, (2,))
    STD = 0.3

    def __init__(self) -> None:
        angle = math.pi / 4 + torch.arange(4, dtype=torch.float64) * (math.pi / 2)
        means = 2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
        super().__init__(means, self.STD, torch.arange(4))


class Rings(IsotropicMixture):
    """4 equally weighted concentric rings, radii 0.75, 1.5, 2.25, 3 (FFJORD-style).

    Each ring is a mixture of isotropic Gaussians (std 0.08) equally spaced along the circle at
    most 1.5 std apart. Box [-4, 4]^2; the mass outside it is below 1e-30. Modes: rings, inner first.
    """

    name = "rings"
    box = Box(-4.0, 4.0, (2,))
    RADII, STD = (0.75, 1.5, 2.25, 3.0), 0.08

    def __init__(self) -> None:
        means, modes, weights = [], [], []
        for i, r in enumerate(self.RADII):
            pts = _along_curve(lambda t, r=r: r * np.stack([np.cos(t), np.sin(t)], 1),
                               0.0, 2 * math.pi, _SPACING * self.STD, closed=True)
            means.append(pts)
            modes.append(torch.full((len(pts),), i))
            weights.append(torch.full((len(pts),), 1.0 / len(pts), dtype=torch.float64))  # equal mass per ring
        super().__init__(torch.cat(means), self.STD, torch.cat(modes), torch.cat(weights))


def _equal_curves(curves: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack component means of several curves, each curve one mode with equal total mass."""
    modes = torch.cat([torch.full((len(c),), i) for i, c in enumerate(curves)])
    weights = torch.cat([torch.full((len(c),), 1.0 / len(c), dtype=torch.float64) for c in curves])
    return torch.cat(curves), modes, weights


class TwoMoons(IsotropicMixture):
    """Two interleaved half circles (scikit-learn's make_moons) scaled by 1.5 and centred.

    Each moon is a mixture of isotropic Gaussians (std 0.1) equally spaced along the arc, at most
    1.5 std apart; equal mass per moon. Box [-3, 3]^2; the mass outside it is below 1e-12.
    Modes: 0 = upper moon, 1 = lower moon.
    """

    name = "two_moons"
    box = Box(-3.0, 3.0, (2,))
    SCALE, STD = 1.5, 0.1

    def __init__(self) -> None:
        shift = np.array([0.5, 0.25])

        def upper(t: np.ndarray) -> np.ndarray:
            return self.SCALE * (np.stack([np.cos(t), np.sin(t)], 1) - shift)

        def lower(t: np.ndarray) -> np.ndarray:
            return self.SCALE * (np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1) - shift)

        spacing = _SPACING * self.STD
        means, modes, weights = _equal_curves([_along_curve(f, 0.0, math.pi, spacing) for f in (upper, lower)])
        super().__init__(means, self.STD, modes, weights)


class TwoSpirals(IsotropicMixture):
    """Two interleaved Archimedean spirals +-(t/3)(-cos t, sin t), t in [0, 3 pi] (FFJORD's 2spirals).

    Each spiral is a mixture of isotropic Gaussians (std 0.1) equally spaced in arc length, at
    most 1.5 std apart (uniform along the curve); equal mass per spiral. Box [-4, 4]^2; the mass
    outside it is below 1e-15. Modes: 0 and 1, the two spirals.
    """

    name = "two_spirals"
    box = Box(-4.0, 4.0, (2,))
    TURNS, STD = 3 * math.pi, 0.1

    def __init__(self) -> None:
        def spiral(t: np.ndarray) -> np.ndarray:
            return (t / 3)[:, None] * np.stack([-np.cos(t), np.sin(t)], 1)

        arm = _along_curve(spiral, 0.0, self.TURNS, _SPACING * self.STD)
        means, modes, weights = _equal_curves([arm, -arm])
        super().__init__(means, self.STD, modes, weights)


class Checkerboard(ToyDensity):
    """The 8 black unit squares of a 4x4 checkerboard on [-2, 2]^2 (FFJORD-style), smoothed.

    Each square's uniform density is convolved with N(0, 0.08^2 I), so the density is a product of
    1D Phi differences and log_prob is finite everywhere; squares are equally weighted. Black
    squares are [i-2, i-1] x [j-2, j-1] with i + j even. Box [-3, 3]^2; the mass outside it is
    below 1e-30. Modes: the 8 squares, row-major in (i, j).
    """

    name = "checkerboard"
    box = Box(-3.0, 3.0, (2,))
    STD = finest_scale = 0.08

    def __init__(self) -> None:
        cells = [(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0]
        self.corners = torch.tensor(cells, dtype=torch.float64) - 2.0  # lower-left corners
        super().__init__(torch.ones(len(cells)), torch.arange(len(cells)))

    def component_log_joint(self, x: Tensor) -> Tensor:
        edges = torch.arange(-2.0, 2.0, dtype=torch.float64, device=x.device)  # left edges of the 4 columns
        d = (x[:, :, None] - edges) / self.STD  # [N, 2, 4]
        log_f = log_ndtr_diff(d, d - 1.0 / self.STD)  # per-axis log density of each unit interval
        col, row = (self.corners + 2.0).long().to(x.device).unbind(1)
        return self.log_weights.to(x.device) + log_f[:, 0, col] + log_f[:, 1, row]

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        dev, dt = generator.device, torch.float64
        k = self._draw_components(n, generator)
        u = torch.rand(n, 2, generator=generator, device=dev, dtype=dt)
        noise = torch.randn(n, 2, generator=generator, device=dev, dtype=dt)
        return self.corners.to(dev)[k] + u + self.STD * noise

    def outside_mass_bound(self) -> float:
        tails = _box_tail_bound(self.corners, self.corners + 1.0, self.STD, self.box)
        return float((self.weights * tails).sum())


class Pinwheel(ToyDensity):
    """Pinwheel (Johnson et al. 2016): 5 radial anisotropic Gaussians twisted by a rotation.

    Base arm k: N(1.5 e_k, 0.45^2 e_k e_k^T + 0.15^2 e_k' e_k'^T), e_k at angle 2 pi k / 5 (the
    original's radius 1, stds 0.3 / 0.1, scaled by 1.5). The warp is y = R(rate |x|) x with
    rate 0.45, a rotation by an angle that grows linearly with the radius (the original uses
    rate * exp(radial coordinate), which is not volume-preserving). Box [-4, 4]^2; the mass
    outside it is below 4e-7. Modes: the 5 arms.
    """

    name = "pinwheel"
    box = Box(-4.0, 4.0, (2,))
    N_ARMS, RADIUS, RADIAL_STD, TANGENTIAL_STD, RATE = 5, 1.5, 0.45, 0.15, 0.45
    finest_scale = TANGENTIAL_STD

    def __init__(self) -> None:
        angle = torch.arange(self.N_ARMS, dtype=torch.float64) * (2 * math.pi / self.N_ARMS)
        self.frames = _rotation(angle)  # columns: radial e_k, tangential e_k'
        super().__init__(torch.ones(self.N_ARMS), torch.arange(self.N_ARMS))

    def warp(self, x: Tensor) -> Tensor:
        """y = R(rate |x|) x: rotate each point by an angle proportional to its radius."""
        return (_rotation(self.RATE * x.norm(dim=1)) @ x[:, :, None])[:, :, 0]

    def unwarp(self, y: Tensor) -> Tensor:
        """The inverse warp x = R(-rate |y|) y (rotations keep the radius, |x| = |y|)."""
        return (_rotation(-self.RATE * y.norm(dim=1)) @ y[:, :, None])[:, :, 0]

    def component_log_joint(self, x: Tensor) -> Tensor:
        # In polar coordinates the warp is (r, phi) -> (r, phi + rate r): its Jacobian [[1, 0], [rate, 1]]
        # has determinant 1 and r is unchanged, so the area element r dr dphi is preserved: the warp
        # is volume-preserving and log p(y) = log p_base(unwarp(y)) exactly.
        base = self.unwarp(x)
        frames = self.frames.to(x.device)
        u = torch.einsum("kdc,nkd->nkc", frames, base[:, None, :] - self.RADIUS * frames[:, :, 0])
        std = torch.tensor([self.RADIAL_STD, self.TANGENTIAL_STD], dtype=torch.float64, device=x.device)
        log_norm = math.log(2 * math.pi * self.RADIAL_STD * self.TANGENTIAL_STD)
        return self.log_weights.to(x.device) - 0.5 * ((u / std) ** 2).sum(-1) - log_norm

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        dev = generator.device
        k = self._draw_components(n, generator)
        z = torch.randn(n, 2, generator=generator, device=dev, dtype=torch.float64)
        std = torch.tensor([self.RADIAL_STD, self.TANGENTIAL_STD], dtype=torch.float64, device=dev)
        frames = self.frames.to(dev)[k]
        base = self.RADIUS * frames[:, :, 0] + (frames @ (z * std)[:, :, None])[:, :, 0]
        return self.warp(base)

    def outside_mass_bound(self) -> float:
        # The box holds the disc |y| <= R and |y| = |x|; leaving the disc needs |x - mean| > R - RADIUS,
        # so the mass outside is at most P(u_r^2 > d^2 - c^2) + P(u_t^2 > c^2) for any 0 < c < d.
        d = torch.tensor(min(-self.box.low, self.box.high) - self.RADIUS, dtype=torch.float64)
        c = torch.linspace(0, 1, 201, dtype=torch.float64)[1:-1] * d
        tail = 2 * torch.special.ndtr(-(d**2 - c**2).sqrt() / self.RADIAL_STD)
        tail = tail + 2 * torch.special.ndtr(-c / self.TANGENTIAL_STD)
        return float(tail.min())


DENSITIES: Registry[Callable[[], ToyDensity]] = Registry("toy density")
for _cls in (EightGaussians, Checkerboard, Rings, TwoMoons, Pinwheel, TwoSpirals, DiagonalBlobs):
    DENSITIES.register(_cls.name, _cls)


# 2D sampling targets that are also toy densities (gmm40), registered by ``data/targets.py`` (which builds on this
# module); kept apart from DENSITIES so that the toy set, its ladder and its tests stay as they are
PLANAR_TARGETS: Registry[Callable[[], ToyDensity]] = Registry("2D sampling target")


def get_density(name: str) -> ToyDensity:
    """A fresh instance of the named toy density (or of a 2D sampling target, ``PLANAR_TARGETS``)."""
    if name in PLANAR_TARGETS:
        return PLANAR_TARGETS.get(name)()
    return DENSITIES.get(name)()


def make_toy_dataset(name: str, n_train: int = 20000, n_val: int = 5000, n_test: int = 5000) -> Dataset:
    """Train/val/test drawn from the exact sampler with fixed seeds 0, 1, 2."""
    density = get_density(name)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    splits = {k: density.sample(n, torch.Generator().manual_seed(SPLIT_SEEDS[k])) for k, n in sizes.items()}
    return Dataset(
        name=name, **splits, support=density.box,
        convention="continuous 2D coordinates; exact density known", levels=None, density=density,
    )


__all__ = [
    "DENSITIES", "Checkerboard", "DiagonalBlobs", "EightGaussians", "IsotropicMixture", "Pinwheel", "Rings",
    "SPLIT_SEEDS", "ToyDensity", "TwoMoons", "TwoSpirals", "get_density", "make_toy_dataset",
]
