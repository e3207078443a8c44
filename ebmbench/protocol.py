"""The one sampling protocol every family implements (DESIGN.md: "The one idea").

A model is an ``nn.Module`` that declares its primitive capabilities (``energy``,
``eps_prediction``, ``log_prob``, ...), lives on a stated support ``Box``, wraps its
network in a ``CountingNet`` so that cost is counted rather than computed by formula,
and draws ``Samples`` (tensor + cost) through named samplers from one registry.
Metrics only ever see this interface; they never ask which family a model is.

A declared capability is a promise of methods, written down below as a ``Protocol`` per capability
(``CAPABILITY_PROTOCOLS``); samplers and metrics are typed against these, never against a model class.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ebmbench.registry import Registry

if TYPE_CHECKING:
    from ebmbench.noise import NoiseProcess


@dataclass(frozen=True)
class Box:
    """Axis-aligned support [low, high]^D of a density; ``mode`` says how samplers keep to it."""

    low: float
    high: float
    shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    @property
    def log_volume(self) -> float:
        return self.dim * math.log(self.high - self.low)

    def contains(self, x: Tensor) -> Tensor:
        """Boolean per sample: every coordinate inside the closed box."""
        flat = x.flatten(1)
        return ((flat >= self.low) & (flat <= self.high)).all(dim=1)

    def clamp(self, x: Tensor) -> Tensor:
        return x.clamp(self.low, self.high)

    def reflect(self, x: Tensor) -> Tensor:
        """Fold coordinates back into the box by mirror reflection at its faces."""
        width = self.high - self.low
        y = torch.remainder(x - self.low, 2 * width)
        return self.low + torch.where(y > width, 2 * width - y, y)

    def project(self, x: Tensor, mode: str) -> Tensor:
        if mode == "clamp":
            return self.clamp(x)
        if mode == "reflect":
            return self.reflect(x)
        if mode == "none":
            return x
        raise ValueError(f"support mode {mode!r}: choose 'clamp', 'reflect' or 'none'")

    def uniform(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
        u = torch.rand((n, *self.shape), generator=generator, device=device)
        return self.low + (self.high - self.low) * u


class CountingNet(nn.Module):
    """Instrumented wrapper: counts forward calls and backward passes through the net."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.forward_calls = 0
        self.backward_calls = 0
        self.paused = False  # set by samplers.compiled around a compiled call, which counts itself

    def count(self, forward: int = 1, backward: int = 0) -> None:
        """Add calls made while paused (a compiled graph cannot run the counting hooks)."""
        self.forward_calls += forward
        self.backward_calls += backward

    def _count_backward(self, grad: Tensor) -> None:
        self.backward_calls += 1

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.paused:
            return self.net(*args, **kwargs)
        self.forward_calls += 1
        out = self.net(*args, **kwargs)
        if isinstance(out, Tensor) and out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def reset(self) -> None:
        self.forward_calls = 0
        self.backward_calls = 0


@dataclass
class Cost:
    """What drawing a batch cost, per sample, measured on the run's device."""

    nfe: float  # sequential network evaluations per sample, counted by CountingNet
    grad_evals: float  # backward passes through the network per sample, counted
    wall_s_per_sample: float  # device-synchronized wall clock / n (warm-up is the caller's)
    batch_size: int
    threads: int
    device: str
    peak_mem_bytes: int | None = None  # CUDA allocator peak; None on CPU (no allocator peak)
    flops_per_sample: float | None = None  # filled by metrics.cost.flops_per_sample

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Samples:
    """A batch of samples and what it cost; ``tempered`` when drawn at T != 1."""

    x: Tensor
    cost: Cost
    sampler: str
    params: dict[str, Any]
    temperature: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def tempered(self) -> bool:
        return self.temperature is not None and self.temperature != 1.0


