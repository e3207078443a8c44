"""The one reader of files written by ``torch.save``: tensors and primitives only, always onto the CPU.

``torch.load(weights_only=False)`` unpickles arbitrary objects, so a planted ``checkpoint.pt`` (or
``samples.pt``) would run its code in whoever reads it. Every reader in the package goes through
``load_tensors``, with ``weights_only=True`` and ``map_location="cpu"`` (RNG states must stay CPU
ByteTensors; the caller moves model and optimizer state to its device). ``tests/test_safety.py`` fails on any
other ``torch.load`` in the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that was written by another config or code version."""


def load_tensors(path: str | Path) -> Any:
    """The object saved at ``path``: tensors, containers and primitives; anything else is refused unexecuted."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path, expect: dict[str, str] | None = None) -> dict[str, Any]:
    """A run's checkpoint as a dict on the CPU; with ``expect``, its stamp (config hash, code version) must match.

    Raises ``CheckpointError`` naming the file for an unreadable file, one that is not a dict, or a stamp that
    differs from ``expect``.
    """
    path = Path(path)
    try:
        ckpt = load_tensors(path)
    except Exception as err:  # a truncated file, or a pickle that names a global: refused, not run
        raise CheckpointError(f"{path} could not be read ({type(err).__name__}: {str(err)[:200]})") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if expect:
        found = {k: ckpt.get(k) for k in expect}
        if found != expect:
            raise CheckpointError(f"{path} was written by {found}, this run is {expect}")
    return ckpt
