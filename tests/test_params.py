"""Field metadata in one place (issue 13, item 4): every parameter of RunConfig and of every method's params
dataclass is declared with ``ebmbench.params.param`` (help, range, choices), and config checks, notebook help and
config hashes all read it from there."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ebmbench import config
from ebmbench.builtins import METHODS, load_dataset
from ebmbench.params import RULES, field_problems, meta, param, spell, value_problem
from ebmbench.protocol import Box

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {cls.__name__: cls for cls in (config.RunConfig, *(METHODS.get(m).params for m in METHODS.names()))}
FIELDS = [(name, f) for name, cls in CLASSES.items() for f in dataclasses.fields(cls)]
CHOICE_FIELDS = [(name, f) for name, f in FIELDS if meta(f)[2] is not None]


def a_method_of(class_name: str) -> str:
    """A registered method whose params dataclass is ``class_name`` (pcd_ebm for RunConfig)."""
    if class_name == "RunConfig":
        return "pcd_ebm"
    return next(m for m in METHODS.names() if METHODS.get(m).params.__name__ == class_name)


# ---------------------------------------------------------------- every field declares its metadata


@pytest.mark.parametrize(("cls", "f"), FIELDS, ids=[f"{c}.{f.name}" for c, f in FIELDS])
def test_every_field_has_help_and_a_known_range(cls: str, f: dataclasses.Field) -> None:
    help_, range_, choices = meta(f)
    assert help_.strip(), f"{cls}.{f.name} has no help: declare it with ebmbench.params.param(default, help)"
    assert range_ is None or range_ in RULES
    assert choices is None or (isinstance(choices, tuple) and choices)


@pytest.mark.parametrize(("cls", "f"), FIELDS, ids=[f"{c}.{f.name}" for c, f in FIELDS])
def test_every_default_satisfies_its_own_range_and_choices(cls: str, f: dataclasses.Field) -> None:
    if f.default is dataclasses.MISSING:  # dataset and method are required
        assert f.name in ("dataset", "method")
        return
    _, range_, choices = meta(f)
    if range_ is not None:
        assert isinstance(f.default, (int, float)) and not isinstance(f.default, bool), f"{cls}.{f.name}"
        assert RULES[range_](f.default), f"{cls}.{f.name} = {f.default!r} is not {range_}"
    if choices is not None:
        assert f.default in choices, f"{cls}.{f.name} = {f.default!r} not in {choices}"
    assert value_problem(f.name, f.default, range_, choices) is None


def test_a_name_has_one_range_in_every_dataclass() -> None:
    """The same name means the same thing in every params dataclass, so it has the same range (or none)."""
    seen: dict[str, set] = {}
    for _, f in FIELDS:
        seen.setdefault(f.name, set()).add(meta(f)[1])
    mixed = {name: r for name, r in seen.items() if len(r) > 1}
    assert not mixed, f"one name, several ranges: {mixed}"
    assert config.ranges() == {name: r.pop() for name, r in seen.items() if r != {None}}


def test_ranges_cover_the_numeric_parameters_checked_before() -> None:
    """The ranges that lived in config.RANGES now live on the fields: a few of them, spelled out."""
    ranges = config.ranges()
    assert ranges["seed"] == ">= 0" and ranges["train_steps"] == ">= 1" and ranges["lr"] == "> 0"
    assert ranges["ema_decay"] == "in [0, 1)" and ranges["ddim_eta"] == "in [0, 1]"
    assert ranges["n_couplings"] == ">= 2" and ranges["langevin_grad_clip"] == ">= 0"
    assert not hasattr(config, "RANGES")


# ---------------------------------------------------------------- choices are checked, naming them


@pytest.mark.parametrize(("cls", "f"), CHOICE_FIELDS, ids=[f"{c}.{f.name}" for c, f in CHOICE_FIELDS])
def test_a_value_outside_the_choices_is_a_config_error_naming_them(cls: str, f: dataclasses.Field) -> None:
    choices = meta(f)[2]
    params = {"dataset": "eight_gaussians", "method": a_method_of(cls), f.name: "nosuch"}
    with pytest.raises(config.ConfigError) as err:
        config.resolve(params)
    line = next(p for p in err.value.problems if p.startswith(f"parameter {f.name!r}"))
    assert line == f"parameter {f.name!r} must be {spell(choices)}, got 'nosuch'"
    assert all(repr(c) in line for c in choices)
    for choice in choices:  # and each choice is accepted (device 'cuda' only where torch sees a GPU)
        if f.name == "device" and choice == "cuda" and not torch.cuda.is_available():
            continue
        cfg = config.resolve({**params, f.name: choice})
        owner = cfg if cls == "RunConfig" else cfg.method_params
        assert getattr(owner, f.name) in (choice, "cpu", "cuda")


def test_the_messages_spell_the_choices_as_before() -> None:
    """Two or three choices read 'a', 'b' or 'c'; more read one of [...] (today's compile and device messages)."""
    with pytest.raises(config.ConfigError, match=r"parameter 'eval_weights' must be 'ema' or 'raw', got 'best'"):
        config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "eval_weights": "best"})
    with pytest.raises(config.ConfigError, match=r"parameter 'compile' must be one of \['off', 'default', "):
        config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "compile": "fast"})
    with pytest.raises(config.ConfigError) as err:
        config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "device": "tpu"})
    assert err.value.problems == ["parameter 'device' must be 'cpu', 'cuda' or 'auto', got 'tpu'"]  # said once


