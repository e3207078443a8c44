"""The complete metric registries: every module of ``ebmbench.metrics`` imported, so each has registered itself.

A metric module registers at its bottom (``ebmbench.metrics.base.register``); this file imports them all,
so adding a metric is one new file in this package and no edit here or in ``ebmbench/builtins.py``.
Import the registries from here (or from ``ebmbench.builtins``) when you need every metric in them.
"""

from __future__ import annotations

import importlib
import pkgutil

import ebmbench.metrics
from ebmbench.metrics.base import MODEL_METRICS, SAMPLE_METRICS, Measured, Metric, NotApplicable


def load_metric_modules() -> list[str]:
    """Import every module of the ``ebmbench.metrics`` package (sorted by name); returns their names."""
    names = sorted(m.name for m in pkgutil.iter_modules(ebmbench.metrics.__path__) if m.name != "registry")
    for name in names:
        importlib.import_module(f"ebmbench.metrics.{name}")
    return names


load_metric_modules()

__all__ = ["MODEL_METRICS", "SAMPLE_METRICS", "Measured", "Metric", "NotApplicable", "load_metric_modules"]
