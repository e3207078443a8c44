"""Fault injection (issue 14): the real CLI on a one-run suite of 20 training steps, then corrupt, stale, crafted
and misplaced files, bad values and empty reports. Each test asserts what a user sees: a message naming the file
or the key, the run rerun or refused, and rows neither lost nor duplicated.

One finished run is shared by the module (``finished``); a test that changes files works on a copy of it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ebmbench import cli, config, report, suites, training
from ebmbench.data.images import cifar10_dataset
from ebmbench.results import aggregate, load_results, read_result
from ebmbench.run import failed_record

NAME = "faults"
DDPM = {"num_train_timesteps": 100, "ddpm_steps": 100, "ddim_steps": 10, "dpm_steps": 10}
# every likelihood of the run skipped: the report and the likelihood notebook have no estimator to show
DEFAULTS = {"threads": 1, "train_steps": 20, "batch_size": 64, "checkpoint_every": 10, "log_every": 10,
            "n_eval_samples": 200, "ema_decay": 0.9, "curve_points": 0, "skip_metrics": "nll_pf_ode,nll_elbo"}


def write_suite(folder: Path, entry: dict | None = None, **top) -> str:
    """The one-run suite (eight_gaussians, ddpm), with entry keys and top-level keys changed as given."""
    path = folder / "suite.yaml"
    run = {"datasets": ["eight_gaussians"], "methods": ["ddpm"], "method_params": {"ddpm": DDPM}, **(entry or {})}
    path.write_text(yaml.safe_dump({"name": NAME, "defaults": DEFAULTS, "runs": [run], **top}))
    return str(path)


@dataclass
class Finished:
    suite: str  # the suite file
    results: Path  # the results folder it ran into
    code: int
    out: str
    err: str

    @property
    def run_dir(self) -> Path:
        return next((self.results / NAME / "runs").iterdir())


def cli_main(*args: str) -> tuple[int, str, str]:
    """``ebmbench ARGS`` in this process: exit code, stdout, stderr. A run skips its cost estimate (about 8 s a
    run here; tests/test_estimate.py and the smoke fixture cover it)."""
    if args[:1] == ("run",) and "--dry-run" not in args:
        args = (*args, "--no-estimate")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Finished:
    """The suite run once through the CLI, with its three reports."""
    folder = tmp_path_factory.mktemp("faults")
    suite = write_suite(folder)
    code, out, err = cli_main("run", suite, "--results-dir", str(folder / "results"))
    return Finished(suite, folder / "results", code, out, err)


def copy_of(finished: Finished, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the finished results folder: (results folder, the run's folder)."""
    results = tmp_path / "results"
    shutil.copytree(finished.results, results)
    return results, results / NAME / "runs" / finished.run_dir.name


def final_rows(results: Path) -> pd.DataFrame:
    return load_results(results / NAME)


# --- item 1: reports render on any suite ---------------------------------------------------------------------------


@pytest.mark.slow
def test_reports_render_without_any_likelihood_estimate(finished):
    assert finished.code == 0, finished.out + finished.err
    suite_dir = finished.results / NAME
    for name in ("report", "reproduce", "likelihood"):
        assert f"{name}: {suite_dir / name}.html" in finished.out
    html = (suite_dir / "likelihood.html").read_text()
    assert "no run has both an exact likelihood" in html and "Traceback" not in html
    page = (suite_dir / "report.html").read_text()
    assert "IProgress not found" not in page  # no warning that prints the venv's path
    assert '<script src="http' not in page  # self-contained: no CDN script


@pytest.mark.slow
def test_report_sections_take_empty_gan_only_and_one_dataset_frames(finished):
    frame = final_rows(finished.results)
    likelihoods = {"nll_true_density", "nll_heldout", "nll_exact", "kl_model_data", "kl_data_model"}
    gan = frame[~frame.metric.isin(likelihoods)].assign(method="sngan", family="gan")
    for rows in (frame, gan, frame.iloc[:0], frame[frame.metric_status != "ok"]):
        assert report.estimator_vs_exact(rows).empty
        report.likelihood_tables(rows)
        report.metric_table(rows)
        report.energy_vs_sampler(rows)
        report.not_measured(rows)
        report.run_status_table(rows)