def test_range_and_choice_problems_are_reported_at_once() -> None:
    params = {"dataset": "eight_gaussians", "method": "ncsn", "compile": "fast", "lr": -1.0, "init": "zeros",
              "n_sigmas": 0, "support_mode": "wrap"}
    with pytest.raises(config.ConfigError) as err:
        config.resolve(params)
    named = sorted(p.split("'")[1] for p in err.value.problems)
    assert named == ["compile", "init", "lr", "n_sigmas", "support_mode"]
    assert "parameter 'n_sigmas' must be >= 1, got 0" in err.value.problems
    assert "parameter 'support_mode' must be 'none', 'clamp' or 'reflect', got 'wrap'" in err.value.problems


def test_the_same_name_can_have_other_choices_in_another_method() -> None:
    """support_mode: Langevin chains of an EBM and the one-shot sampler of a GAN take the same modes; the check
    reads the field of the method's own dataclass, not a table keyed by name."""
    assert config.resolve({"dataset": "eight_gaussians", "method": "dcgan", "support_mode": "none"})
    assert config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "support_mode": "none"})
    assert field_problems(CLASSES["DDPMParams"], {"support_mode": "anything"}) == []  # not a DDPM field


# ---------------------------------------------------------------- the choices are what the code accepts


def test_every_support_mode_choice_is_a_projection_of_the_box() -> None:
    box, x = Box(-1.0, 1.0, (2,)), torch.tensor([[0.5, 3.0]])
    for name, f in CHOICE_FIELDS:
        if f.name == "support_mode":
            for mode in meta(f)[2]:
                assert box.project(x, mode).shape == x.shape, (name, mode)


def test_every_ddpm_schedule_choice_builds_every_scheduler_the_samplers_use() -> None:
    spec, dataset = METHODS.get("ddpm"), load_dataset("eight_gaussians")
    fields_ = {f.name: f for f in dataclasses.fields(spec.params)}
    for key in ("beta_schedule", "variance_type", "timestep_spacing", "prediction_type"):
        for choice in meta(fields_[key])[2]:
            model = spec.build(dataset, spec.params(hidden=8, depth=1, **{key: choice}))
            for make in (model.make_ddpm_scheduler, model.make_ddim_scheduler, model.make_dpm_scheduler):
                scheduler = make()
                scheduler.set_timesteps(10)
                x = torch.zeros(3, 2)
                step = scheduler.step(torch.zeros_like(x), int(scheduler.timesteps[0]), x,
                                      generator=torch.Generator().manual_seed(0))
                assert torch.isfinite(step.prev_sample).all(), (key, choice, make.__name__)


def test_the_arch_choices_are_the_paper_networks_of_each_kind() -> None:
    from ebmbench.nets import cifar

    archs = {cls: set(meta(f)[2]) - {"default"} for cls, f in CHOICE_FIELDS if f.name == "arch"}
    assert archs["DDPMParams"] == set(cifar.EPS_ARCHS) and archs["NCSNParams"] == set(cifar.SCORE_NGF)
    assert archs["PCDParams"] == set(cifar.ENERGY_ARCHS) and archs["DCGANParams"] == set(cifar.GAN_ARCHS)
    assert set().union(*archs.values()) == set(cifar.ALL_ARCHS)


