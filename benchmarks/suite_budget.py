"""Can a suite fit its time budget? Training CPU-seconds at its calibrated budgets, against the bare network floor.

Run: ``python benchmarks/suite_budget.py [--suite quick] [--budget-min 15] [--workers 2]``. Not part of pytest.

For every (dataset, method) of the suite, seed 0 is set up exactly as the suite sets it up, then timed in CPU
seconds (``time.process_time``, one thread, so other jobs on a shared machine inflate it less than wall clock):

* **train**: ``training.train`` — the loop every run uses (EMA, divergence guard, logging), no curve points;
* **floor**: the bare forward, backward and fused-Adam step of the same network on the same batch shape, with no
  run machinery (``train_bench.floor_step``).

Each per-step time is multiplied by the run's ``train_steps`` and by its number of seeds. The sum of the floors is
a lower bound on the suite's training CPU time that no loop overhead cut can beat; the suite's wall budget times
its workers is the CPU time it has. Start-up, curve points, sampling and metrics come on top of both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_bench  # noqa: E402  (the floor step, shared with the training benchmark)

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="quick")
    p.add_argument("--budget-min", type=float, default=15.0, help="the suite's wall-clock budget in minutes")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0, help="CPU seconds to time per measurement")
    p.add_argument("--rounds", type=int, default=3)
    return p.parse_args()


def cpu_seconds(fn, *args) -> float:
    t0 = time.process_time()
    fn(*args)
    return time.process_time() - t0


def floor_per_step(table: dict, params: dict, n: int) -> float:
    step = train_bench.floor_step(table, params)

    def loop() -> None:
        for _ in range(n):
            step()
    loop() if n < 3 else [step() for _ in range(3)]  # warm-up
    return cpu_seconds(loop) / n


def train_per_step(table: dict, params: dict, n: int, out: Path) -> float:
    run_params = {**params, "train_steps": n, "curve_points": 0, "checkpoint_every": 10**9}
    return train_bench.train_seconds(table, run_params, out, clock=time.process_time) / n


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    table = train_bench.import_version(ROOT)
    with tempfile.TemporaryDirectory() as tmp, train_bench.using(table):
        _, runs = table["ebmbench.suites"].load_suite(args.suite, results_dir=tmp)
        groups: dict[tuple[str, str], list] = defaultdict(list)
        for spec in runs:
            groups[spec.cfg.dataset, spec.cfg.method].append(spec)
        rows = []
        for (dataset, method), specs in groups.items():
            spec = min(specs, key=lambda s: s.cfg.seed)
            budget = spec.cfg.train_steps
            has_floor = method in ("ddpm", "ncsn", "pcd_ebm", "realnvp", "sngan")
            probe = floor_per_step(table, spec.params, 3) if has_floor else 1e-3
            n = int(min(budget, max(5, args.seconds / max(probe, 1e-5))))
            floors, trains = [], []
            for _ in range(args.rounds):
                if has_floor:
                    floors.append(floor_per_step(table, spec.params, n))
                trains.append(train_per_step(table, spec.params, n, Path(tmp)))
            f = statistics.median(floors) if floors else float("nan")
            t = statistics.median(trains)
            rows.append((dataset, method, len(specs), budget, n, f, t))
            print(f"  {dataset}/{method}: {n} steps timed, floor {1e3 * f:.2f} ms, train {1e3 * t:.2f} ms",
                  flush=True)
    report(rows, args)


def report(rows: list[tuple], args: argparse.Namespace) -> None:
    print(f"\n{'dataset/method':<26}{'seeds':>6}{'steps':>7}{'floor ms':>10}{'train ms':>10}{'train/floor':>12}"
          f"{'floor CPU-s':>13}{'train CPU-s':>13}")
    total_f = total_t = 0.0
    for dataset, method, seeds, budget, _, f, t in rows:
        cf, ct = f * budget * seeds, t * budget * seeds
        total_f += 0.0 if cf != cf else cf
        total_t += ct
        print(f"{dataset + '/' + method:<26}{seeds:>6}{budget:>7}{1e3 * f:>10.2f}{1e3 * t:>10.2f}{t / f:>11.2f}x"
              f"{cf:>13.0f}{ct:>13.0f}")
    have = args.budget_min * 60 * args.workers
    print(f"{'total':<26}{'':>45}{total_f:>13.0f}{total_t:>13.0f}")
    print(f"\nbudget: {args.budget_min:g} min x {args.workers} workers = {have:.0f} CPU-s. Training alone at the "
          f"floor needs {total_f:.0f} CPU-s ({total_f / have:.2f}x the budget); as the runs train today, "
          f"{total_t:.0f} CPU-s ({total_t / have:.2f}x). Start-up, curve points, sampling and metrics are extra.")


if __name__ == "__main__":
    main()
