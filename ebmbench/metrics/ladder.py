"""The metric ladder: sequences of sample sets whose order of quality is known by construction.

A headline metric must put every sequence in order (tests/test_ladder.py). On each 2D density:

- ``widened``: each mixture component scaled about its centre, x = c_k + s (x - c_k), s = 1, 1.25, 1.5, 2
  (isotropic components: std times s; checkerboard: each smoothed square, width and smoothing, about its
  centre; pinwheel: the base noise of each arm before the warp), then uniform on the box;
- ``modes_kept``: exact samples of the mixture restricted to its first k natural modes, k = M, M-1, M-2, M/2;
- ``smeared``: exact samples plus N(0, sigma^2 I), sigma = 0, 1, 2, 4 times the finest length scale, then uniform.

On digits (images in [-1, 1]): ``noised``, training images plus N(0, sigma^2) pixel noise, and ``classes_kept``,
training images resampled from the first k classes only. The first rung of every sequence is (up to the
mixture's mass outside the box, below 1e-6) an exact sample; quality falls along each sequence.

Every 2D rung lies on the density's box (points drawn outside are drawn again): a sample set with mass off the
support has an infinite reverse KL, so its order against the uniform rung would not be known. On diagonal_blobs
(std 0.3, modes about 1.6 from the edge of the box), the 4x smear put 20 % of its points
outside [-3, 3]^2; restricted to the box its reverse KL by quadrature is 4.57 nats against the uniform's 5.63.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ebmbench.data.base import Dataset
from ebmbench.data.toy2d import Checkerboard, IsotropicMixture, Pinwheel, ToyDensity

Draw = Callable[[int, torch.Generator], Tensor]  # (n, generator) -> samples
WIDEN = (1.0, 1.25, 1.5, 2.0)
SMEAR = (0.0, 1.0, 2.0, 4.0)  # noise std in units of the density's finest length scale
DIGIT_NOISE = (0.0, 0.125, 0.25, 0.5)  # pixel noise std: 0, 1, 2, 4 level steps (2/16) of the [-1, 1] images
DIGIT_CLASSES = (10, 7, 5, 3)
N_2D, N_DIGITS, SEEDS = 1000, 500, tuple(range(10))  # the suite's sample counts, and the seeds per rung
Z_MIN = 2.0  # adjacent rungs must differ by this many standard errors of the difference of their means


@dataclass(frozen=True)
class Rung:
    """One sample set of a ladder: its label and how to draw it."""

    label: str
    draw: Draw


def modes_kept_rungs(n_modes: int) -> tuple[int, ...]:
    """Mode counts of the modes_kept sequence: M, M-1, M-2, M/2 (distinct, positive, decreasing)."""
    return tuple(sorted({k for k in (n_modes, n_modes - 1, n_modes - 2, n_modes // 2) if k >= 1}, reverse=True))


def _components(density: ToyDensity, n: int, generator: torch.Generator, modes: int) -> Tensor:
    """n component indices drawn by weight among the components of the first ``modes`` natural modes."""
    w = torch.where(density.component_mode < modes, density.weights, 0.0)
    return torch.multinomial(w, n, replacement=True, generator=generator)


def draw_mixture(density: ToyDensity, n: int, generator: torch.Generator, scale: float = 1.0,
                 modes: int | None = None) -> Tensor:
    """n float32 draws from the (untruncated) mixture on its first ``modes`` modes, components widened by ``scale``."""
    k = _components(density, n, generator, density.n_modes if modes is None else modes)
    z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    if isinstance(density, IsotropicMixture):
        x = density.means[k] + scale * density.std * z
    elif isinstance(density, Checkerboard):
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        x = density.corners[k] + 0.5 + scale * (u - 0.5 + density.STD * z)
    elif isinstance(density, Pinwheel):
        frames = density.frames[k]
        std = torch.tensor([density.RADIAL_STD, density.TANGENTIAL_STD], dtype=torch.float64)
        x = density.warp(density.RADIUS * frames[:, :, 0] + scale * (frames @ (z * std)[:, :, None])[:, :, 0])
    else:
        raise NotImplementedError(f"no widened sampler for {type(density).__name__}")
    return x.to(torch.float32)


def uniform_box(density: ToyDensity, n: int, generator: torch.Generator) -> Tensor:
    """n float32 points uniform on the density's box."""
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    return (density.box.low + (density.box.high - density.box.low) * u).to(torch.float32)


