"""The committed notebooks are exactly what tools/make_notebooks.py writes from the dataclasses.

After a change to RunConfig or a method's params dataclass: ``python tools/make_notebooks.py``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import nbformat
import pytest

from ebmbench import config as config_mod

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "python tools/make_notebooks.py"


def load_generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = load_generator()
TRAIN = [name for name in GEN.NOTEBOOKS if name.startswith("train_")]


def cells(text: str) -> list[tuple]:
    return [(c.cell_type, c.source, dict(c.metadata)) for c in nbformat.reads(text, as_version=4).cells]


@pytest.mark.parametrize("name", list(GEN.NOTEBOOKS))
def test_committed_notebook_is_the_generators_output(name: str) -> None:
    committed = (ROOT / "notebooks" / f"{name}.ipynb").read_text()
    generated = GEN.render(name)
    if committed == generated:
        return
    assert cells(committed) == cells(generated), f"notebooks/{name}.ipynb differs from its generator: {REGENERATE}"
    if not name.startswith("train_"):  # same cells, older random ids: written before the ids were stable
        pytest.xfail(f"notebooks/{name}.ipynb has the generator's cells but random cell ids; its owner regenerates "
                     f"it with `{REGENERATE} {name}`")
    pytest.fail(f"notebooks/{name}.ipynb differs from its generator only in cell ids: {REGENERATE} {name}")


def test_cell_ids_are_stable() -> None:
    for name in GEN.NOTEBOOKS:
        assert GEN.render(name) == GEN.render(name)
        assert [c.id for c in GEN.build(name).cells][:2] == [f"{name}-00", f"{name}-01"]


def parameters(name: str) -> dict:
    """The names the notebook's parameters cell defines, as the notebook's globals would hold them."""
    cell = next(c for c in GEN.build(name).cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)  # noqa: S102  (our own generated cell: assignments of literals)
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


@pytest.mark.parametrize("name", TRAIN)
def test_parameters_cell_holds_the_dataclass_defaults_for_every_method_of_the_notebook(name: str) -> None:
    """Run with only dataset and method changed, every method of the notebook gets its dataclass defaults (the
    one exception, results_dir, is relative to notebooks/)."""
    params = parameters(name)
    assert params["results_dir"] == "../results"
    methods = GEN.methods_of(name)
    assert params["method"] in methods
    for method in methods:
        from_notebook = config_mod.resolve({**params, "method": method})
        defaults = config_mod.resolve({"dataset": params["dataset"], "method": method, "results_dir": "../results"})
        assert from_notebook == defaults, method
        assert dataclasses.asdict(from_notebook.method_params) == dataclasses.asdict(defaults.method_params)


@pytest.mark.parametrize("name", TRAIN)
def test_papermill_reads_every_parameter_with_its_type(name: str) -> None:
    """papermill skips, with a warning in every run, a parameter line it cannot parse (a second "=")."""
    from papermill.translators import PythonTranslator

    cell = next(c for c in GEN.build(name).cells if "parameters" in c.metadata.get("tags", []))
    read = {p.name: p.inferred_type_name for p in PythonTranslator.inspect(cell)}
    assert set(read) == set(parameters(name))
    assert all(kind in ("int", "float", "str", "bool") for kind in read.values()), read
