"""Plugins from outside the package (ebmbench/plugins.py): the worked example of examples/spectral_ebm found through
its entry point the way importlib.metadata finds an installed one (a .dist-info folder with entry_points.txt on
sys.path), held to the built-ins' contract; a malformed plugin is one line naming it; a changed plugin reruns."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmbench import cli, config, plugins
from ebmbench.builtins import METHODS, load_dataset
from ebmbench.suites import SuiteError, load_suite

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "spectral_ebm"
PACKAGE = "ebmbench_spectral_ebm"
BAD = {  # module -> source: each a plugin a user might write wrongly
    "dup_plugin": """
        from ebmbench.methods.base import METHODS
        METHODS.register("sn_pcd_ebm", METHODS.get("pcd_ebm"))
        """,
    "broken_plugin": """
        import a_module_that_is_not_installed
        """,
    "nohelp_plugin": """
        from dataclasses import dataclass, replace
        from ebmbench.methods.base import METHODS

        @dataclass
        class Params:
            width: int = 3

        METHODS.register("nohelp_ebm", replace(METHODS.get("pcd_ebm"), name="nohelp_ebm", params=Params))
        """,
    "liar_plugin": """
        from dataclasses import replace
        from ebmbench.methods.base import METHODS
        from ebmbench.methods.flow import Flow

        class Liar(Flow):
            capabilities = frozenset({"log_prob", "energy", "generate", "score"})  # no score(), no noise_process

        spec = METHODS.get("realnvp")

        def build(dataset, params):
            model = spec.build(dataset, params)
            model.__class__ = Liar
            return model

        METHODS.register("liar_flow", replace(spec, name="liar_flow", build=build))
        """,
    "extras_plugin": """
        from functools import partial

        from ebmbench.data.registry import DATASETS
        from ebmbench.data.toy2d import make_toy_dataset
        from ebmbench.metrics.base import Metric, register
        from ebmbench.protocol import SAMPLERS, SamplerOutput, SamplerSpec

        DATASETS.register("small_rings", partial(make_toy_dataset, "rings", n_train=2000, n_val=500, n_test=500))


        def mean_norm(x, dataset):
            r = x.flatten(1).norm(dim=1).double()
            return float(r.mean()), float(r.std() / len(r) ** 0.5), {"n": len(r)}


        register(Metric("mean_norm", "samples", mean_norm, "the mean L2 norm of the samples"))


        def box_uniform(model, n, generator, scale: float = 1.0):
            return SamplerOutput(scale * model.support.uniform(n, generator, model.device), nfe=0)


        SAMPLERS.register("box_uniform", SamplerSpec("box_uniform", requires="energy", fn=box_uniform, cite="a test"))
        """,
    "badsampler_plugin": """
        from ebmbench.protocol import SAMPLERS, SamplerOutput, SamplerSpec

        SAMPLERS.register("bad_sampler", SamplerSpec("bad_sampler", requires="energy", fn=lambda x, steps: x,
                                                     cite="a test"))
        """,
    "wishful_plugin": """
        from ebmbench.protocol import SAMPLERS, SamplerSpec

        SAMPLERS.register("telepathy", SamplerSpec("telepathy", requires="mind_reading",
                                                   fn=lambda model, n, generator: None, cite="a test"))
        """,
}


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site folder holding a copy of the example package, its distribution's metadata with the entry point, and
    the bad plugins; on sys.path here and on PYTHONPATH for the kernels. Everything is unloaded afterwards."""
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / PACKAGE, site / PACKAGE)
    info = site / "ebmbench_spectral_ebm-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ebmbench-spectral-ebm\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[ebmbench.plugins]\nsn_pcd_ebm = {PACKAGE}\n")
    for name, source in BAD.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    yield site
    plugins.unload()
    for name in [PACKAGE, *BAD]:
        sys.modules.pop(name, None)


def test_the_entry_point_registers_the_method_with_its_provenance(site) -> None:
    builtin_hash = config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm"}).config_hash
    (plugin,) = plugins.load()
    assert "entry point 'sn_pcd_ebm'" in plugin.label and plugin.registered == [("method", "sn_pcd_ebm")]
    assert (plugin.name, plugin.version) == ("ebmbench-spectral-ebm", "0.1.0")
    assert plugins.load() == [plugin]  # once per process
    cfg = config.resolve({"dataset": "eight_gaussians", "method": "sn_pcd_ebm", "log_scale_init": 0.5})
    assert cfg.method_params.log_scale_init == 0.5  # its params are validated like a built-in's
    with pytest.raises(config.ConfigError, match="unknown parameter"):
        config.resolve({"dataset": "eight_gaussians", "method": "sn_pcd_ebm", "log_scale": 1.0})
    assert plugins.notebook_for(METHODS.get("sn_pcd_ebm")).name == "train_ebm.ipynb"  # its family's notebook
    novel = dataclasses.replace(METHODS.get("sn_pcd_ebm"), family="novel")  # a family without a notebook
    assert plugins.notebook_for(novel).name == plugins.GENERIC_NOTEBOOK
    with pytest.raises(plugins.PluginError, match="notebook 'mine.ipynb' does not exist"):
        plugins.notebook_for(dataclasses.replace(novel, notebook="mine.ipynb"))
    # the plugin's name, version and source hash are in its runs' config hash; a built-in run's hash is unchanged
    assert config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm"}).config_hash == builtin_hash
    before = cfg.config_hash
    (site / PACKAGE / "__init__.py").write_text((site / PACKAGE / "__init__.py").read_text() + "\n# changed\n")
    plugins.unload()
    sys.modules.pop(PACKAGE)
    plugins.load()
    assert cfg.config_hash != before  # a changed plugin reruns


