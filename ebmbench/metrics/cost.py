"""Sampling cost: counted NFE and gradients, matmul/conv FLOPs, wall clock, peak memory.

NFE and gradient evaluations are counted by ``protocol.CountingNet`` inside
``GenerativeModel.sample``; this module adds what needs a separate pass: FLOPs
(``torch.utils.flop_counter``, which counts matmul/conv/attention kernels, not
elementwise ops) and a wall clock measured after a warm-up draw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from ebmbench.protocol import GenerativeModel, Samples


class FlopCount(TorchDispatchMode):
    """Matmul/conv FLOPs by torch's own formulas (``flop_counter.flop_registry``, what FlopCounterMode sums),
    counted in a plain dispatch mode. FlopCounterMode's module hooks break ``autograd.grad(create_graph=True)``
    (score matching, the gradient penalty), so training steps that differentiate a gradient are counted here."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(fn: Callable[[], Any]) -> int:
    """Counted matmul/conv FLOPs of ``fn()`` (``FlopCount``)."""
    with FlopCount() as counter:
        fn()
    return counter.total


def flops_per_sample(
    model: GenerativeModel, sampler: str, budget: dict[str, Any], *, n: int = 2, seed: int = 0
) -> float:
    """Matmul/conv FLOPs of drawing one sample with ``sampler`` (total over ``n`` draws / n)."""
    generator = torch.Generator(model.device).manual_seed(seed)
    with FlopCounterMode(display=False) as counter:
        model.sample(n, generator=generator, sampler=sampler, **budget)
    return counter.get_total_flops() / n


def sample_with_cost(
    model: GenerativeModel,
    n: int,
    *,
    sampler: str,
    budget: dict[str, Any],
    generator: torch.Generator,
    batch_size: int | None = None,
) -> Samples:
    """Draw ``n`` samples, with FLOPs filled in. The FLOP-counting draw (2 samples, its own generator, run
    first) is also the warm-up: one-time costs (lazy init, allocator, cuDNN choice) stay out of the timing."""
    flops = flops_per_sample(model, sampler, budget, seed=10_002)
    samples = model.sample(n, generator=generator, sampler=sampler, batch_size=batch_size, **budget)
    samples.cost.flops_per_sample = flops
    return samples
