"""Sampling cost: counted NFE and gradients, matmul/conv FLOPs, wall clock, peak memory.

NFE and gradient evaluations are counted by ``protocol.CountingNet`` inside
``GenerativeModel.sample``; this module adds what needs a separate pass: FLOPs
(``torch.utils.flop_counter``, which counts matmul/conv/attention kernels, not
elementwise ops) and a wall clock measured after a warm-up draw.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ebmbench.protocol import GenerativeModel, Samples


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