def test_a_built_model_keeps_the_protocol(site) -> None:
    """The plugin's model counts its calls through CountingNet: the NFE a sampler claims is the NFE counted."""
    plugins.load()
    cfg = config.resolve({"dataset": "eight_gaussians", "method": "sn_pcd_ebm", "buffer_size": 64})
    plugins.check_run(cfg)
    model = METHODS.get("sn_pcd_ebm").build(load_dataset("eight_gaussians"), cfg.method_params)
    samples = model.sample(32, generator=torch.Generator().manual_seed(0), sampler="langevin", steps=7)
    assert samples.cost.nfe == 7 and samples.cost.grad_evals == 7


def one_line_error(argv: list[str]) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1, err.getvalue()
    return lines[0]


@pytest.mark.parametrize(("module", "says"), [
    ("dup_plugin", "method 'sn_pcd_ebm' is already registered; rename it"),
    ("broken_plugin", "failed to load: ModuleNotFoundError: No module named 'a_module_that_is_not_installed'"),
    ("nohelp_plugin", "fields ['width'] of Params have no help"),
    ("liar_plugin", "declares 'score' but does not implement ScoreModel"),
])
def test_a_malformed_plugin_stops_the_suite_in_one_line(site, tmp_path, module: str, says: str) -> None:
    suite = tmp_path / "s.yaml"
    method = {"nohelp_plugin": "nohelp_ebm", "liar_plugin": "liar_flow"}.get(module, "pcd_ebm")
    suite.write_text(f"name: s\nplugins: [{module}]\nruns:\n  - datasets: [eight_gaussians]\n    methods: [{method}]\n")
    line = one_line_error(["run", str(suite), "--results-dir", str(tmp_path), "--dry-run"])
    assert f"module '{module}'" in line and says in line, line
    for name in ("nohelp_ebm", "liar_flow"):  # a refused plugin leaves nothing registered
        if module != "liar_plugin":
            assert name not in METHODS
    assert "sn_pcd_ebm" in METHODS  # the entry point (loaded first) is unaffected by a bad suite module


def test_a_second_plugin_with_the_same_name_is_refused(site) -> None:
    plugins.load()
    with pytest.raises(plugins.PluginError, match=r"plugin module 'dup_plugin': method 'sn_pcd_ebm' is already"):
        plugins.load_module("dup_plugin")
    with pytest.raises(SuiteError, match="'plugins' must be a list of module names"):
        bad = site / "bad.yaml"
        bad.write_text("name: b\nplugins: dup_plugin\nruns:\n  - datasets: [eight_gaussians]\n    methods: [ddpm]\n")
        load_suite(str(bad))


TINY = {"threads": 1, "train_steps": 40, "batch_size": 64, "checkpoint_every": 20, "log_every": 10,
        "n_eval_samples": 200, "ema_decay": 0.9, "ais_steps": 10, "ais_runs": 2, "ais_chains": 4,
        "likelihood_points": 50, "curve_points": 0, "buffer_size": 256, "langevin_steps": 5, "sample_steps": 20,
        "samplers": "langevin,replay_buffer", "skip_metrics": "nll_ais_reverse"}


