"""Intermediate states of the real samplers, for figures: ``with recording() as frames: model.sample(...)``.

Samplers call ``emit(label, x)`` at each step; outside ``recording`` that is one context-variable read and
nothing is kept, so evaluation draws are unchanged. Figures of trajectories therefore show the chains the run's
samplers ran, with the run's budgets, final denoise step and projection included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from torch import Tensor

_FRAMES: ContextVar[list[tuple[str, Tensor]] | None] = ContextVar("ebmbench_trace", default=None)


@contextmanager
def recording() -> Iterator[list[tuple[str, Tensor]]]:
    """Collect (label, x on the CPU) of every ``emit`` made by samplers inside the block."""
    frames: list[tuple[str, Tensor]] = []
    token = _FRAMES.set(frames)
    try:
        yield frames
    finally:
        _FRAMES.reset(token)


def emit(label: str, x: Tensor) -> None:
    """Record the chains' state ``x`` under ``label`` (e.g. "t = 980", "step 40") when recording."""
    frames = _FRAMES.get()
    if frames is not None:
        frames.append((label, x.detach().cpu().clone()))
