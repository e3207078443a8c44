"""Parameter fields with their metadata in one place: help, allowed range and allowed choices.

Every field of ``RunConfig`` and of every method's params dataclass is declared with ``param``::

    steps: int = param(20, "K ULA steps per training iteration", range=">= 1")
    mode: str = param("clamp", "how chains keep to the box", choices=("clamp", "reflect", "none"))

The metadata is what ``config.resolve`` checks (ranges and choices), what ``tools/make_notebooks.py`` writes beside
each parameter, and what a search space can read. A field is still an ordinary dataclass field with the same default:
the metadata changes no value and no config hash. This module imports nothing of ebmbench, so every layer may use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

# The allowed ranges, by how messages state them ("parameter 'x' must be >= 0, got -1").
RULES: dict[str, Callable[[float], bool]] = {
    ">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1, ">= 2": lambda v: v >= 2, "> 0": lambda v: v > 0,
    "in [0, 1)": lambda v: 0 <= v < 1, "in [0, 1]": lambda v: 0 <= v <= 1,
}


def param(default: Any = dataclasses.MISSING, help: str = "", *, range: str | None = None,
          choices: tuple | None = None) -> Any:
    """A dataclass field with ``default`` and metadata ``help`` (required), ``range`` (a key of ``RULES``) and
    ``choices`` (the only values accepted). The default must satisfy its own range and choices."""
    if not help.strip():
        raise ValueError("param: every field needs a help text")
    if range is not None and range not in RULES:
        raise ValueError(f"param: unknown range {range!r}; choose from {list(RULES)}")
    if choices is not None:
        choices = tuple(choices)
        if not choices:
            raise ValueError("param: choices, when given, must not be empty")
    if default is not dataclasses.MISSING:
        problem = value_problem("default", default, range, choices)
        if problem:
            raise ValueError(f"param: the {problem}")
    return dataclasses.field(default=default, metadata={"help": help, "range": range, "choices": choices})


def meta(f: dataclasses.Field) -> tuple[str, str | None, tuple | None]:
    """(help, range, choices) of a field; a field not declared with ``param`` has none of them."""
    return f.metadata.get("help", ""), f.metadata.get("range"), f.metadata.get("choices")


def spell(choices: tuple) -> str:
    """``'a' or 'b'``, ``'a', 'b' or 'c'``, and for more than three ``one of ['a', 'b', ...]``."""
    if len(choices) == 1:
        return repr(choices[0])
    if len(choices) <= 3:
        return ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
    return f"one of {list(choices)}"


def value_problem(name: str, value: Any, range: str | None, choices: tuple | None) -> str | None:
    """``parameter 'name' must be ..., got ...`` when ``value`` is outside its range or choices, else None.
    A range applies to numbers only (a bool is not one); a wrong type is the caller's problem."""
    if (range is not None and isinstance(value, (int, float)) and not isinstance(value, bool)
            and not RULES[range](value)):
        return f"parameter {name!r} must be {range}, got {value!r}"
    if choices is not None and value not in choices:
        return f"parameter {name!r} must be {spell(choices)}, got {value!r}"
    return None


def field_problems(cls: type, values: dict[str, Any]) -> list[str]:
    """One line per value in ``values`` outside the range or choices of the field of ``cls`` of that name (in the
    order of ``values``); names that are not fields of ``cls`` are left to the caller."""
    fields_ = {f.name: f for f in dataclasses.fields(cls)}
    problems = []
    for name, value in values.items():
        if name in fields_:
            _, range_, choices = meta(fields_[name])
            problem = value_problem(name, value, range_, choices)
            if problem:
                problems.append(problem)
    return problems
