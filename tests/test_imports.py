"""One direction of imports, checked by parsing them (ast), and a metric added in one file.

Layers: data, nets, metrics and samplers never import from methods (a model's family); metrics reach a model
only through the capability protocols of ebmbench/protocol.py. No ebmbench module imports itself back
through a chain of imports (counting imports inside functions and under TYPE_CHECKING too: a lazy import
hides a cycle, it does not remove it).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ebmbench"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The ebmbench module an imported name lives in: the longest known module prefix of it."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules():
            return candidate
    return None


@cache
def imports_of(module: str) -> frozenset[str]:
    """Every ebmbench module ``module`` imports, anywhere in its file (top level, functions, TYPE_CHECKING)."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            target = resolve(name)
            if target is not None and target != module and name.split(".")[0] == "ebmbench":
                found.add(target)
    # importing ebmbench.x.y also imports the package ebmbench.x: packages are left out (their __init__ is empty)
    return frozenset(t for t in found if modules()[t].name != "__init__.py")


def importers_of(layer: str, forbidden: str) -> list[str]:
    return sorted(f"{m} imports {t}" for m in modules() if m.startswith(layer + ".") or m == layer
                  for t in imports_of(m) if t == forbidden or t.startswith(forbidden + "."))


@pytest.mark.parametrize("layer", ["ebmbench.metrics", "ebmbench.data", "ebmbench.nets"])
def test_lower_layers_never_import_a_method(layer: str) -> None:
    assert importers_of(layer, "ebmbench.methods") == []


def test_metric_modules_import_base_not_the_registry() -> None:
    """ebmbench.metrics.registry imports every metric module (by name, invisible to ast): none may import it back."""
    back = sorted(m for m in modules() if m.startswith("ebmbench.metrics.")
                  for t in imports_of(m) if t in ("ebmbench.metrics.registry", "ebmbench.builtins"))
    assert back == []


def test_samplers_never_import_a_method_or_a_metric() -> None:
    for layer in ("ebmbench.methods", "ebmbench.metrics"):
        offenders = importers_of("ebmbench.samplers", layer)
        assert not offenders, f"samplers import {layer}: " + "; ".join(offenders)


def find_cycle() -> list[str] | None:
    """One import cycle among ebmbench modules (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(imports_of(m)):
            if state.get(t) == 1:
                return [*path[path.index(t):], t]
            if t not in state and (cycle := visit(t)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in modules():
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle()
    assert cycle is None, " -> ".join(cycle or [])


def test_the_import_parser_sees_what_it_should() -> None:
    """The parser itself: absolute, relative, lazy and TYPE_CHECKING imports all count."""
    assert "ebmbench.metrics.base" in imports_of("ebmbench.metrics.ais")
    assert "ebmbench.protocol" in imports_of("ebmbench.metrics.ais")
    assert "ebmbench.data.toy2d" in imports_of("ebmbench.metrics.sample_metrics")  # a lazy import
    assert "ebmbench.metrics.base" in imports_of("ebmbench.metrics.registry")
    assert not any(t.startswith("ebmbench.methods") for t in imports_of("ebmbench.metrics.ais"))


# ---------------------------------------------------------------- a new metric is one file

NEW_METRIC = '''
"""A metric added by one file: nothing else is edited."""

import torch

from ebmbench.metrics.base import Metric, register


def mean_energy(model, dataset, max_points: int = 0):
    x = dataset.test[: max_points or None].to(model.device)
    with torch.no_grad():
        e = model.energy(x).double()
    return float(e.mean()), float(e.std() / len(e) ** 0.5), {"n": len(e)}


register(Metric("mean_test_energy", "model", mean_energy, "the mean energy of the test split", requires="energy"))
'''


def test_a_metric_is_one_new_file(tmp_path: Path) -> None:
    """A module dropped into the metrics package registers itself; the registry answers not_applicable
    from its ``requires`` for a model without the capability, with no code of the metric run."""
    import torch

    import ebmbench.metrics
    from ebmbench.builtins import load_dataset
    from ebmbench.config import RunConfig
    from ebmbench.metrics.registry import MODEL_METRICS, load_metric_modules
    from ebmbench.run import measure

    (tmp_path / "mean_test_energy.py").write_text(textwrap.dedent(NEW_METRIC))
    ebmbench.metrics.__path__.append(str(tmp_path))  # as if the file were in ebmbench/metrics/
    try:
        assert "mean_test_energy" in load_metric_modules()
        metric = MODEL_METRICS.get("mean_test_energy")
        assert metric.requires == "energy"

        dataset = load_dataset("eight_gaussians")
        from ebmbench.builtins import METHODS

        cfg = RunConfig(dataset="eight_gaussians", method="ddpm")
        ddpm = METHODS.get("ddpm").build(dataset, METHODS.get("ddpm").params())
        status, reason = measure(metric, ddpm, dataset, cfg=cfg)
        assert status == "not_applicable"
        assert reason == "needs capability 'energy'; the model has ['eps_prediction', 'score']"

        ebm = METHODS.get("pcd_ebm").build(dataset, METHODS.get("pcd_ebm").params())
        status, (value, stderr, meta) = measure(metric, ebm, dataset, cfg=cfg)
        assert status == "ok" and meta["n"] == len(dataset.test) and torch.isfinite(torch.tensor(value))
    finally:
        ebmbench.metrics.__path__.remove(str(tmp_path))
        MODEL_METRICS._items.pop("mean_test_energy", None)
        sys.modules.pop("ebmbench.metrics.mean_test_energy", None)


def test_every_model_metric_states_what_it_needs() -> None:
    """The capabilities a model metric names in ``requires`` exist (some method declares each)."""
    from ebmbench.builtins import METHODS
    from ebmbench.metrics.registry import MODEL_METRICS

    builders = {importlib.import_module(METHODS.get(m).build.__module__) for m in METHODS.names()}
    declared = set()
    for module in builders:
        for obj in vars(module).values():
            declared |= set(getattr(obj, "capabilities", frozenset()) if isinstance(obj, type) else ())
    for name in MODEL_METRICS.names():
        assert set(MODEL_METRICS.get(name).capabilities) <= declared, name


def test_suite_figures_and_the_report_never_load_the_run_machinery() -> None:
    for forbidden in ("ebmbench.run", "ebmbench.methods", "ebmbench.samplers", "ebmbench.training",
                      "ebmbench.builtins"):
        offenders = importers_of("ebmbench.plots.suite", forbidden)
        assert not offenders, f"plots/suite.py imports {forbidden}: " + "; ".join(offenders)
    code = ("import sys, ebmbench.report; print(sorted(m for m in sys.modules if m.startswith(("
            "'ebmbench.run', 'ebmbench.methods', 'ebmbench.samplers', 'ebmbench.training', 'ebmbench.builtins'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", f"import ebmbench.report loaded {out.stdout.strip()}"