@pytest.mark.slow
def test_reports_render_when_every_run_failed_and_a_broken_one_stops_no_other(finished, tmp_path, monkeypatch):
    results, run_dir = copy_of(finished, tmp_path)
    _, runs = suites.load_suite(finished.suite, str(results))
    failed_record(runs[0].params, run_dir, "planted failure")
    notebooks = tmp_path / "notebooks"
    shutil.copytree(suites.NOTEBOOKS_DIR, notebooks)
    nb = nbformat.read(notebooks / "reproduce.ipynb", as_version=4)
    nb.cells.insert(3, nbformat.v4.new_code_cell('raise RuntimeError("planted report failure")'))
    nbformat.write(nb, notebooks / "reproduce.ipynb")
    monkeypatch.setattr(report, "NOTEBOOKS_DIR", notebooks)
    code, out, err = cli_main("report", NAME, "--results-dir", str(results))
    assert code == 1
    assert "report 'reproduce' did not render cleanly" in err and "planted report failure" in err
    suite_dir = results / NAME
    assert "report: " in out and "likelihood: " in out  # rendered after the broken one
    assert "planted report failure" in (suite_dir / "reproduce.html").read_text()  # the HTML keeps the traceback
    page = (suite_dir / "report.html").read_text()
    assert "no ok sample-quality row" in page and "no ok likelihood row" in page and "Traceback" not in page
    assert "no ok likelihood row" in (suite_dir / "likelihood.html").read_text()


# --- item 8: figures in the notebooks --------------------------------------------------------------------------------


@pytest.mark.slow
def test_executed_training_notebook_shows_its_figures(finished):
    nb = nbformat.read(finished.run_dir / "notebook.ipynb", as_version=4)
    plot_cells = [c for c in nb.cells if c.cell_type == "code" and "plots." in c.source]
    assert len(plot_cells) >= 3
    for cell in plot_cells:
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source


# --- items 2, 3, 4, 5: stale, corrupt and crafted run state --------------------------------------------------------


class Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('payload ran')",)


def crafted_checkpoint(path: Path, marker: Path, key: dict[str, str]) -> None:
    torch.save({"step": 20, "model": Payload(marker), **key}, path)


def test_the_crafted_payload_would_run_without_weights_only(tmp_path):
    marker = tmp_path / "marker"
    crafted_checkpoint(tmp_path / "checkpoint.pt", marker, {})
    torch.load(tmp_path / "checkpoint.pt", weights_only=False)  # what loading did before issue 14
    assert marker.exists()


@pytest.mark.slow
def test_garbage_result_and_crafted_checkpoint_rerun_the_run_without_running_the_payload(finished, tmp_path, capfd):
    results, run_dir = copy_of(finished, tmp_path)
    before = final_rows(results)
    marker = tmp_path / "payload_ran"
    ckpt = torch.load(run_dir / training.CHECKPOINT, weights_only=True)  # a real checkpoint loads safely
    crafted_checkpoint(run_dir / training.CHECKPOINT, marker, {k: ckpt[k] for k in ("config_hash", "code_version")})
    (run_dir / "result.json").write_text("this is not JSON")
    code, out, err = cli_main("run", finished.suite, "--results-dir", str(results), "--no-report")
    assert code == 0, out + err
    assert f"warning: {run_dir / 'result.json'} is not a usable result (JSONDecodeError" in err
    assert "1 ok" in out
    assert not marker.exists()  # the kernel refused the payload
    assert list(run_dir.glob("result.json.corrupt-*")) and list(run_dir.glob("checkpoint.pt.stale-*"))
    after = final_rows(results)
    assert len(after) == len(before) and after.run_id.nunique() == 1  # rows neither lost nor duplicated
    meta = after.meta.iloc[0]
    assert meta["resumed_from_step"] == 0 and "could not be read (UnpicklingError" in meta["moved_aside"]
    assert "KeyboardInterrupt caught in kernel" not in capfd.readouterr().err  # quiet output (item 10)