@dataclass
class SamplerOutput:
    """What a sampler function returns: samples and the NFE it claims (score_sde style)."""

    x: Tensor
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)
    temperature: float | None = None


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: the capability it needs, its function and a citation."""

    name: str
    requires: str
    fn: Callable[..., SamplerOutput]
    cite: str

    def parameters(self) -> dict[str, Any]:
        """Budget parameters the sampler accepts, with their defaults."""
        sig = inspect.signature(self.fn)
        skip = {"model", "n", "generator"}
        return {k: p.default for k, p in sig.parameters.items() if k not in skip}


SAMPLERS: Registry[SamplerSpec] = Registry("sampler")


# (offset, total) of the batch a sampler is drawing within one ``GenerativeModel.sample`` call; (0, None) outside
_DRAW: ContextVar[tuple[int, int | None]] = ContextVar("ebmbench_draw", default=(0, None))


def draw_position() -> tuple[int, int | None]:
    """Where the current batch starts in its ``sample()`` call, and how many samples the call draws in all
    (None when the sampler is called directly). A sampler whose batches must not overlap (the replay buffer's
    distinct draws) reads it."""
    return _DRAW.get()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class GenerativeModel(nn.Module):
    """Base of every family: capabilities, support, a counted net and ``sample()``."""

    family: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset()
    default_sampler: ClassVar[str] = ""

    def __init__(self, net: nn.Module, support: Box) -> None:
        super().__init__()
        self.net = CountingNet(net)
        self.support = support

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator,
        sampler: str | None = None,
        batch_size: int | None = None,
        **budget: Any,
    ) -> Samples:
        """Draw ``n`` samples with a named sampler, counting NFE, gradients and wall clock."""
        if n < 1:
            raise ValueError(f"n={n}: ask for at least one sample")
        spec = SAMPLERS.get(sampler or self.default_sampler)
        if not self.has(spec.requires):
            raise ValueError(
                f"sampler {spec.name!r} needs capability {spec.requires!r}; "
                f"{type(self).__name__} has {sorted(self.capabilities)}"
            )
        allowed = spec.parameters()
        unknown = sorted(set(budget) - set(allowed))
        if unknown:
            raise TypeError(f"sampler {spec.name!r} takes no parameter {unknown}; it takes {sorted(allowed)}")
        batch_size = batch_size or n
        device = self.device
        chunks, calls_x_size, grads_x_size, info, temperature, compile_s = [], 0, 0, {}, None, 0.0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        for lo in range(0, n, batch_size):
            size = min(batch_size, n - lo)
            self.net.reset()
            token = _DRAW.set((lo, n))
            try:
                out = spec.fn(self, size, generator=generator, **budget)
            finally:
                _DRAW.reset(token)
            if out.nfe != self.net.forward_calls:
                raise RuntimeError(
                    f"sampler {spec.name!r} claims {out.nfe} NFE but the network was called "
                    f"{self.net.forward_calls} times"
                )
            calls_x_size += self.net.forward_calls * size
            grads_x_size += self.net.backward_calls * size
            chunks.append(out.x.detach())
            info, temperature = out.info, out.temperature
            compile_s += float(out.info.get("compile_s", 0.0))  # torch.compile's one-off cost (samplers.compiled)
        _sync(device)
        wall = time.perf_counter() - start - compile_s  # sampling cost without the one-off compile
        if compile_s:
            info = {**info, "compile_s": compile_s}
        self.net.reset()
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        cost = Cost(
            nfe=calls_x_size / n,
            grad_evals=grads_x_size / n,
            wall_s_per_sample=wall / n,
            batch_size=batch_size,
            threads=torch.get_num_threads(),
            device=str(device),
            peak_mem_bytes=peak,
        )
        params = {**allowed, **budget}
        return Samples(torch.cat(chunks), cost, spec.name, params, temperature, info)


# ---------------------------------------------------------------- capabilities as written protocols
# A model that declares a capability (``model.has(name)``) implements the protocol of that name.
# Samplers and metrics type their ``model`` argument with these; they never import a method module.


@runtime_checkable
class EnergyModel(Protocol):
    """Capability ``energy``: an unnormalized density exp(-E(x)) on the support box."""

    support: Box

    def energy(self, x: Tensor) -> Tensor:
        """E(x) per sample, counted through the model's ``CountingNet``."""
        ...


@runtime_checkable
class ScoreModel(Protocol):
    """Capability ``score``: the score in scaled (VE) coordinates and the noise process (see ``ebmbench.noise``)."""

    noise_process: NoiseProcess

    def score(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """grad_x log p_sigma(x) at x = x0 + sigma z; ``sigma`` a float or one value per sample."""
        ...


@runtime_checkable
class EpsModel(Protocol):
    """Capability ``eps_prediction``: a noise-prediction network on a discrete diffusers schedule (DDPM).

    ``make_*_scheduler`` return fresh diffusers schedulers with the model's pinned settings
    (``scheduler_config()``); ``shape`` is one sample's shape.
    """

    shape: tuple[int, ...]
    device: torch.device

    def eps(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Predicted noise eps_theta(x_t, t) for integer (or fractional) timesteps ``t`` of shape (B,)."""
        ...

    def scheduler_config(self) -> dict[str, Any]: ...

    def make_ddpm_scheduler(self) -> Any: ...

    def make_ddim_scheduler(self) -> Any: ...

    def make_ddim_inverse_scheduler(self) -> Any: ...

    def make_dpm_scheduler(self) -> Any: ...


@runtime_checkable
class TimeEnergyModel(EpsModel, Protocol):
    """Capability ``time_energy``: an energy E(x_t, t) on every noise level of a diffusers schedule, with
    eps(x_t, t) = sigma_t grad_x E(x_t, t), sigma_t = sqrt(1 - alpha_bar_t) (Du et al. 2023)."""

    def energy_t(self, x_t: Tensor, t: Tensor) -> Tensor:
        """E(x_t, t) per sample at (B,) timesteps ``t``, counted through the model's ``CountingNet``."""
        ...

    def sigma_t(self, t: Tensor) -> Tensor:
        """sqrt(1 - alpha_bar_t) per sample."""
        ...


@runtime_checkable
class GibbsModel(Protocol):
    """Capability ``gibbs``: a Bernoulli-Bernoulli RBM, E(v, h) = -b.v - c.h - h.W v on binary v and h."""

    def gibbs_sweep(self, v: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """One counted block Gibbs sweep v -> h -> v': (v', p(v' = 1 | h), F(v))."""
        ...

    def ais_parameters(self) -> tuple[Tensor, Tensor, Tensor]:
        """(W (H x D), b (D), c (H)), detached: what annealing from a base-rate RBM needs."""
        ...

    def exact_sample(self, n: int, generator: torch.Generator) -> Tensor | None:
        """n exact draws of v ~ exp(-F(v)) / Z in float64, or None when that is intractable (too many hidden units)."""
        ...


CAPABILITY_PROTOCOLS: dict[str, type] = {
    "energy": EnergyModel,
    "score": ScoreModel,
    "eps_prediction": EpsModel,
    "gibbs": GibbsModel,
    "time_energy": TimeEnergyModel,
}
