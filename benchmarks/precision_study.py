"""Tolerance of bf16 autocast (``precision: bf16``) against fp32 on the quick suite's 2D runs, at reduced steps.

Run: ``python benchmarks/precision_study.py [--steps 2000] [--seeds 0,1,2] [--out precision_study.json]``. Not part
of pytest. Each (method, seed) of the quick suite on eight_gaussians is trained and sampled twice, at
``precision: fp32`` and ``bf16`` (autocast around every training step and every sampler; parameters, optimizer
state and metrics stay float32), with the quick suite's parameters but ``--steps`` training steps, no curve points
and only the sample metrics (model metrics such as AIS and the quadrature KLs are skipped: they are computed in
float32/64 whatever the precision). Printed per method and sampler: the headline metric (reverse KL) as mean and
standard deviation over seeds at each precision, the mean paired difference bf16 - fp32 with its 95 % t-interval
over seeds, and whether that interval holds 0 (the difference is within what the seeds resolve).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ebmbench import run, suites  # noqa: E402
from ebmbench.metrics.registry import MODEL_METRICS  # noqa: E402

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student t quantiles by degrees of freedom
HEADLINE = "reverse_kl"


def runs(methods: list[str], seeds: list[int], results: str) -> list[dict]:
    """The quick suite's parameters of each (method, seed) on eight_gaussians."""
    _, specs = suites.load_suite("quick", results)
    return [s.params for s in specs if s.cfg.dataset == "eight_gaussians" and s.cfg.method in methods
            and s.cfg.seed in seeds]


def headline(params: dict, precision: str, steps: int, results: str) -> dict[str, float]:
    """reverse KL of each evaluation sampler of one run at ``precision``."""
    r = run.start({**params, "precision": precision, "train_steps": steps, "curve_points": 0, "suite": precision,
                   "results_dir": results, "skip_metrics": ",".join(MODEL_METRICS.names()),
                   "checkpoint_every": steps})
    run.fit(r, progress=False)
    run.draw_samples(r)
    run.evaluate(r)
    return {v.sampler: v.value for v in r.values if v.metric == HEADLINE and v.status == "ok"}


def summary(fp32: list[float], bf16: list[float]) -> dict[str, float | bool]:
    diff = [b - a for a, b in zip(fp32, bf16, strict=True)]
    n = len(diff)
    half = T975.get(n - 1, 1.96) * statistics.stdev(diff) / n**0.5 if n > 1 else float("nan")
    mean = statistics.fmean(diff)
    return {"fp32_mean": statistics.fmean(fp32), "fp32_sd": statistics.stdev(fp32) if n > 1 else float("nan"),
            "bf16_mean": statistics.fmean(bf16), "bf16_sd": statistics.stdev(bf16) if n > 1 else float("nan"),
            "diff_mean": mean, "diff_ci95": [mean - half, mean + half], "zero_in_ci": mean - half <= 0 <= mean + half}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="ddpm,ncsn,pcd_ebm,realnvp")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--out", default="precision_study.json")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as results:
        for params in runs(args.methods.split(","), seeds, results):
            for precision in ("fp32", "bf16"):
                for sampler, v in headline(params, precision, args.steps, results).items():
                    values.setdefault(params["method"], {}).setdefault(sampler, {}).setdefault(precision, []).append(v)
            print(params["method"], params["seed"], f"{time.perf_counter() - t0:.0f} s", flush=True)
    table = {m: {s: summary(v["fp32"], v["bf16"]) for s, v in by.items() if len(v.get("bf16", [])) == len(v["fp32"])}
             for m, by in values.items()}
    print(f"\n{HEADLINE} over seeds {seeds} at {args.steps} steps (CPU autocast bf16 against fp32):")
    print("| method | sampler | fp32 mean (sd) | bf16 mean (sd) | bf16 - fp32 [95 % CI] | 0 in CI |")
    print("|---|---|---|---|---|---|")
    for m, by in table.items():
        for s, r in by.items():
            lo, hi = r["diff_ci95"]
            print(f"| {m} | {s} | {r['fp32_mean']:.4f} ({r['fp32_sd']:.4f}) | {r['bf16_mean']:.4f} "
                  f"({r['bf16_sd']:.4f}) | {r['diff_mean']:+.4f} [{lo:+.4f}, {hi:+.4f}] | {r['zero_in_ci']} |")
    Path(args.out).write_text(json.dumps({"args": vars(args), "values": values, "summary": table,
                                          "wall_s": time.perf_counter() - t0}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