@pytest.mark.slow
def test_empty_result_and_stale_checkpoint_rerun_from_step_zero(finished, tmp_path):
    results, run_dir = copy_of(finished, tmp_path)
    before = final_rows(results)
    ckpt = torch.load(run_dir / training.CHECKPOINT, weights_only=True)
    torch.save({**ckpt, "code_version": "an-older-commit"}, run_dir / training.CHECKPOINT)  # the code changed
    (run_dir / "result.json").write_text(json.dumps({"run_status": "ok", "rows": []}))
    code, out, err = cli_main("run", finished.suite, "--results-dir", str(results), "--no-report")
    assert code == 0, out + err
    assert f"{run_dir / 'result.json'} is not a usable result (it holds no result rows); moved it aside" in err
    after = final_rows(results)
    assert len(after) == len(before)
    meta = after.meta.iloc[0]
    assert meta["resumed_from_step"] == 0 and "an-older-commit" in meta["moved_aside"]
    assert (after.train_steps == 20).all()  # trained afresh, not resumed at 20/20


@pytest.mark.slow
def test_unusable_results_are_moved_aside_by_readers_too(finished, tmp_path):
    results, run_dir = copy_of(finished, tmp_path)
    (run_dir / "result.json").write_text('{"rows": []}')
    assert read_result(run_dir) is None and not (run_dir / "result.json").exists()
    (run_dir / "result.json").write_text("\x00garbage")
    assert load_results(results / NAME).empty
    aggregate(results / NAME)  # the report's aggregation goes on
    assert len(list(run_dir.glob("result.json.corrupt-*"))) == 2


@pytest.mark.slow
def test_truncated_checkpoint_is_moved_aside_with_its_path(finished, tmp_path):
    _, run_dir = copy_of(finished, tmp_path)
    path = run_dir / training.CHECKPOINT
    path.write_bytes(path.read_bytes()[:100])
    ckpt, message = training.load_resumable(run_dir, {"config_hash": "x", "code_version": "y"})
    assert ckpt is None and str(path) in message and list(run_dir.glob("checkpoint.pt.stale-*"))


# --- items 6, 7: nothing written outside the results folder, nothing unpickled unchecked --------------------------


@pytest.mark.parametrize("name", ["../escaped", "/ABSOLUTE", "a/b", "..", ".hidden"])
def test_a_suite_name_cannot_write_outside_the_results_folder(tmp_path, name):
    name = str(tmp_path / "absolute") if name == "/ABSOLUTE" else name
    (tmp_path / "suites").mkdir()
    suite = write_suite(tmp_path / "suites", name=name)
    code, _, err = cli_main("run", suite, "--results-dir", str(tmp_path / "results"), "--no-report")
    assert code == 2 and f"name {name!r} is not a plain folder name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suites"]  # nothing written anywhere
    with pytest.raises(config.ConfigError, match="'suite' must be a plain folder name"):
        config.resolve({"dataset": "eight_gaussians", "method": "ddpm", "suite": name})  # a notebook run by hand


def test_a_linked_suite_folder_that_leads_outside_is_refused(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "results" / NAME).symlink_to(tmp_path / "elsewhere")
    code, _, err = cli_main("run", write_suite(tmp_path), "--results-dir", str(tmp_path / "results"), "--no-report")
    assert code == 2 and "outside the results folder" in err
    assert not any((tmp_path / "elsewhere").iterdir())


