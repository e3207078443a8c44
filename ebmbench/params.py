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
import math
import reprlib
from collections.abc import Callable
from typing import Any

# The allowed ranges, by how messages state them ("parameter 'x' must be >= 0, got -1").
RULES: dict[str, Callable[[float], bool]] = {
    ">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1, ">= 2": lambda v: v >= 2, "> 0": lambda v: v > 0,
    "in [0, 1)": lambda v: 0 <= v < 1, "in [0, 1]": lambda v: 0 <= v <= 1, "in (0, 1)": lambda v: 0 < v < 1,
    "< 1": lambda v: v < 1,
}
SHOWN_CHARS = 200  # a value in an error message is cut to about this many characters


def shown(value: Any) -> str:
    """``repr(value)`` bounded in size and depth (reprlib never expands a huge or aliased structure), cut to
    ``SHOWN_CHARS``: what error messages print of a user's value."""
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 3, 8, 8, SHOWN_CHARS, SHOWN_CHARS
    text = r.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def int_list(text: str) -> list[int]:
    """``"32,64"``: comma-separated integers >= 1 (block widths, step counts); raises ValueError saying why."""
    parts = [t.strip() for t in text.split(",")]
    try:
        values = [int(t) for t in parts]
    except ValueError:
        raise ValueError("must be comma-separated integers >= 1, e.g. \"32,64\"") from None
    if not values or min(values) < 1:
        raise ValueError("must be comma-separated integers >= 1, e.g. \"32,64\"")
    return values


# string parameters with a fixed grammar, by name: a parser that raises ValueError(why); "" is allowed by "... or ''"
GRAMMARS: dict[str, Callable[[str], Any]] = {
    "int list": int_list,
    "int list or ''": lambda text: int_list(text) if text else [],
}


def param(default: Any = dataclasses.MISSING, help: str = "", *, range: str | None = None,
          choices: tuple | None = None, grammar: str | None = None, finite: bool = True) -> Any:
    """A dataclass field with ``default`` and metadata ``help`` (required), ``range`` (a key of ``RULES``),
    ``choices`` (the only values accepted), ``grammar`` (a key of ``GRAMMARS``: a string that must parse) and
    ``finite`` (False lets a float be NaN or infinite). The default must satisfy its own rules."""
    if not help.strip():
        raise ValueError("param: every field needs a help text")
    if range is not None and range not in RULES:
        raise ValueError(f"param: unknown range {range!r}; choose from {list(RULES)}")
    if grammar is not None and grammar not in GRAMMARS:
        raise ValueError(f"param: unknown grammar {grammar!r}; choose from {list(GRAMMARS)}")
    if choices is not None:
        choices = tuple(choices)
        if not choices:
            raise ValueError("param: choices, when given, must not be empty")
    if default is not dataclasses.MISSING:
        problem = value_problem("default", default, range, choices, grammar, finite)
        if problem:
            raise ValueError(f"param: the {problem}")
    return dataclasses.field(default=default, metadata={"help": help, "range": range, "choices": choices,
                                                        "grammar": grammar, "finite": finite})


def meta(f: dataclasses.Field) -> tuple[str, str | None, tuple | None]:
    """(help, range, choices) of a field; a field not declared with ``param`` has none of them."""
    return f.metadata.get("help", ""), f.metadata.get("range"), f.metadata.get("choices")


def rules(f: dataclasses.Field) -> tuple[str | None, tuple | None, str | None, bool]:
    """(range, choices, grammar, finite) of a field: everything ``value_problem`` checks."""
    return f.metadata.get("range"), f.metadata.get("choices"), f.metadata.get("grammar"), f.metadata.get("finite", True)


def spell(choices: tuple) -> str:
    """``'a' or 'b'``, ``'a', 'b' or 'c'``, and for more than three ``one of ['a', 'b', ...]``."""
    if len(choices) == 1:
        return repr(choices[0])
    if len(choices) <= 3:
        return ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
    return f"one of {list(choices)}"


def value_problem(name: str, value: Any, range: str | None, choices: tuple | None, grammar: str | None = None,
                  finite: bool = True) -> str | None:
    """``parameter 'name' must be ..., got ...`` when ``value`` is NaN or infinite (unless ``finite`` is False),
    outside its range or choices, or does not parse by its grammar; else None. A range applies to numbers only
    (a bool is not one); a wrong type is the caller's problem."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if finite and isinstance(value, float) and not math.isfinite(value):
        return f"parameter {name!r} must be a finite number, got {value!r}"
    if range is not None and number and not RULES[range](value):
        return f"parameter {name!r} must be {range}, got {shown(value)}"
    if choices is not None and value not in choices:
        return f"parameter {name!r} must be {spell(choices)}, got {shown(value)}"
    if grammar is not None and isinstance(value, str):
        try:
            GRAMMARS[grammar](value)
        except ValueError as why:
            return f"parameter {name!r} {why}; got {shown(value)}"
    return None


def field_problems(cls: type, values: dict[str, Any]) -> list[str]:
    """One line per value in ``values`` outside the range or choices of the field of ``cls`` of that name (in the
    order of ``values``); names that are not fields of ``cls`` are left to the caller."""
    fields_ = {f.name: f for f in dataclasses.fields(cls)}
    problems = []
    for name, value in values.items():
        if name in fields_:
            problem = value_problem(name, value, *rules(fields_[name]))
            if problem:
                problems.append(problem)
    return problems
