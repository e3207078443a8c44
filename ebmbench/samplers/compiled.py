"""The samplers' hot path as one compiled graph: E(x) with its input gradient in one call.

A model whose ``compile_mode`` is set (the run parameter ``compile``: a torch.compile mode, or "off") gets its
energy-and-gradient as one graph, ``torch.compile(torch.func.grad_and_value(E))``: forward and input
gradient fused, no autograd engine or Python per layer (Ansel et al. 2024, PyTorch 2). ULA, MALA, HMC
and the EBMs' training chains all draw through ``grad_fn``, so runs use the path the benchmark times
(``benchmarks/langevin_bench.py``).

Counting: torch.compile cannot trace ``CountingNet`` (its backward hook mutates outer state, a graph
break that falls back to eager), so a compiled call pauses the counter and adds what one call does by
construction: one forward, plus one backward for a gradient. FLOP counting (``FlopCounterMode``, a
dispatch mode that compiled kernels bypass) always takes the eager path, which runs the same operations.
The first call at each new input shape compiles; its wall clock is kept apart in ``compile_s``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # outputs live in a graph's memory, reused at the next replay
GradFn = Callable[[Tensor], tuple[Tensor, Tensor]]  # x -> (E(x) per sample, grad_x sum E)


def energy_and_grad(energy: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """E(x) and its input gradient by eager autograd, without touching parameter gradients.

    No finiteness check here: a check is a host sync, so chains check once at their end (``check_finite``).
    """
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        # A view makes the input a non-leaf: torch 2.14's FlopCounterMode raises inside
        # autograd.grad on leaves (DESIGN.md, known traps), and FLOPs are counted here.
        x_in = leaf.view_as(leaf)
        e = energy(x_in)
        (grad,) = torch.autograd.grad(e.sum(), x_in)
    return e.detach(), grad


def finite_probe(e: Tensor) -> Tensor:
    """0 * sum E: 0 when every energy is finite, NaN when one is NaN or inf. Summed on device over a chain and
    read once at its end (``check_finite``): two small kernels a step instead of a host sync."""
    return e.detach().sum() * 0.0


def check_finite(probe: Tensor, what: str) -> None:
    """Raise once, at the end of a chain, if any energy along it was NaN or inf (one host sync per chain)."""
    if not torch.isfinite(probe).item():
        raise FloatingPointError(f"non-finite energy during {what} (NaN or inf in E(x)); lower the step size "
                                 f"or check the model for divergence")


def compile_mode(model: Any) -> str:
    """The model's compile mode ("off" when unset; not ``model.compile``, which is nn.Module's method)."""
    return getattr(model, "compile_mode", "off") or "off"


def counting_active() -> bool:
    """A dispatch mode (e.g. FlopCounterMode) is active: compiled kernels would bypass it, so stay eager."""
    return _get_current_dispatch_mode() is not None


class _Compiled:
    """A compiled function of the model, called with the model's counter paused; times first calls per shape."""

    def __init__(self, model: Any, fn: Callable, mode: str, forward: int, backward: int) -> None:
        t0 = time.perf_counter()
        self.model, self.forward, self.backward = model, forward, backward
        self.fn = torch.compile(fn, mode=mode, dynamic=False)
        self.graphs = mode in CUDA_GRAPH_MODES
        self.seen: set[tuple] = set()
        self.compile_s = time.perf_counter() - t0  # the first torch.compile of a process loads its modules

    def __call__(self, *args: Any) -> Any:
        key = tuple((tuple(a.shape), a.dtype) if isinstance(a, Tensor) else a for a in args)
        key += (self.model.training,)
        first = key not in self.seen
        t0 = time.perf_counter()
        net = self.model.net
        net.paused = True
        try:
            if self.graphs:  # each call is a new step: its outputs overwrite the last call's, which callers that
                torch.compiler.cudagraph_mark_step_begin()  # keep them clone (ULA, MALA, HMC do)
            with torch.no_grad():  # torch.func.grad still differentiates in x; no graph to the parameters
                out = self.fn(*args)
        finally:
            net.paused = False
        net.count(self.forward, self.backward)
        if first:
            self.seen.add(key)
            self.compile_s += time.perf_counter() - t0  # includes one call's work: small against a compile
        return out


def _value_and_grad(energy: Callable[[Tensor], Tensor]) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    def summed(x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() == 4:  # images: channels-last is the layout oneDNN's CPU convolutions are fastest in
            x = x.contiguous(memory_format=torch.channels_last)
        e = energy(x)
        return e.sum(), e

    grad_and_value = torch.func.grad_and_value(summed, has_aux=True)

    def fn(x: Tensor) -> tuple[Tensor, Tensor]:
        g, (_, e) = grad_and_value(x)
        return e, g

    return fn


def grad_fn(model: Any) -> GradFn:
    """x -> (E(x), grad E(x)) of the model's energy: eager autograd, or one compiled graph (``model.compile``)."""
    mode = compile_mode(model)
    if mode == "off":
        return lambda x: energy_and_grad(model.energy, x)
    compiled = _cached(model, "energy_grad", lambda: _Compiled(_channels_last(model), _value_and_grad(model.energy),
                                                               mode, 1, 1))

    def call(x: Tensor) -> tuple[Tensor, Tensor]:
        return energy_and_grad(model.energy, x) if counting_active() else compiled(x)

    return call


def _channels_last(model: Any) -> Any:
    """Conv weights in channels-last, in place (same values; eager code runs on them unchanged)."""
    if any(p.dim() == 4 for p in model.parameters()):
        model.to(memory_format=torch.channels_last)
    return model


# model -> {kind: compiled function}; beside the model, not on it, so copies and checkpoints never carry graphs
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached(model: Any, name: str, make: Callable[[], _Compiled]) -> _Compiled:
    """One compiled function per model and kind, so every chain of the run reuses its graphs."""
    store = _CACHE.setdefault(model, {})
    if name not in store:
        store[name] = make()
    return store[name]


def compile_seconds(model: Any) -> float:
    """Seconds spent in first calls (compiles) of the model's compiled functions so far."""
    return sum(c.compile_s for c in _CACHE.get(model, {}).values())