def test_cifar_pickles_are_checked_before_they_are_unpickled(tmp_path):
    from torchvision.datasets import CIFAR10

    marker = tmp_path / "payload_ran"
    folder = tmp_path / CIFAR10.base_folder
    folder.mkdir()
    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        (folder / name).write_bytes(__import__("pickle").dumps({"data": Payload(marker)}))
    with pytest.raises(ValueError, match="data_batch_1: md5 mismatch"):
        cifar10_dataset(root=tmp_path)
    with pytest.raises(ValueError, match=r"data_batch_1: not a CIFAR-10 batch \(builtins.exec"):
        cifar10_dataset(root=tmp_path, check_integrity=False)  # unchecked files still run no code
    assert not marker.exists()


# --- item 9: errors up front, all at once ------------------------------------------------------------------------


BAD = {  # a bad value -> the message that must name it
    "lr: 1e-3": ({"params": {"lr": "1e-3"}}, "'lr' must be float, got str '1e-3'; YAML reads 1e-3 as a string: "
                 "write it with a decimal point and a signed exponent, 1.0e-3"),
    "lr: -1": ({"params": {"lr": -1}}, "'lr' must be > 0, got -1"),
    "ema_decay: 1.5": ({"params": {"ema_decay": 1.5}}, "'ema_decay' must be in [0, 1), got 1.5"),
    "seeds: [-1]": ({"seeds": [-1]}, "'seed' must be >= 0, got -1"),
    "eval_batch_size: -1": ({"params": {"eval_batch_size": -1}}, "'eval_batch_size' must be >= 0, got -1"),
    "samplers: nosuch": ({"params": {"samplers": "nosuch"}}, "'samplers': ['nosuch'] not evaluated by 'ddpm'"),
    "curve_samplers: nosuch": ({"params": {"curve_samplers": "nosuch"}}, "'curve_samplers': ['nosuch'] not evaluated"),
    "skip_metrics: misspelled": ({"params": {"skip_metrics": "nll_elbo,nll_elboo"}},
                                 "'skip_metrics': unknown metric(s) ['nll_elboo']"),
    "langevin_steps: -3": ({"methods": ["pcd_ebm"], "method_params": {"pcd_ebm": {"langevin_steps": -3}}},
                           "'langevin_steps' must be >= 1, got -3"),
    "buffer_size: -1": ({"methods": ["pcd_ebm"], "method_params": {"pcd_ebm": {"buffer_size": -1}}},
                        "'buffer_size' must be >= 1, got -1"),
    "n_couplings: 1": ({"methods": ["realnvp"], "method_params": {"realnvp": {"n_couplings": 1}}},
                       "'n_couplings' must be >= 2, got 1"),
    "seeds: 3": ({"seeds": 3}, "'seeds' must be a non-empty list of int, e.g. seeds: [0, 1, 2]; got 3"),
    "timeout: 0": ({"timeout": 0}, "'timeout' is a run's wall-clock limit in seconds, a finite number > 0"),
    # issue 22, item 4: non-finite floats, integers without a range, strings with a grammar
    "timeout: .inf": ({"timeout": float("inf")}, "a finite number > 0 (e.g. timeout: 3600); got inf"),
    "timeout: .nan": ({"timeout": float("nan")}, "a finite number > 0 (e.g. timeout: 3600); got nan"),
    "lr: .inf": ({"params": {"lr": float("inf")}}, "'lr' must be a finite number, got inf"),
    "lr: -.inf": ({"params": {"lr": float("-inf")}}, "'lr' must be a finite number, got -inf"),
    "channels: abc": ({"method_params": {"ddpm": {"channels": "abc"}}},
                      "'channels' must be comma-separated integers >= 1, e.g. \"32,64\"; got 'abc'"),
    "depth: -1": ({"method_params": {"ddpm": {"depth": -1}}}, "'depth' must be >= 1, got -1"),
}