# ---------------------------------------------------------------- metadata is not a value: hashes unchanged


def test_config_hash_depends_only_on_the_values() -> None:
    """The hash is of the values (to_dict), never of the metadata: two configs built apart hash alike, and the
    hash is the sha256 of the plain values' JSON."""
    a = config.resolve({"dataset": "eight_gaussians", "method": "ddpm", "ddim_steps": 7})
    params = METHODS.get("ddpm").params(ddim_steps=7)
    b = config.RunConfig(dataset="eight_gaussians", method="ddpm", method_params=params)
    assert a.config_hash == b.config_hash
    plain = {f.name: getattr(b, f.name) for f in dataclasses.fields(b) if f.name not in ("method_params", "suite",
                                                                                       "results_dir")}
    plain["method_params"] = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    plain["device"] = a.device  # auto is hashed as the device it resolves to
    for k, default in config.HASH_OMITTED_AT.items():  # later parameters at their defaults keep the old hashes
        assert plain.pop(k) == default
    assert b.config_hash == hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", list(CLASSES))
def test_defaults_are_plain_values(name: str) -> None:
    """param() keeps the default as it was: asdict of a default instance is each field's default."""
    cls = CLASSES[name]
    if name == "RunConfig":
        instance = cls(dataset="d", method="m")
        assert instance.method_params is None
        return
    values = dataclasses.asdict(cls())
    assert values == {f.name: f.default for f in dataclasses.fields(cls)}
    assert all(isinstance(v, (bool, int, float, str)) for v in values.values())


# ---------------------------------------------------------------- param() itself


def test_param_refuses_what_it_cannot_check() -> None:
    with pytest.raises(ValueError, match="help"):
        param(1, "")
    with pytest.raises(ValueError, match="unknown range"):
        param(1, "steps", range=">= 3")
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        param(0, "steps", range=">= 1")
    with pytest.raises(ValueError, match="must be 'a' or 'b', got 'c'"):
        param("c", "mode", choices=("a", "b"))
    f = param(2, "steps", range=">= 1")
    assert f.default == 2 and meta(f) == ("steps", ">= 1", None)
    required = param(help="a name")
    assert required.default is dataclasses.MISSING and meta(required)[0] == "a name"


def test_a_bool_is_not_checked_against_a_range() -> None:
    assert value_problem("x", True, ">= 2", None) is None  # a wrong type is check_type's problem, not a range's


def test_notebook_help_comes_from_the_metadata() -> None:
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    helps = generator.field_help(CLASSES["PCDParams"])
    assert helps == {f.name: meta(f)[0] for f in dataclasses.fields(CLASSES["PCDParams"])}
    assert helps["support_mode"] == "how chains keep to the support box: clamp | reflect | none"


@pytest.mark.parametrize(("method", "key"), [("ssm_ebm", "projection"), ("nce_ebm", "noise"), ("ncsn", "init")])
def test_every_choice_of_a_method_runs(method: str, key: str) -> None:
    """Each declared choice is one the consuming code takes: an objective step (SSM slices, NCE noise) or a short
    annealed-Langevin draw (NCSN's chain start) on a tiny model."""
    spec, dataset = METHODS.get(method), load_dataset("eight_gaussians")
    f = {f.name: f for f in dataclasses.fields(spec.params)}[key]
    for choice in meta(f)[2]:
        params = spec.params(hidden=8, depth=1, **{key: choice})
        model = spec.build(dataset, params)
        generator = torch.Generator().manual_seed(0)
        if spec.objective is not None and method != "ncsn":
            loss, _ = spec.objective(model, dataset.train[:16], generator, params)
            assert torch.isfinite(loss).all(), (method, choice)
        else:
            sampler, budget = spec.eval_samplers(params)[0]  # the run's plan passes params.init to the sampler
            assert budget[key] == choice
            x = model.sample(4, generator=generator, sampler=sampler, **{**budget, "steps_per_sigma": 1}).x
            assert x.shape == (4, 2) and torch.isfinite(x).all(), (method, choice)
