"""What a metric is, and the two registries every metric module adds itself to.

A sample metric maps (samples, dataset) to a ``Measured`` (value, stderr, meta); a model metric maps
(model, dataset) to one. A metric module ends with ``register(Metric(...))`` and imports nothing from
the rest of ``ebmbench.metrics`` but this file and math helpers; ``ebmbench.metrics.registry`` imports
every module of the package, so a new metric is one new file.

A model metric states the capabilities it needs in ``requires`` (as ``SamplerSpec`` does), and calling
the ``Metric`` answers ``NotApplicable`` from it before the metric's function runs. Whatever else a metric
cannot do (no exact density, not 2D) its function raises as ``NotApplicable`` with the reason; every
reason is recorded in the row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ebmbench.registry import Registry

Measured = tuple[float, float | None, dict[str, Any]]  # value, stderr, meta


class NotApplicable(Exception):
    """The metric cannot be computed for this model or dataset; the message says why."""


LADDER_VERDICTS = ("passed", "failed", "untested")
ON = ("samples", "model")


@dataclass(frozen=True)
class Metric:
    """A registered metric: on samples (``on='samples'``) or on the model (``on='model'``).

    ``requires`` (model metrics): the capabilities the model must declare, ``"a | b"`` for either of two;
    empty for none. ``configure`` maps the run's config to keyword arguments of ``fn`` (an estimator's
    budget). ``ladder`` records the metric's verdict on the ordered sample sets of ``ebmbench.metrics.ladder``
    (tests/test_ladder.py checks every "passed"); only a metric that passed may be a ``headline``.
    """

    name: str
    on: str
    fn: Callable[..., Measured]
    cite: str
    configure: Callable[[Any], dict[str, Any]] | None = None
    ladder: str = "untested"
    headline: bool = False
    requires: str = ""

    def __post_init__(self) -> None:
        if self.on not in ON:
            raise ValueError(f"metric {self.name!r}: on={self.on!r}, choose from {ON}")
        if self.ladder not in LADDER_VERDICTS:
            raise ValueError(f"metric {self.name!r}: ladder={self.ladder!r}, choose from {LADDER_VERDICTS}")
        if self.headline and self.ladder != "passed":
            raise ValueError(f"metric {self.name!r}: a headline metric must have passed the ladder")
        if self.requires and self.on != "model":
            raise ValueError(f"metric {self.name!r}: only a model metric can require model capabilities")

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The capabilities of ``requires``, any one of which the model must declare (empty: none needed)."""
        return tuple(c.strip() for c in self.requires.split("|") if c.strip())

    def unmet(self, model: Any) -> str | None:
        """Why ``model`` lacks what ``requires`` asks for, or None when it has it."""
        wanted = self.capabilities
        if not wanted or any(model.has(c) for c in wanted):
            return None
        return (f"needs capability {' or '.join(repr(c) for c in wanted)}; "
                f"the model has {sorted(model.capabilities)}")

    def __call__(self, subject: Any, dataset: Any, **kwargs: Any) -> Measured:
        """The metric on (samples or model, dataset); ``NotApplicable`` from ``requires`` first."""
        if self.on == "model":
            why = self.unmet(subject)
            if why is not None:
                raise NotApplicable(why)
        return self.fn(subject, dataset, **kwargs)

    def kwargs(self, cfg: Any) -> dict[str, Any]:
        return self.configure(cfg) if self.configure is not None and cfg is not None else {}


SAMPLE_METRICS: Registry[Metric] = Registry("sample metric")
MODEL_METRICS: Registry[Metric] = Registry("model metric")


def need_density(dataset: Any) -> Any:
    """The dataset's exact density; ``NotApplicable`` when it has none (images, patches)."""
    if dataset.density is None:
        raise NotApplicable(f"dataset {dataset.name!r} has no exact density")
    return dataset.density


def register(*metrics: Metric) -> None:
    """Add each metric to SAMPLE_METRICS or MODEL_METRICS by its ``on``; a name can be registered once."""
    for metric in metrics:
        (SAMPLE_METRICS if metric.on == "samples" else MODEL_METRICS).register(metric.name, metric)