def test_every_bad_value_is_rejected_by_dry_run_one_line_each_all_at_once(tmp_path):
    runs = [{"datasets": ["eight_gaussians"], "methods": ["ddpm"], **entry} for entry, _ in BAD.values()]
    suite = tmp_path / "bad.yaml"
    suite.write_text(yaml.safe_dump({"name": "bad", "defaults": DEFAULTS, "runs": runs}))
    code, out, err = cli_main("run", str(suite), "--dry-run", "--results-dir", str(tmp_path / "results"))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == len(BAD) and all(line.startswith(f"error: {suite}: runs[") for line in lines)
    for i, (value, (_, message)) in enumerate(BAD.items()):
        assert any(f"runs[{i}]" in line and message in line for line in lines), (value, err)
    assert not (tmp_path / "results").exists()


def test_a_yaml_syntax_error_is_one_line_with_its_position(tmp_path):
    suite = tmp_path / "broken.yaml"
    suite.write_text("name: broken\nruns:\n  - datasets: [eight_gaussians\n")
    code, _, err = cli_main("run", str(suite), "--dry-run")
    assert code == 2 and err.count("\n") == 1 and f"{suite}: not valid YAML at line 4" in err


@pytest.mark.parametrize("option", [["--retries", "-1"], ["--workers", "-1"], ["--timeout", "0"]])
def test_cli_numbers_are_range_checked(option, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", "smoke", "--dry-run", *option])
    assert stop.value.code == 2 and f"argument {option[0]}: expected an integer >=" in capsys.readouterr().err


def test_an_unwritable_results_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")  # a results folder under a file cannot be made, not even by root
    code, _, err = cli_main("run", write_suite(tmp_path), "--results-dir", str(tmp_path / "file" / "results"))
    assert code == 2 and err.count("\n") == 1 and "is not writable" in err and "--results-dir" in err


# --- items 9, 10: timeouts, quietly ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_past_its_timeout_is_a_failed_row_and_prints_no_traceback(tmp_path, capfd):
    suite = write_suite(tmp_path, entry={"timeout": 2})
    code, out, _ = cli_main("run", suite, "--results-dir", str(tmp_path / "results"), "--no-report")
    printed = capfd.readouterr()
    assert code == 1 and "1 failed" in out
    row = final_rows(tmp_path / "results").iloc[0]
    assert row.run_status == "failed" and "ran past its wall-clock limit of 2 s" in row.reason
    assert "Traceback" not in printed.err + printed.out and "Timeout waiting" not in printed.err


# --- item 11: one `ebmbench run` per results folder ----------------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_on_the_same_results_folder_is_refused(finished, tmp_path):
    results, run_dir = copy_of(finished, tmp_path)
    before = (run_dir / "result.json").read_text()
    with suites.suite_lock(results / NAME):
        code, _, err = cli_main("run", finished.suite, "--results-dir", str(results))
    assert code == 2 and f"{results / NAME} is in use by another `ebmbench run` (pid " in err
    assert (run_dir / "result.json").read_text() == before


@pytest.mark.slow
def test_real_checkpoints_hold_only_tensors_and_primitives(finished):
    ckpt = torch.load(finished.run_dir / training.CHECKPOINT, weights_only=True)
    assert ckpt["step"] == 20 and isinstance(ckpt["generator"], torch.Tensor)
    assert np.isfinite(ckpt["wall_s"])


# --- issue 22: reliability round 3 -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_crafted_checkpoint_runs_no_code_through_compose_or_study(finished, tmp_path):
    from ebmbench import compose, study
    from ebmbench.serialization import CheckpointError

    results, run_dir = copy_of(finished, tmp_path)
    saved = json.loads((run_dir / "config.json").read_text())
    ckpt = torch.load(run_dir / training.CHECKPOINT, weights_only=True)
    marker = tmp_path / "payload_ran"
    torch.save({**ckpt, "ema": Payload(marker)}, run_dir / training.CHECKPOINT)  # the ema entry, as reported
    with pytest.raises(CheckpointError, match="could not be read"):
        compose.load_component(str(results), NAME, run_dir.name, saved["config_hash"])
    with pytest.raises(CheckpointError, match="could not be read"):
        study.load_trained(run_dir)
    assert not marker.exists()


def test_the_code_version_is_the_code_not_results_or_suite_files():
    import uuid

    from ebmbench.results import code_version

    root, tag = Path(suites.ROOT), uuid.uuid4().hex[:8]
    made = [root / f"results-{tag}" / "runs" / "x" / "result.json", root / "suites" / f"probe-{tag}.yaml"]
    probe = root / "ebmbench" / f"_probe_{tag}.txt"
    before = code_version()
    try:
        for path in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
        assert code_version() == before  # results inside the checkout, an untracked suite file: the same code
        probe.write_text("an untracked file of the package")
        assert code_version() != before  # the package's own files are the code
    finally:
        probe.unlink(missing_ok=True)
        made[1].unlink(missing_ok=True)
        shutil.rmtree(root / f"results-{tag}", ignore_errors=True)
    assert code_version() == before


@pytest.mark.slow
def test_results_and_an_edited_suite_inside_the_checkout_still_skip_finished_runs(finished):
    import uuid

    inside = Path(suites.ROOT) / f"results-inside-{uuid.uuid4().hex[:8]}"  # untracked, not ignored by git
    try:
        shutil.copytree(finished.results, inside)
        suite = inside / "suite.yaml"
        shutil.copy(finished.suite, suite)
        code, out, err = cli_main("run", str(suite), "--results-dir", str(inside), "--no-report")
        assert code == 0 and "1 skipped (finished)" in out, out + err
        doc = yaml.safe_load(suite.read_text())
        suite.write_text(yaml.safe_dump({**doc, "description": "edited: another entry, a note"}))
        code, out, err = cli_main("run", str(suite), "--results-dir", str(inside), "--no-report")
        assert code == 0 and "1 skipped (finished)" in out, out + err
    finally:
        shutil.rmtree(inside, ignore_errors=True)


FAMILIES = [("pcd_ebm", "eight_gaussians", {}), ("ddpm", "eight_gaussians", DDPM), ("ncsn", "eight_gaussians", {}),
            ("sngan", "eight_gaussians", {}), ("realnvp", "eight_gaussians", {}),
            ("rbm_cd", "digits_binary", {"lr": 1.0e30})]


@pytest.mark.slow
@pytest.mark.parametrize("method, dataset, extra", FAMILIES, ids=[m for m, _, _ in FAMILIES])
def test_a_divergence_at_step_one_is_a_diverged_row_in_every_notebook(method, dataset, extra, tmp_path, capsys):
    """Every code cell of the method's notebook, in order, in this process (what papermill runs, without a
    kernel's start-up): with lr 1e3 training diverges at step 1, before any curve row."""
    import matplotlib

    from ebmbench.builtins import METHODS

    matplotlib.use("Agg")
    notebook = suites.NOTEBOOKS_DIR / METHODS.get(method).notebook
    params = {**DEFAULTS, "lr": 1.0e3, **extra, "dataset": dataset, "method": method, "suite": "div",
              "results_dir": str(tmp_path)}
    namespace = dict(params)
    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", []):
            exec(compile(cell.source, str(notebook), "exec"), namespace)  # noqa: S102 (the notebook's own cells)
    record = json.loads((namespace["r"].run_dir / "result.json").read_text())
    assert record["run_status"] == "diverged"
    assert record["rows"][0]["reason"].startswith("diverged at step 1: ")
    assert "no training curve" in capsys.readouterr().out  # the figure says why it is missing


def broken_kernel(root: Path, python: str) -> Path:
    """A Jupyter path whose kernel spec 'python3' starts ``python``."""
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [python, "-m", "ipykernel_launcher", "-f",
                                                           "{connection_file}"], "display_name": "broken",
                                                  "language": "python"}))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("python", ["no-ipykernel", "missing"])
