"""Unadjusted Langevin dynamics on an energy: x <- x - eps * grad E(x) + sqrt(2 eps T) * xi."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ebmbench.protocol import SAMPLERS, Box, GenerativeModel, SamplerOutput, SamplerSpec
from ebmbench.samplers.compiled import GradFn, check_finite, compile_seconds, energy_and_grad, finite_probe, grad_fn
from ebmbench.samplers.trace import emit

__all__ = ["Energy", "GradFn", "ula", "ula_chain", "energy_and_grad", "clip_per_sample", "langevin", "ChainStats"]

Energy = Callable[[Tensor], Tensor]


def clip_per_sample(grad: Tensor, max_norm: float) -> Tensor:
    """Rescale each sample's gradient to norm <= max_norm (0 disables clipping)."""
    if max_norm <= 0:
        return grad
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    scale = (max_norm / norms).clamp(max=1.0)
    return grad * scale.view(-1, *([1] * (grad.dim() - 1)))


@dataclass
class ChainStats:
    """Diagnostics of one Langevin run: energies at start and end, mean gradient norm."""

    energy_start: float
    energy_end: float
    grad_norm: float


def ula_chain(
    energy: Energy,
    x: Tensor,
    *,
    steps: int,
    eps: float,
    temperature: float,
    generator: torch.Generator,
    box: Box,
    support_mode: str = "clamp",
    grad_clip: float = 0.0,
    grad: GradFn | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Unadjusted Langevin algorithm (Roberts & Tweedie 1996; as used by Du & Mordatch 2019), with no host sync.

    ``grad`` gives (E, grad E) in one call (``samplers.compiled.grad_fn``: eager or compiled); None: eager
    autograd of ``energy``. Returns the chains and 0-d device tensors: ``energy_start`` and ``energy_end`` (mean
    E at the first and last step), ``grad_norm_sum`` (over steps) and ``probe`` (0, or NaN when an energy along
    the chain was NaN or inf): training chains hand them to the divergence guard, which reads them when it syncs.
    """
    grad = grad if grad is not None else (lambda y: energy_and_grad(energy, y))
    noise_scale = (2.0 * eps * temperature) ** 0.5
    e_start, e, grad_norm_sum = None, None, torch.zeros((), device=x.device)
    probe = torch.zeros((), device=x.device, dtype=x.dtype)
    emit("step 0", x)
    for step in range(steps):
        e, g = grad(x)
        # the first energies, reduced now: a CUDA-graph compiled grad overwrites its outputs on the next call
        e_start = e.mean() if e_start is None else e_start
        probe += finite_probe(e)
        g = clip_per_sample(g, grad_clip)
        grad_norm_sum += g.flatten(1).norm(dim=1).mean()
        xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = box.project(x.detach() - eps * g + noise_scale * xi, support_mode)
        emit(f"step {step + 1}", x)
    nan = torch.full((), float("nan"), device=x.device)
    stats = {"energy_start": e_start if e_start is not None else nan, "energy_end": e.mean() if e is not None else nan,
             "grad_norm_sum": grad_norm_sum, "probe": probe}
    return x.detach(), stats


def ula(energy: Energy, x: Tensor, *, steps: int, **kwargs: Any) -> tuple[Tensor, ChainStats]:
    """ULA chains (``ula_chain``) checked once at their end: a NaN or inf energy along them raises
    FloatingPointError; the diagnostics come back as floats (one host sync per chain)."""
    x, t = ula_chain(energy, x, steps=steps, **kwargs)
    check_finite(t["probe"], "Langevin sampling")
    stats = ChainStats(energy_start=float(t["energy_start"]), energy_end=float(t["energy_end"]),
                       grad_norm=float(t["grad_norm_sum"]) / max(steps, 1))
    return x, stats


def langevin(
    model: GenerativeModel,
    n: int,
    generator: torch.Generator,
    steps: int = 100,
    eps: float = 0.01,
    temperature: float = 1.0,
    support_mode: str = "clamp",
    grad_clip: float = 0.0,
) -> SamplerOutput:
    """Fresh ULA chains of ``steps`` steps from uniform noise on the support."""
    x0 = model.support.uniform(n, generator, model.device)
    compiled_before = compile_seconds(model)
    x, stats = ula(
        model.energy, x0, steps=steps, eps=eps, temperature=temperature, generator=generator,
        box=model.support, support_mode=support_mode, grad_clip=grad_clip, grad=grad_fn(model),
    )
    info = {"init": "uniform on support", **stats.__dict__, "compile_s": compile_seconds(model) - compiled_before}
    return SamplerOutput(x, nfe=steps, info=info, temperature=temperature)


SAMPLERS.register(
    "langevin",
    SamplerSpec("langevin", requires="energy", fn=langevin, cite="Roberts & Tweedie 1996 (ULA)"),
)
