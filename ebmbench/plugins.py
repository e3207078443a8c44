"""Plugins: methods, samplers, datasets and metrics registered from outside the package.

An installed distribution declares entry points in the group ``ebmbench.plugins`` (read with
``importlib.metadata``, as pytest and lm-evaluation-harness read theirs); each names a module, which registers
at import as a built-in module does, or a function of no arguments, which is called to register. A suite may also
name modules to import (``plugins: [my_pkg.my_method]``). Either way the entries go into the same registries as
the built-ins and pass the same checks: a plugin that fails to import, takes a registered name or breaks the
protocol is one ``PluginError`` line naming the plugin and what to fix, and the suite does not start.

Each plugin's name, version and a hash of its source files go into the config hash of every run that uses what it
registered (``fingerprint``), so a changed plugin reruns; a run of built-ins only keeps its hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ebmbench.builtins import DATASETS, METHODS, MODEL_METRICS, SAMPLE_METRICS, SAMPLERS, load_dataset
from ebmbench.data.base import Dataset
from ebmbench.kernels import NOTEBOOKS_DIR
from ebmbench.methods.base import MethodSpec
from ebmbench.metrics.base import Metric
from ebmbench.params import meta
from ebmbench.protocol import CAPABILITY_PROTOCOLS, Box, CountingNet, GenerativeModel, SamplerSpec
from ebmbench.registry import Registry

GROUP = "ebmbench.plugins"  # the entry-point group
PARAM = "plugins"  # the notebook parameter that passes a suite's plugin modules to its kernels (comma-separated)
GENERIC_NOTEBOOK = "run_generic.ipynb"  # a method of a family without a notebook of its own runs here
REGISTRIES: dict[str, Registry] = {"method": METHODS, "sampler": SAMPLERS, "dataset": DATASETS,
                                   "sample metric": SAMPLE_METRICS, "model metric": MODEL_METRICS}
# capabilities promised by a method rather than a Protocol of protocol.py: the method each one needs
METHOD_CAPABILITIES = {"log_prob": ("log_prob",), "generate": ("generate", "latent_shape"), "replay_buffer": ()}


class PluginError(ValueError):
    """A plugin that cannot be used; the one-line message names the plugin, the problem and the fix."""


@dataclass(eq=False)  # hashed by identity: one object per loaded plugin
class Plugin:
    """One loaded plugin: where it came from, its version, its source hash and what it registered."""

    label: str  # "entry point 'x' of dist-name" or "module 'pkg.mod'"
    name: str  # the distribution's name, else the top-level module's
    version: str
    source_hash: str
    registered: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)

    def identity(self) -> dict[str, str]:
        return {"version": self.version, "source_hash": self.source_hash}


LOADED: dict[str, Plugin] = {}  # by label: a plugin is loaded once per process
OWNERS: dict[tuple[str, str], Plugin] = {}  # (kind, name) -> the plugin that registered it


# ---------------------------------------------------------------- provenance

def source_hash(module: types.ModuleType) -> str:
    """sha256 over the .py files of the module's top-level package (or the module's one file), sorted by path."""
    top = sys.modules.get(module.__name__.split(".")[0], module)
    file = getattr(top, "__file__", None)
    if not file:
        return "unknown"
    root = Path(file).parent if Path(file).name == "__init__.py" else Path(file)
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    h = hashlib.sha256()
    for path in files:
        h.update(str(path.relative_to(root.parent)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def distribution_of(module_name: str) -> tuple[str, str]:
    """(name, version) of the installed distribution that provides the module's top-level package, or the
    top-level name and 'not installed' for a module that is only on sys.path."""
    top = module_name.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        return dist, metadata.version(dist)
    return top, "not installed"


# ---------------------------------------------------------------- loading

def _snapshot() -> dict[str, set[str]]:
    return {kind: set(reg.names()) for kind, reg in REGISTRIES.items()}


def _rollback(before: dict[str, set[str]]) -> None:
    """Remove what a refused plugin registered, so that nothing of it is used."""
    for kind, reg in REGISTRIES.items():
        for name in set(reg.names()) - before[kind]:
            reg.remove(name)


def _load(label: str, loader: Callable[[], Any], dist: tuple[str, str] | None) -> Plugin:
    """Import (and call, for a function) one plugin; check everything it registered. Raises PluginError."""
    if label in LOADED:
        return LOADED[label]
    before = _snapshot()
    try:
        obj = loader()
        if callable(obj) and not isinstance(obj, (types.ModuleType, type)):
            obj()
    except ValueError as err:  # Registry.register: a taken name
        _rollback(before)
        if "already registered" in str(err):
            raise PluginError(f"plugin {label}: {err}; rename it (a name is one thing across ebmbench and its "
                              "plugins)") from None
        raise PluginError(f"plugin {label} failed to load: ValueError: {err}; fix the plugin") from None
    except Exception as err:
        _rollback(before)
        raise PluginError(f"plugin {label} failed to load: {type(err).__name__}: {err}; fix or uninstall it") from None
    module = obj if isinstance(obj, types.ModuleType) else sys.modules.get(getattr(obj, "__module__", "") or "")
    name, version = dist or distribution_of(module.__name__ if module else label)
    plugin = Plugin(label, name, version, source_hash(module) if module else "unknown")
    plugin.registered = [(kind, n) for kind, reg in REGISTRIES.items() for n in sorted(set(reg.names()) - before[kind])]
    try:
        for kind, n in plugin.registered:
            check(kind, REGISTRIES[kind].get(n))
    except PluginError as err:
        _rollback(before)
        raise PluginError(f"plugin {label}: {err}") from None
    LOADED[label] = plugin
    OWNERS.update({key: plugin for key in plugin.registered})
    return plugin


def entry_points() -> list[metadata.EntryPoint]:
    """The installed entry points of the group ``ebmbench.plugins``, by name."""
    return sorted(metadata.entry_points(group=GROUP), key=lambda ep: ep.name)


def load_entry_points() -> list[Plugin]:
    """Load every installed plugin (entry-point group ``ebmbench.plugins``)."""
    out = []
    for ep in entry_points():
        dist = (ep.dist.name, ep.dist.version) if ep.dist is not None else None
        out.append(_load(f"entry point {ep.name!r} ({ep.value}, {dist[0] if dist else 'no distribution'})",
                         ep.load, dist))
    return out


def load_module(name: str) -> Plugin:
    """Import one plugin module by its dotted name (a suite's ``plugins:`` list)."""
    if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
        raise PluginError(f"plugin {name!r}: not a module name; write a dotted module name, e.g. my_pkg.my_method")
    return _load(f"module {name!r}", lambda: importlib.import_module(name), None)


def load(modules: Iterable[str] | str = ()) -> list[Plugin]:
    """Every installed entry-point plugin, then the named modules (a list, or comma-separated)."""
    names = [m.strip() for m in modules.split(",") if m.strip()] if isinstance(modules, str) else list(modules)
    return [*load_entry_points(), *(load_module(m) for m in names)]


# ---------------------------------------------------------------- checks: the built-ins' contract

def check(kind: str, item: Any) -> None:
    """What a registry entry must be; PluginError with the problem otherwise."""
    if kind == "method":
        check_method(item)
    elif kind == "sampler":
        check_sampler(item)
    elif kind == "dataset":
        if not callable(item):
            raise PluginError(f"dataset entry is a {type(item).__name__}; register a function of no arguments that "
                              "returns an ebmbench.data.base.Dataset")
    elif not isinstance(item, Metric):
        raise PluginError(f"{kind} entry is a {type(item).__name__}; register an ebmbench.metrics.base.Metric")


def known_capabilities(besides: str = "") -> set[str]:
    """Every capability a protocol, a metric or a sampler (other than ``besides``) knows."""
    caps = set(CAPABILITY_PROTOCOLS) | set(METHOD_CAPABILITIES)
    caps |= {SAMPLERS.get(s).requires for s in SAMPLERS.names() if s != besides}
    for reg in (MODEL_METRICS,):
        caps |= {c for m in reg.names() for c in reg.get(m).capabilities}
    return caps


def check_sampler(spec: Any) -> None:
    if not isinstance(spec, SamplerSpec):
        raise PluginError(f"sampler entry is a {type(spec).__name__}; register an ebmbench.protocol.SamplerSpec")
    known = known_capabilities(besides=spec.name)
    if spec.requires not in known:
        raise PluginError(f"sampler {spec.name!r} requires unknown capability {spec.requires!r}; choose from "
                          f"{sorted(known)}")
    params = list(inspect.signature(spec.fn).parameters.values())
    if [p.name for p in params[:3]] != ["model", "n", "generator"]:
        raise PluginError(f"sampler {spec.name!r}: its function must be fn(model, n, generator, **budget), got "
                          f"fn({', '.join(p.name for p in params)})")
    no_default = [p.name for p in params[3:] if p.default is inspect.Parameter.empty]
    if no_default:
        raise PluginError(f"sampler {spec.name!r}: budget parameters {no_default} need defaults")


def check_method(spec: Any) -> None:
    if not isinstance(spec, MethodSpec):
        raise PluginError(f"method entry is a {type(spec).__name__}; register an ebmbench.methods.base.MethodSpec")
    if not dataclasses.is_dataclass(spec.params):
        raise PluginError(f"method {spec.name!r}: params {spec.params!r} is not a dataclass; declare its fields "
                          "with ebmbench.params.param")
    bare = [f.name for f in dataclasses.fields(spec.params) if not meta(f)[0]]
    if bare:
        raise PluginError(f"method {spec.name!r}: fields {bare} of {spec.params.__name__} have no help; declare "
                          "them with ebmbench.params.param(default, help, range=..., choices=...)")
    try:
        plan = spec.eval_samplers(spec.params())
    except Exception as err:
        raise PluginError(f"method {spec.name!r}: eval_samplers(default params) raised {type(err).__name__}: "
                          f"{err}") from None
    unknown = sorted({s for s, _ in plan} - set(SAMPLERS.names()))
    if unknown:
        raise PluginError(f"method {spec.name!r} evaluates unregistered sampler(s) {unknown}; register them first "
                          "or choose from `ebmbench list`")
    notebook_for(spec)


def protocol_problems(model: Any, dataset: Dataset, plan: list[tuple[str, dict]]) -> list[str]:
    """How a built model breaks the protocol: not a GenerativeModel, no counted net, a wrong support, a declared
    capability whose methods are missing, an evaluation sampler whose capability it lacks."""
    if not isinstance(model, GenerativeModel):
        return [f"build returned a {type(model).__name__}, not an ebmbench.protocol.GenerativeModel"]
    problems = []
    if not isinstance(model.net, CountingNet):
        problems.append("model.net is not a CountingNet (call GenerativeModel.__init__(net, support)): its NFE "
                        "would not be counted")
    if not isinstance(model.support, Box) or tuple(model.support.shape) != tuple(dataset.shape):
        problems.append(f"support {model.support!r} is not a Box of the dataset's shape {dataset.shape}")
    unknown = sorted(set(model.capabilities) - known_capabilities())
    if unknown:
        problems.append(f"declares unknown capabilities {unknown}")
    for cap in sorted(set(model.capabilities) & set(CAPABILITY_PROTOCOLS)):
        if not isinstance(model, CAPABILITY_PROTOCOLS[cap]):
            problems.append(f"declares {cap!r} but does not implement {CAPABILITY_PROTOCOLS[cap].__name__}")
    for cap in sorted(set(model.capabilities) & set(METHOD_CAPABILITIES)):
        missing = [m for m in METHOD_CAPABILITIES[cap] if not hasattr(model, m)]
        if missing:
            problems.append(f"declares {cap!r} but has no {missing}")
    for sampler, _ in plan:
        need = SAMPLERS.get(sampler).requires
        if not model.has(need):
            problems.append(f"evaluates sampler {sampler!r}, which needs capability {need!r}; the model has "
                            f"{sorted(model.capabilities)}")
    return problems


def check_run(cfg: Any) -> None:
    """Build the model of a run that uses a plugin's method or dataset, and check it keeps the protocol."""
    owner = OWNERS.get(("method", cfg.method)) or OWNERS.get(("dataset", cfg.dataset))
    if owner is None:
        return
    spec = METHODS.get(cfg.method)
    try:
        dataset = load_dataset(cfg.dataset)
    except Exception as err:
        raise PluginError(f"plugin {owner.label}: dataset {cfg.dataset!r} cannot be built: {type(err).__name__}: "
                          f"{err}") from None
    if not isinstance(dataset, Dataset):
        raise PluginError(f"plugin {owner.label}: dataset {cfg.dataset!r} built a {type(dataset).__name__}, not an "
                          "ebmbench.data.base.Dataset")
    try:
        model = spec.build(dataset, cfg.method_params)
    except Exception as err:
        raise PluginError(f"plugin {owner.label}: method {cfg.method!r} cannot build on {cfg.dataset!r}: "
                          f"{type(err).__name__}: {err}") from None
    problems = protocol_problems(model, dataset, spec.eval_samplers(cfg.method_params))
    if problems:
        raise PluginError(f"plugin {owner.label}: method {cfg.method!r} on {cfg.dataset!r} breaks the protocol: "
                          + "; ".join(problems))


# ---------------------------------------------------------------- notebooks and config hashes

def notebook_for(spec: MethodSpec, folder: Path = NOTEBOOKS_DIR) -> Path:
    """The method's notebook: its own (a path, or a name under ``folder``), else its family's, else the generic."""
    if spec.notebook:
        own = Path(spec.notebook)
        path = own if own.is_absolute() else folder / own
        if not path.is_file():
            raise PluginError(f"method {spec.name!r}: notebook {spec.notebook!r} does not exist; give an absolute "
                              "path, a notebook under notebooks/, or '' for its family's")
        return path
    family = folder / f"train_{spec.family}.ipynb"
    return family if family.is_file() else folder / GENERIC_NOTEBOOK


def fingerprint(cfg: Any) -> dict[str, dict[str, str]]:
    """Name -> version and source hash of every plugin the run uses: its method's, its dataset's, its evaluation
    samplers' and every plugin metric's (every metric runs on every run). Empty for built-ins only."""
    if not OWNERS:
        return {}
    keys = [("method", cfg.method), ("dataset", cfg.dataset)]
    try:
        keys += [("sampler", s) for s, _ in METHODS.get(cfg.method).eval_samplers(cfg.method_params)]
    except Exception:  # an unplannable method is reported by config.resolve
        pass
    used = {OWNERS[k] for k in keys if k in OWNERS}
    used |= {p for (kind, _), p in OWNERS.items() if kind.endswith("metric")}
    return {p.name: p.identity() for p in sorted(used, key=lambda p: p.name)}


def unload() -> None:
    """Forget every loaded plugin and take out what it registered (tests; a process that loads plugins anew)."""
    for plugin in LOADED.values():
        for kind, name in plugin.registered:
            REGISTRIES[kind].remove(name)
    LOADED.clear()
    OWNERS.clear()


def described() -> list[str]:
    """One line per loaded plugin, for `ebmbench list`."""
    return [f"plugin {p.name} {p.version} (source {p.source_hash}, {p.label}): "
            + ", ".join(f"{k} {n}" for k, n in p.registered) for p in LOADED.values()]