@pytest.mark.slow
def test_the_example_suite_ranks_the_plugin_on_its_leaderboard(site, tmp_path) -> None:
    """A tiny version of examples/spectral_ebm/suite.yaml, sliced to the plugin's method (its notebook executed by
    papermill, the plugin found by the kernel through the same entry point; the built-in pcd_ebm beside it is the
    suite's other, unchanged run), then external samples added with evaluate --suite and ranked beside it."""
    import yaml

    from ebmbench import leaderboard
    from ebmbench.results import load_results

    doc = yaml.safe_load((EXAMPLE / "suite.yaml").read_text())
    doc["runs"][0].update(seeds=[0], params={})
    doc["defaults"] = TINY
    del doc["plugins"]  # the entry point registers it (as after pip install -e)
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(doc))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["run", str(suite), "--results-dir", str(tmp_path / "r"), "--no-report",
                         "--methods", "sn_pcd_ebm"])
    assert code == 0, out.getvalue()
    frame = load_results(tmp_path / "r" / "spectral-ebm")
    mine = frame[(frame.method == "sn_pcd_ebm") & (frame.sampler == "langevin")]
    assert (mine.metric_status == "ok").any() and set(mine.run_status) == {"ok"}
    assert (mine.nfe == 20).all() and (mine.grad_evals == 20).all()  # counted by CountingNet, not claimed
    assert (mine.train_flops > 0).all() and mine.flops_per_sample.notna().all()
    assert mine[mine.metric == "reverse_kl"].metric_status.iloc[0] == "ok"  # its samples are scored
    versions = json.loads((next((tmp_path / "r" / "spectral-ebm" / "runs").glob("*sn_pcd_ebm*")) / "config.json")
                          .read_text())
    assert versions["method_params"]["log_scale_init"] == 1.0
    # samples from elsewhere, added to the suite, ranked beside the runs and marked external
    ds = load_dataset("eight_gaussians")
    np.savez(tmp_path / "exact.npz", samples=ds.density.sample(200, torch.Generator().manual_seed(4)).numpy(), nfe=50)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["evaluate", str(tmp_path / "exact.npz"), "--dataset", "eight_gaussians", "--name", "exact",
                         "--suite", str(suite), "--results-dir", str(tmp_path / "r"), "--metrics", "reverse_kl"]) == 0
    board = leaderboard.leaderboard(load_results(tmp_path / "r" / "spectral-ebm"), "eight_gaussians")
    rows = board.set_index("setting")
    assert {"sn_pcd_ebm / langevin", "sn_pcd_ebm / replay_buffer", "exact / external"} <= set(rows.index)
    assert rows.loc["sn_pcd_ebm / langevin", "nfe"] == 20 and rows.loc["sn_pcd_ebm / langevin", "train_tflops"] > 0
    assert rows.loc["exact / external", "external"] and not rows.loc["sn_pcd_ebm / langevin", "external"]
    assert rows.loc["exact / external", "mean"] < rows.loc["sn_pcd_ebm / langevin", "mean"]  # 40 steps vs exact
    text, _ = leaderboard.display_frame(board)
    assert text.loc["exact / external", "NFE"] == "50 (stated, not counted)"
    assert text.loc["exact / external", "family"] == "external"
    html = leaderboard.styled(board, leaderboard.caption(board)).to_html()
    assert "sn_pcd_ebm / langevin" in html and "not counted" in html


def test_a_dataset_a_sampler_and_a_metric_from_a_plugin(site, tmp_path) -> None:
    """Every kind of registry entry; a plugin metric runs on every run, so it is in every run's config hash."""
    from ebmbench.builtins import SAMPLE_METRICS, SAMPLERS
    from ebmbench.evaluate import evaluate_file

    before = config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm"}).config_hash
    plugin = plugins.load_module("extras_plugin")
    assert plugin.registered == [("sampler", "box_uniform"), ("dataset", "small_rings"),
                                 ("sample metric", "mean_norm")]
    assert config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm"}).config_hash != before
    ds = load_dataset("small_rings")
    x = ds.density.sample(300, torch.Generator().manual_seed(0)).float()
    np.save(tmp_path / "x.npy", x.numpy())
    record = evaluate_file(tmp_path / "x.npy", "small_rings", "mine", n=300, results_dir=str(tmp_path),
                           metrics=["mean_norm"])
    (row,) = [r for r in record["rows"] if r["metric"] == "mean_norm"]
    assert row["value"] == pytest.approx(float(x.norm(dim=1).double().mean()))
    model = METHODS.get("pcd_ebm").build(ds, config.resolve({"dataset": "small_rings", "method": "pcd_ebm",
                                                             "buffer_size": 8}).method_params)
    drawn = model.sample(50, generator=torch.Generator().manual_seed(1), sampler="box_uniform", scale=0.5)
    assert drawn.cost.nfe == 0 and drawn.x.abs().max() <= 0.5 * ds.support.high
    with pytest.raises(plugins.PluginError, match=r"module 'badsampler_plugin': sampler 'bad_sampler': its function "
                                                  r"must be fn\(model, n, generator, \*\*budget\), got fn\(x, steps\)"):
        plugins.load_module("badsampler_plugin")
    assert "bad_sampler" not in SAMPLERS and "box_uniform" in SAMPLERS and "mean_norm" in SAMPLE_METRICS
    with pytest.raises(plugins.PluginError, match="sampler 'telepathy' requires unknown capability 'mind_reading'"):
        plugins.load_module("wishful_plugin")


def test_the_plugins_layer_sits_below_the_run_pipeline() -> None:
    """config.py hashes plugins.fingerprint: plugins.py may not import config, run or suites back (docs/DESIGN.md)."""
    from test_imports import imports_of

    assert "ebmbench.plugins" in imports_of("ebmbench.config")
    assert not {t for t in imports_of("ebmbench.plugins") if t in ("ebmbench.config", "ebmbench.run",
                                                                    "ebmbench.suites", "ebmbench.evaluate")}
