"""Dataset spec shared by every data source: fixed splits, value range, support, hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from ebmbench.protocol import Box


class ExactDensity(Protocol):
    """A density with exact log-density and exact sampling on its box (2D toys)."""

    box: Box
    n_modes: int

    def log_prob(self, x: Tensor) -> Tensor: ...

    def sample(self, n: int, generator: torch.Generator) -> Tensor: ...

    def mode_of(self, x: Tensor) -> Tensor: ...


@dataclass
class Dataset:
    """Fixed train/val/test tensors in model space, with their support and conventions."""

    name: str
    train: Tensor
    val: Tensor
    test: Tensor
    support: Box
    convention: str  # how model-space values relate to the stored data (for likelihoods)
    levels: int | None = None  # number of discrete levels per value, if discrete
    density: ExactDensity | None = None  # exact log_prob / sample where known
    labels: dict[str, Tensor] = field(default_factory=dict)  # split -> labels, if any

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def content_hash(self) -> str:
        return tensors_hash(self.train, self.val, self.test)

    def split(self, name: str) -> Tensor:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split {name!r}: choose 'train', 'val' or 'test'")
        return getattr(self, name)


def tensors_hash(*tensors: Tensor) -> str:
    """sha256 over shapes, dtypes and bytes: a content hash that changes with any value."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]