def test_a_kernel_that_cannot_start_is_a_retried_failed_row_and_the_suite_goes_on(python, tmp_path, monkeypatch):
    exe = tmp_path / "python-without-ipykernel"
    exe.write_text("#!/bin/sh\nexit 1\n")  # exits before replying to kernel_info, as a Python lacking ipykernel
    exe.chmod(0o755)
    target = str(exe) if python == "no-ipykernel" else str(tmp_path / "no-such-python")
    monkeypatch.setenv("JUPYTER_PATH", str(broken_kernel(tmp_path / "jupyter", target)))
    suite = write_suite(tmp_path, {"seeds": [0, 1]})
    code, out, err = cli_main("run", suite, "--results-dir", str(tmp_path / "results"), "--no-report",
                              "--retries", "1")
    assert code == 1 and "Traceback" not in err and "permissions" not in err
    rows = load_results(tmp_path / "results" / NAME)
    assert sorted(rows.seed) == [0, 1] and set(rows.run_status) == {"failed"}  # both runs tried, both rows
    for reason in rows.reason:
        assert "infrastructure failure after 2 attempts: the notebook kernel did not start" in reason
        assert f"kernel spec 'python3' ({tmp_path / 'jupyter'}" in reason and f"runs {target}" in reason
        assert "-m pip install ipykernel" in reason and len(reason.splitlines()) == 1
    assert (tmp_path / "results" / NAME / "results.parquet").exists()


