"""Figures. ``plots.run``: one run's, drawn from its ``Run`` in the run notebook. ``plots.suite``: a suite's, drawn
from its results table and saved files (the report imports only that). ``from ebmbench import plots`` gives both
by name, importing each module on first use, so a page that draws suite figures never loads the run machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

RUN_FIGURES = ("samples_figure", "energy_landscape", "chain_snapshots", "energy_histograms", "long_run_chains",
               "denoising_trajectory", "samples_over_training", "annealed_trajectory")


def __getattr__(name: str) -> Any:
    module = importlib.import_module("ebmbench.plots.run" if name in RUN_FIGURES else "ebmbench.plots.suite")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'ebmbench.plots' has no attribute {name!r}") from None
