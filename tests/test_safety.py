"""Nothing the package reads can run code: a scan of every module's syntax tree (issue 22, item 1).

The fix for crafted checkpoints was undone once by code added after it (compose and study loaded checkpoints with
``weights_only=False``). This scan holds the rule for every module, a helper's included: ``torch.load`` only in
``ebmbench/serialization.py`` (``weights_only=True``, onto the CPU), and nowhere ``weights_only=False``,
``pickle.load``/``loads``, an ``Unpickler`` without its own ``find_class``, ``yaml`` loading other than
``safe_load``, numpy's ``allow_pickle=True``, ``eval``/``exec``, ``os.system``/``os.popen`` or ``shell=True``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("ebmbench", "tools", "benchmarks", "examples")
LOADER = ROOT / "ebmbench" / "serialization.py"
UNSAFE_YAML = {"load", "unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"}


def dotted(node: ast.AST) -> str:
    """``a.b.c`` of a Name/Attribute chain ('' for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def findings(source: str, path: Path) -> list[str]:
    """Every unsafe construct in ``source``, as 'path:line: what'."""
    out = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name == "torch.load" and path != LOADER:
                out.append(f"{where}: torch.load outside ebmbench/serialization.py (use load_tensors/load_checkpoint)")
            weights = keywords.get("weights_only")
            if isinstance(weights, ast.Constant) and weights.value is False:
                out.append(f"{where}: weights_only=False")
            pickles = keywords.get("allow_pickle")
            if isinstance(pickles, ast.Constant) and pickles.value is True:
                out.append(f"{where}: allow_pickle=True (numpy unpickles objects)")
            shell = keywords.get("shell")
            if isinstance(shell, ast.Constant) and shell.value is True:
                out.append(f"{where}: shell=True")
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "dill.loads",
                        "cloudpickle.load", "cloudpickle.loads", "marshal.load", "marshal.loads"):
                out.append(f"{where}: {name}")
            if name.startswith("yaml.") and name.split(".", 1)[1] in UNSAFE_YAML:
                out.append(f"{where}: {name} (use yaml.safe_load)")
            if name in ("eval", "exec", "os.system", "os.popen", "builtins.eval", "builtins.exec"):
                out.append(f"{where}: {name}")
        if isinstance(node, ast.ClassDef) and any(dotted(b).endswith("Unpickler") for b in node.bases):
            if not any(isinstance(b, ast.FunctionDef) and b.name == "find_class" for b in node.body):
                out.append(f"{where}: Unpickler subclass {node.name} without its own find_class")
        if isinstance(node, ast.ImportFrom) and node.module == "pickle" and any(a.name in ("load", "loads")
                                                                               for a in node.names):
            out.append(f"{where}: from pickle import load(s)")
    return out


def package_files() -> list[Path]:
    return sorted(p for folder in SCANNED if (ROOT / folder).is_dir() for p in (ROOT / folder).rglob("*.py"))


def test_no_module_can_run_code_from_a_file_it_reads():
    found = [f for path in package_files() for f in findings(path.read_text(), path)]
    assert not found, "\n".join(found)
    assert LOADER in package_files() and len(package_files()) > 80  # the scan sees the package


@pytest.mark.parametrize("source, expected", [
    ("import torch\nckpt = torch.load(p, map_location='cpu', weights_only=False)", "torch.load outside"),
    ("import torch\nx = torch.load(p)", "torch.load outside"),
    ("from ebmbench.serialization import load_tensors\nx = load_tensors(p, weights_only=False)", "weights_only=False"),
    ("import pickle\nx = pickle.loads(b)", "pickle.loads"),
    ("from pickle import load", "from pickle import load(s)"),
    ("import pickle\nclass U(pickle.Unpickler):\n    pass", "without its own find_class"),
    ("import yaml\nyaml.load(text, Loader=yaml.Loader)", "yaml.load (use yaml.safe_load)"),
    ("import numpy as np\nx = np.load(p, allow_pickle=True)", "allow_pickle=True"),
    ("exec(code)", "exec"), ("eval('1')", "eval"),
    ("import subprocess\nsubprocess.run('ls', shell=True)", "shell=True"),
    ("import os\nos.system('ls')", "os.system"),
])
def test_the_scan_finds_what_it_forbids(source, expected, tmp_path):
    """The scanner itself: each forbidden construct in a module is found (compose.py's old line among them)."""
    found = findings(source, tmp_path / "module.py")
    assert any(expected in f for f in found), found


def test_the_scan_allows_the_safe_forms(tmp_path):
    source = ("import pickle, yaml\nfrom ebmbench.serialization import load_tensors\n"
              "class Batch(pickle.Unpickler):\n    def find_class(self, module, name):\n        raise ValueError\n"
              "doc = yaml.safe_load(text)\nx = load_tensors(p)\n"
              "import numpy as np\ny = np.load(p, allow_pickle=False)\n")
    assert findings(source, tmp_path / "module.py") == []