def test_an_aliased_or_huge_seeds_list_is_one_short_line(tmp_path):
    import time

    lines = ["a0: &a0 [0, 0, 0, 0, 0, 0, 0, 0, 0]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join([*lines, "name: bomb", "runs:", "  - datasets: [eight_gaussians]", "    methods: [ddpm]",
                               "    seeds: *a7", ""]))
    t0 = time.perf_counter()
    code, out, err = cli_main("run", str(bomb), "--dry-run", "--results-dir", str(tmp_path / "r"))
    assert code == 2 and len(err) < 2000 and time.perf_counter() - t0 < 10, err[:3000]
    assert "'seeds' must be a non-empty list of int" in err
    huge = tmp_path / "huge.yaml"
    huge.write_text(yaml.safe_dump({"name": "huge", "runs": [{"datasets": ["eight_gaussians"], "methods": ["ddpm"],
                                                              "seeds": list(range(5000))}]}))
    code, out, err = cli_main("run", str(huge), "--dry-run", "--results-dir", str(tmp_path / "r"))
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "'seeds' lists 5000 values; at most 1000 are allowed in one entry" in err
    huge.write_text(huge.read_text().replace("- 4999\n", "- 4999\n" + "      - 0\n" * 150_000))  # over 1 MB
    code, out, err = cli_main("run", str(huge), "--dry-run", "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "a suite file may have at most 1000000" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("flag, value, valid", [("--methods", "ddpm,pcd_ebn", "ddpm"),
                                                 ("--datasets", "eight_gausians", "eight_gaussians")])
def test_an_unknown_name_in_a_slice_is_refused_with_the_valid_ones(flag, value, valid, tmp_path):
    code, out, err = cli_main("run", write_suite(tmp_path), flag, value, "--dry-run")
    assert code == 2 and out == ""
    assert f"its {flag[2:]} are: {valid}" in err and value.split(",")[-1] in err


def test_a_full_disk_stops_the_suite_with_the_path_a_failed_row_and_the_parquet(tmp_path):
    suite = write_suite(tmp_path, {"seeds": [0, 1]})
    results = tmp_path / "results"
    _, runs = suites.load_suite(suite, str(results))
    full = runs[0].run_dir / "notebook.ipynb"
    full.parent.mkdir(parents=True)
    full.symlink_to("/dev/full")  # every write to it fails with ENOSPC, as on a full disk
    code, out, err = cli_main("run", suite, "--results-dir", str(results))
    assert code == 1 and "Traceback" not in err
    assert f"error: suite stopped: {full}: No space left on device" in err
    assert "stopped early" in out and "runs not started: 1" in out
    rows = load_results(results / NAME)
    assert list(rows.run_id) == [runs[0].cfg.run_id] and f"{full}: No space left" in rows.reason.iloc[0]
    assert not (runs[1].run_dir / "result.json").exists() and (results / NAME / "results.parquet").exists()


