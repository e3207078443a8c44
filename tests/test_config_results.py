"""Config and suite validation, atomic writes, the result schema, provenance."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from ebmbench import config, results
from ebmbench.config import ConfigError
from ebmbench.results import MetricValue
from ebmbench.suites import SuiteError, load_suite

ROOT = Path(__file__).resolve().parent.parent


def test_resolve_fills_defaults_and_hashes_deterministically():
    a = config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "langevin_steps": 5})
    b = config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "langevin_steps": 5})
    c = config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "langevin_steps": 6})
    assert a.method_params.langevin_steps == 5 and a.lr == 1e-3
    assert a.config_hash == b.config_hash != c.config_hash
    assert a.run_id.startswith("eight_gaussians__pcd_ebm__s0__")
    # where results go does not change what is computed
    d = config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "langevin_steps": 5,
                        "suite": "x", "results_dir": "/elsewhere"})
    assert d.config_hash == a.config_hash
    e = config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "skip_metrics": "mmd2, nll_ais_reverse"})
    assert e.skipped("nll_ais_reverse") and e.skipped("mmd2") and not e.skipped("nll_ais") and not a.skipped("mmd2")


def test_int_is_accepted_for_float():
    assert config.resolve({"dataset": "digits", "method": "ddpm", "lr": 1}).lr == 1.0


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"dataset": "eight_gaussians", "method": "pcd_ebm", "lrr": 0.1}, r"unknown parameter\(s\) \['lrr'\]"),
        ({"dataset": "eight_gaussians", "method": "pcd_ebm", "lr": "fast"}, r"'lr' must be float, got str"),
        ({"dataset": "eight_gaussians", "method": "ddpm", "langevin_steps": 5},
         r"unknown parameter\(s\) \['langevin_steps'\] for method 'ddpm'"),
        ({"dataset": "eight_gaussians", "method": "pcd_ebm", "train_steps": True}, r"'train_steps' must be int"),
        ({"dataset": "eight_gaussians", "method": "pcd_ebm", "train_steps": 0}, r"'train_steps' must be >= 1"),
        ({"dataset": "nine_gaussians", "method": "pcd_ebm"}, r"unknown dataset 'nine_gaussians'; choose"),
        ({"dataset": "digits", "method": "vae"}, r"unknown method 'vae'; choose one of: .*ddpm.*pcd_ebm"),
        ({"method": "ddpm"}, r"'dataset' is required"),
        ({"dataset": "digits", "method": "ddpm", "device": "tpu"}, r"'device' must be 'cpu', 'cuda' or 'auto'"),
    ],
)
def test_bad_parameters_are_named(params, pattern):
    with pytest.raises((ConfigError, KeyError), match=pattern):
        config.resolve(params)


def test_notebook_namespace_keeps_parameters_and_drops_machinery():
    import math

    ns = {"dataset": "digits", "method": "ddpm", "lr": 0.01, "math": math, "In": [], "_": 1, "f": len,
          "lrr": 2}
    assert config.params_from_namespace(ns) == {"dataset": "digits", "method": "ddpm", "lr": 0.01, "lrr": 2}


def write_suite(tmp_path: Path, doc: dict) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_suite_expands_and_applies_overrides(tmp_path):
    doc = {"name": "t", "defaults": {"train_steps": 7},
           "runs": [{"datasets": ["eight_gaussians", "digits"], "methods": ["pcd_ebm", "ddpm"], "seeds": [0, 1],
                     "params": {"batch_size": 16}, "method_params": {"ddpm": {"ddim_steps": 3}}}]}
    name, runs = load_suite(write_suite(tmp_path, doc), str(tmp_path / "res"))
    assert name == "t" and len(runs) == 8
    ddpm = [r for r in runs if r.cfg.method == "ddpm"]
    assert all(r.cfg.method_params.ddim_steps == 3 and r.cfg.train_steps == 7 for r in ddpm)
    assert all(r.cfg.batch_size == 16 for r in runs)
    assert {r.notebook.name for r in runs} == {"train_ebm.ipynb", "train_diffusion.ipynb"}


@pytest.mark.parametrize(
    ("doc", "pattern"),
    [
        ({"runs": [{"datasets": ["digits"], "methods": ["ddpm"], "sedes": [0]}]}, r"runs\[0\]: unknown key"),
        ({"runz": []}, r"unknown key\(s\) \['runz'\]"),
        ({"runs": [{"datasets": ["digits"], "methods": []}]}, r"'methods' must be a non-empty list"),
        ({"runs": [{"datasets": ["digits"], "methods": ["ddpm"], "params": {"lr": "x"}}]},
         r"runs\[0\] \(digits, ddpm, seed 0\): parameter 'lr' must be float"),
        ({"runs": [{"datasets": ["digits"], "methods": ["ddpm"], "method_params": {"pcd_ebn": {}}}]},
         r"method_params: unknown key\(s\) \['pcd_ebn'\]"),
        ({"runs": []}, r"lists no runs"),
    ],
)
def test_suite_errors_name_the_entry(tmp_path, doc, pattern):
    with pytest.raises(SuiteError, match=pattern):
        load_suite(write_suite(tmp_path, doc))


def test_unknown_suite_lists_the_known_ones():
    with pytest.raises(SuiteError, match="unknown suite 'nope'; choose one of: .*quick.*smoke"):
        load_suite("nope")


@pytest.mark.parametrize("name", ["smoke", "quick", "cpu-full", "mnist", "cifar10"])
def test_shipped_suites_validate(name):
    _, runs = load_suite(name)
    assert runs


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    results.atomic_write_json(target, {"a": 1})

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        results.atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}  # the old content survives whole
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind


def test_rows_carry_every_column_and_refuse_silent_statuses():
    with pytest.raises(ValueError, match="states no reason"):
        MetricValue("mmd2", None, status="not_applicable")
    with pytest.raises(ValueError, match="metric_status 'maybe'"):
        MetricValue("mmd2", 1.0, status="maybe")
    run = {"run_id": "r", "suite": "s", "dataset": "d", "dataset_hash": "h", "family": "ebm", "method": "m",
           "seed": 0, "run_status": "ok", "train_steps": 1, "train_wall_s": 1.0, "threads": 1,
           "config_hash": "c", **results.provenance("cpu")}
    rows = results.make_rows(run, [MetricValue("mmd2", 0.1, cost={"nfe": 5, "batch_size": 2})])
    assert list(rows[0]) == results.COLUMNS and rows[0]["nfe"] == 5
    assert rows[0]["versions"]["torch"] != "not installed"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", rows[0]["git_commit"])


def test_environment_yml_agrees_with_pyproject_and_makefile():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    version = python.split("=")[1]
    makefile = (ROOT / "Makefile").read_text()
    assert f"PYTHON ?= python{version}" in makefile
    assert project["requires-python"] == f">={version}"
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-e .[dev]"] and "dev" in project["optional-dependencies"]
    assert project["name"] == "ebmbench" and project["scripts"]["ebmbench"] == "ebmbench.cli:main"
