"""Floors of the 2D sample metrics on disk, as the FID floors are (metrics/fidelity.py): once per machine, not per run.

A floor is a function of its key alone: the metric and estimator settings, a fingerprint of the data (the splits'
content hash, or exact samples and log-densities of the toy density) and N. The key's sha256 names the file
(``<cache root>/floors/``, the root of ``domain.cache_root``: $EBMBENCH_CACHE or ~/.cache/ebmbench), the key is
stored beside the value and compared on load, and an unreadable file is recomputed and replaced.
``FLOOR_CACHE_VERSION`` is part of every key: bump it when an estimator changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch

from ebmbench.metrics.domain import cache_root

FLOOR_CACHE_VERSION = "v1"


def floor_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root() / "floors" / f"{key['metric']}-{digest}.json"


def cached_floor(key: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """The floor stored under ``key``, or ``compute()`` stored there now (JSON-serializable values)."""
    key = {**key, "version": FLOOR_CACHE_VERSION}
    path = floor_path(key)
    try:
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            return stored["value"]
    except (OSError, ValueError, KeyError, TypeError):  # missing, truncated or foreign: recompute
        pass
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump({"key": key, "value": value}, f)
    os.replace(f.name, path)  # atomic: a reader sees the old file or the whole new one
    return value


@cache
def density_fingerprint(name: str) -> str:
    """sha256 of 256 exact samples (seed 0) and their log-densities: changes when the density or its sampler does."""
    from ebmbench.data.toy2d import get_density

    density = get_density(name)
    x = density.sample(256, torch.Generator().manual_seed(0)).to(torch.float64)
    blob = torch.cat([x.flatten(), density.log_prob(x).flatten()]).numpy().tobytes()
    return hashlib.sha256(blob).hexdigest()[:16]
