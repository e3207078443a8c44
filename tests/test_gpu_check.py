"""benchmarks/gpu_check.py, the prepared GPU check, runs end to end on the CPU at its smallest sizes (issue 23)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_writes_one_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--recipes", "short_run", "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    for name in ("device", "resume", "deterministic", "families", "sync_free", "compiled", "fid_features", "recipes"):
        assert "error" not in report[name], (name, report[name])
    assert report["device"]["device"] == "cpu" and "cudnn" in report["device"]["cuda"]
    assert report["resume"]["equal"] and report["resume"]["resumed_from"] == 6
    assert report["deterministic"]["equal"]
    families = report["families"]
    assert {f: v["run_status"] for f, v in families.items() if f != "seconds"} == dict.fromkeys(
        ("ebm", "score", "diffusion", "gan", "flow", "rbm"), "ok")
    assert all(not v["failed"] and v["metrics"]["ok"] > 0 for f, v in families.items() if f != "seconds")
    assert report["sync_free"]["skipped"] and report["compiled"]["skipped"]  # CUDA only
    assert report["fid_features"]["feature_max_abs_diff"] == 0.0  # the CPU against itself
    short_run = report["recipes"]["by_recipe"]["short_run"]
    assert short_run["ms_per_step"] > 0 and short_run["train_gpu_hours"] > 0