def test_aggregate_on_a_full_disk_names_the_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    import errno

    suite_dir = tmp_path / "s"
    (suite_dir / "runs").mkdir(parents=True)

    def full(self, path, **kwargs):
        Path(path).write_bytes(b"PAR1 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    with pytest.raises(OSError) as caught:
        aggregate(suite_dir)
    assert caught.value.filename == str(suite_dir / "results.parquet")
    assert sorted(p.name for p in suite_dir.iterdir()) == ["runs"]


def test_a_new_run_removes_temp_files_an_interrupted_one_left(tmp_path, monkeypatch):
    suite = write_suite(tmp_path)
    results = tmp_path / "results"
    _, runs = suites.load_suite(suite, str(results))
    left = [results / NAME / ".results.k2j3.parquet", results / NAME / ".results.parquet.ab12.tmp",
            runs[0].run_dir / ".result.json.x1y2.tmp"]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    monkeypatch.setattr(suites, "execute_with_retries", lambda spec, *a: "ok")
    suites.run_suite(runs, NAME, progress=False)
    assert not any(p.exists() for p in left)


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(suites, "run_suite", interrupted)
    code, out, err = cli_main("run", write_suite(tmp_path), "--results-dir", str(tmp_path / "r"))
    assert code == 130 and len(err.strip().splitlines()) == 1
    assert err.strip().startswith("interrupted: finished runs are saved") and "again to go on" in err


def test_ctrl_c_inside_the_kernel_stops_the_suite_instead_of_failing_the_run(tmp_path, monkeypatch):
    import papermill as pm

    def kernel_interrupted(*args, **kwargs):
        raise pm.PapermillExecutionError(3, 1, "run.fit(r)", "KeyboardInterrupt", "", [])

    monkeypatch.setattr(pm, "execute_notebook", kernel_interrupted)
    _, runs = suites.load_suite(write_suite(tmp_path), str(tmp_path / "r"))
    with pytest.raises(suites.Interrupted):
        suites.execute(runs[0])
    with pytest.raises(KeyboardInterrupt):
        suites.run_suite(runs, NAME, progress=False)
    assert not (runs[0].run_dir / "result.json").exists()  # no failed row: the run resumes on the next start


def test_a_partial_report_says_so_at_the_top(tmp_path):
    suite_dir = tmp_path / NAME
    done, pending = "eight_gaussians__ddpm__s0__aaaaaaaa", "eight_gaussians__ddpm__s1__bbbbbbbb"
    (suite_dir / "runs" / done).mkdir(parents=True)
    (suite_dir / "runs" / done / "result.json").write_text("{}")
    (suite_dir / "suite.json").write_text(json.dumps({"name": NAME, "run_ids": [done, pending]}))
    assert report.partial_line(suite_dir) == f"partial: 1 of 2 runs finished; pending: {pending}"
    frame = pd.DataFrame({"run_id": [done], "run_status": ["ok"], "dataset": ["eight_gaussians"],
                          "git_commit": ["c"], "git_dirty": [False]})
    assert report.header(frame, suite_dir).startswith(f"**partial: 1 of 2 runs finished; pending: {pending}**")
    (suite_dir / "runs" / pending).mkdir()
    (suite_dir / "runs" / pending / "result.json").write_text("{}")
    assert report.partial_line(suite_dir) == ""
    with suites.suite_lock(suite_dir):  # a run executing the suite holds its lock
        line = report.partial_line(suite_dir)
    assert line.startswith("partial: 2 of 2 runs finished (a run is executing the suite now: pid ")