def smeared(density: ToyDensity, n: int, generator: torch.Generator, sigma: float) -> Tensor:
    """Exact draws plus isotropic Gaussian noise of std sigma."""
    x = draw_mixture(density, n, generator).to(torch.float64)
    return (x + sigma * torch.randn(n, 2, generator=generator, dtype=torch.float64)).to(torch.float32)


def on_box(density: ToyDensity, draw: Draw) -> Draw:
    """``draw`` restricted to the density's box: points outside are replaced by further draws (rejection)."""
    low, high = density.box.low, density.box.high

    def restricted(n: int, generator: torch.Generator) -> Tensor:
        kept: list[Tensor] = []
        while sum(len(k) for k in kept) < n:
            x = draw(n, generator)
            kept.append(x[((x >= low) & (x <= high)).all(dim=1)])
        return torch.cat(kept)[:n]
    return restricted


def ladders_2d(density: ToyDensity) -> dict[str, list[Rung]]:
    """The three 2D sequences of ``density``, best rung first (the uniform box closes widened and smeared)."""
    uniform = Rung("uniform", lambda n, g: uniform_box(density, n, g))
    ell = density.finest_scale
    return {
        "widened": [Rung(f"{s:g}x", on_box(density, lambda n, g, s=s: draw_mixture(density, n, g, scale=s)))
                    for s in WIDEN] + [uniform],
        "modes_kept": [Rung(f"{m} modes", lambda n, g, m=m: draw_mixture(density, n, g, modes=m))
                       for m in modes_kept_rungs(density.n_modes)],
        "smeared": [Rung(f"sigma={f:g}x{ell:g}", on_box(density, lambda n, g, f=f: smeared(density, n, g, f * ell)))
                    for f in SMEAR] + [uniform],
    }


def noised_digits(dataset: Dataset, n: int, generator: torch.Generator, sigma: float) -> Tensor:
    """n training images (without replacement) plus N(0, sigma^2) pixel noise."""
    idx = torch.randperm(len(dataset.train), generator=generator)[:n]
    x = dataset.train[idx]
    return x + sigma * torch.randn(x.shape, generator=generator)


def digits_of_classes(dataset: Dataset, n: int, generator: torch.Generator, n_classes: int) -> Tensor:
    """n training images resampled with replacement from the training images of classes 0..n_classes-1."""
    pool = torch.nonzero(dataset.labels["train"] < n_classes)[:, 0]
    return dataset.train[pool[torch.randint(len(pool), (n,), generator=generator)]]


def ladders_digits(dataset: Dataset) -> dict[str, list[Rung]]:
    """The two image sequences on digits, best rung first."""
    return {
        "noised": [Rung(f"sigma={s:g}", lambda n, g, s=s: noised_digits(dataset, n, g, s)) for s in DIGIT_NOISE],
        "classes_kept": [Rung(f"{c} classes", lambda n, g, c=c: digits_of_classes(dataset, n, g, c))
                         for c in DIGIT_CLASSES],
    }


def score(metrics: Mapping[str, Callable[[Tensor], float]], rungs: Sequence[Rung], n: int,
          seeds: Sequence[int]) -> dict[str, Tensor]:
    """Each metric's values [rungs, seeds] on one draw per (rung r, seed s), drawn with manual_seed(1000 r + s)."""
    values: dict[str, list[list[float]]] = {name: [] for name in metrics}
    for r, rung in enumerate(rungs):
        for row in values.values():
            row.append([])
        for s in seeds:
            x = rung.draw(n, torch.Generator().manual_seed(1000 * r + s))
            for name, fn in metrics.items():
                values[name][-1].append(float(fn(x)))
    return {name: torch.tensor(v, dtype=torch.float64) for name, v in values.items()}


def separation(values: Tensor) -> Tensor:
    """Per adjacent rung pair, (mean_b - mean_a) / sqrt(var_a / S + var_b / S): the z of the rise, S seeds each."""
    mean, var, s = values.mean(1), values.var(1), values.shape[1]
    return (mean[1:] - mean[:-1]) / (var[1:] / s + var[:-1] / s).sqrt().clamp_min(1e-300)


def ordered(values: Tensor, z: float = Z_MIN) -> bool:
    """The ladder rule: every adjacent pair's mean rises by at least z standard errors of the difference."""
    return bool((separation(values) >= z).all())
