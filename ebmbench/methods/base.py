"""Method = objective (or a whole training step) + model builder + evaluation samplers."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ebmbench.data.base import Dataset
from ebmbench.protocol import GenerativeModel
from ebmbench.registry import Registry

# (model, x batch, generator, params) -> (per-sample loss, diagnostics of floats)
Objective = Callable[[GenerativeModel, Tensor, torch.Generator, Any], tuple[Tensor, dict[str, float]]]
# (model, next_batch, optimizers by name, generator, params) -> diagnostics (must include "loss")
TrainStep = Callable[
    [GenerativeModel, Callable[[], Tensor], dict[str, torch.optim.Optimizer], torch.Generator, Any],
    dict[str, float],
]
# (model, lr, betas) -> optimizers by name
MakeOptimizers = Callable[[GenerativeModel, float, tuple[float, float]], dict[str, torch.optim.Optimizer]]


@dataclass(frozen=True)
class MethodSpec:
    """One registered method; ``params`` is the dataclass of its own parameters.

    Most methods give an ``objective`` and get the default step (one Adam over all
    parameters). Methods with several players (GANs) give ``optimizers`` and a
    ``train_step`` that does the whole update; the trainer checkpoints every optimizer.
    """

    name: str
    family: str
    params: type
    build: Callable[[Dataset, Any], GenerativeModel]
    eval_samplers: Callable[[Any], list[tuple[str, dict[str, Any]]]]
    notebook: str
    cite: str
    objective: Objective | None = None
    train_step: TrainStep | None = None
    optimizers: MakeOptimizers | None = None

    def __post_init__(self) -> None:
        if (self.objective is None) == (self.train_step is None):
            raise ValueError(f"method {self.name!r}: give exactly one of objective and train_step")
        if self.train_step is not None and self.optimizers is None:
            raise ValueError(f"method {self.name!r}: a custom train_step needs its optimizers")


def adam(params: Any, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam (Kingma & Ba 2015) as one fused kernel over all parameters (torch's ``fused=True``, CPU and CUDA):
    the same update as the per-tensor loop, without its Python and launch cost per tensor per step."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


def single_adam(model: GenerativeModel, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
    """The default: one Adam over every parameter."""
    return {"model": adam(model.parameters(), lr, betas)}


def clipped_step(optimizer: torch.optim.Optimizer, params: list[Tensor], grad_clip: float) -> Tensor:
    """Clip the gradient norm (0 = measure only) and step, unless the norm is not finite; no host sync.

    Returns the norm before clipping (a device tensor); a non-finite norm skips the update so that the
    divergence guard sees it before any weight is corrupted. The skip is decided on the device by the fused
    Adam kernel's ``found_inf`` (as torch.amp.GradScaler drives it); another optimizer decides on the host.
    """
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if grad_clip > 0:  # the same two calls as clip_grad_norm_; measure only: no rescale of every gradient by 1
        torch.nn.utils.clip_grads_with_norm_(params, grad_clip, norm)
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = (~torch.isfinite(norm)).to(torch.float32)  # type: ignore[attr-defined]
        optimizer.step()
    elif math.isfinite(float(norm)):
        optimizer.step()
    return norm.detach()


def objective_step(objective: Objective, grad_clip: float = 0.0) -> TrainStep:
    """The default training step: minimize the mean of ``objective`` with the single optimizer."""

    params_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its parameters, listed once

    def step(model, next_batch, optimizers, generator, params) -> dict[str, float | Tensor]:
        loss_per_sample, diag = objective(model, next_batch(), generator, params)
        loss = loss_per_sample.mean()
        (optimizer,) = optimizers.values()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        every = params_of.get(model) or params_of.setdefault(model, list(model.parameters()))
        norm = clipped_step(optimizer, [p for p in every if p.grad is not None], grad_clip)
        return {**diag, "loss": loss.detach(), "grad_norm": norm}  # 0-d tensors: read when the guard syncs

    return step


def training_step(spec: MethodSpec, grad_clip: float = 0.0) -> tuple[TrainStep, MakeOptimizers]:
    """The method's own step and optimizers, or the default objective step with one Adam."""
    if spec.train_step is not None:
        return spec.train_step, spec.optimizers  # type: ignore[return-value]
    return objective_step(spec.objective, grad_clip), spec.optimizers or single_adam  # type: ignore[arg-type]


METHODS: Registry[MethodSpec] = Registry("method")
