"""Method = objective + model builder + default samplers for one family member."""

from __future__ import annotations

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


@dataclass(frozen=True)
class MethodSpec:
    """One registered method; ``params`` is the dataclass of its own parameters."""

    name: str
    family: str
    params: type
    build: Callable[[Dataset, Any], GenerativeModel]
    objective: Objective
    eval_samplers: Callable[[Any], list[tuple[str, dict[str, Any]]]]
    notebook: str
    cite: str


METHODS: Registry[MethodSpec] = Registry("method")
