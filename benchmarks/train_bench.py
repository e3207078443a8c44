"""Training examples per second of the 2D models, before vs after, against the bare network floor, in one process.

Run: ``python benchmarks/train_bench.py [--base 94b5ba1] [--rounds 5]``. Not part of pytest.

* **before**: ``training.train`` of the code at ``--base`` (checked out to a temporary git worktree and imported
  under its own module table, so both versions live in this process and are timed in interleaved rounds);
* **after**: ``training.train`` of this working tree, the loop every run uses (EMA, divergence guard, logging);
* **floor**: the bare forward, backward and fused-Adam step of the same network on the same batch, with no run
  machinery (for the PCD EBM: its K Langevin forward+input-gradient calls, then the contrastive step).

Each method trains on eight_gaussians with the quick suite's parameters, at one thread. Printed: ms per step
(median, min-max over rounds), examples per second, after/before speedup and after/floor ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("ddpm", "ncsn", "pcd_ebm", "realnvp", "sngan")
STEPS = {"ddpm": 1500, "ncsn": 1500, "pcd_ebm": 300, "realnvp": 400, "sngan": 500}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="94b5ba1", help="the 'before' commit (default: the commit issue 12 measured)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the steps timed per round")
    return p.parse_args()


# ------------------------------------------------------------------ two versions of ebmbench in one process
def _own(name: str) -> bool:
    return name == "ebmbench" or name.startswith("ebmbench.")


def import_version(root: Path) -> dict[str, ModuleType]:
    """Import ebmbench from ``root`` and return its module table (removed from sys.modules afterwards)."""
    for name in [m for m in sys.modules if _own(m)]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        import ebmbench.builtins  # noqa: F401  (registers every method, sampler, metric)
        import ebmbench.run  # noqa: F401
        import ebmbench.suites  # noqa: F401
        import ebmbench.training  # noqa: F401
    finally:
        sys.path.pop(0)
    table = {m: mod for m, mod in sys.modules.items() if _own(m)}
    for name in table:
        del sys.modules[name]
    assert Path(table["ebmbench"].__file__).resolve().is_relative_to(root.resolve()), "imported the wrong tree"
    return table


@contextlib.contextmanager
def using(table: dict[str, ModuleType]) -> Iterator[dict[str, ModuleType]]:
    """Install a version's modules for the duration (its lazy imports resolve to the same version)."""
    for name in [m for m in sys.modules if _own(m)]:
        del sys.modules[name]
    sys.modules.update(table)
    try:
        yield table
    finally:
        for name in table:
            sys.modules.pop(name, None)


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ebmbench-base-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                       capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False,
                           capture_output=True)


# ------------------------------------------------------------------ what is timed
def quick_params(table: dict[str, ModuleType], method: str, steps: int, out: Path) -> dict:
    """The quick suite's eight_gaussians parameters of ``method``, seed 0, trained ``steps`` steps, no curves."""
    _, runs = table["ebmbench.suites"].load_suite("quick", results_dir=str(out))
    spec = next(r for r in runs if r.cfg.dataset == "eight_gaussians" and r.cfg.method == method and r.cfg.seed == 0)
    return {**spec.params, "train_steps": steps, "curve_points": 0, "checkpoint_every": 10**9}


def known_names(table: dict[str, ModuleType], method: str) -> set[str]:
    """The run and method parameter names a version of ebmbench accepts for ``method``."""
    config = table["ebmbench.config"]
    with using(table):
        spec = table["ebmbench.builtins"].METHODS.get(method)
    return set(config.COMMON) | set(config.field_types(spec.params))


def train_seconds(table: dict[str, ModuleType], params: dict, out: Path,
                  clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds (wall clock, or ``clock``) of the version's ``training.train`` for ``params`` (fresh model and
    run folder)."""
    run, training = table["ebmbench.run"], table["ebmbench.training"]
    r = run.start(params)
    for f in r.run_dir.glob("*"):
        f.unlink()
    t0 = clock()
    result, _ = training.train(r.model, r.spec, r.cfg, r.dataset.train, r.run_dir, progress=False)
    seconds = clock() - t0
    assert result.status == "ok", result
    return seconds


def floor_step(table: dict[str, ModuleType], params: dict) -> Callable[[], None]:
    """The bare network work of one training step of ``params``' method (fused Adam, no run machinery).

    Shapes come from the run's data, so the same floor serves 2D and image runs.
    """
    run = table["ebmbench.run"]
    r = run.start({**params, "train_steps": 1, "curve_points": 0})
    model, b, p = r.model, r.cfg.batch_size, r.cfg.method_params
    net = model.net.net  # past the counting wrapper
    data, g = r.dataset.train, torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)

    def batch() -> torch.Tensor:
        return data[torch.randint(len(data), (b,), generator=g)]

    def noise(x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=g)

    def update(loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if r.cfg.method in ("ddpm", "ncsn"):
        t = torch.rand(b, generator=g) * 999

        def step() -> None:
            x = batch()
            z = noise(x)
            update((net(x + z, t) - z).pow(2).mean())
    elif r.cfg.method == "realnvp":
        def step() -> None:
            z, log_det = net(batch())
            update((0.5 * z.pow(2).flatten(1).sum(1) - log_det).mean())
    elif r.cfg.method == "pcd_ebm":
        def step() -> None:
            x = torch.rand(batch().shape, generator=g)
            for _ in range(p.langevin_steps):
                x = x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(net(x).sum(), x)
                x = x.detach() - p.langevin_eps * grad + 0.01 * noise(x)
            e = net(torch.cat([batch(), x.detach()]))
            update(e[:b].mean() - e[b:].mean())
    elif r.cfg.method == "sngan":
        d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-4, fused=True)

        def step() -> None:
            for _ in range(p.n_critic):
                with torch.no_grad():
                    fake = net(torch.randn(b, p.latent_dim, generator=g))
                d = model.discriminator(torch.cat([batch(), fake]))
                d_opt.zero_grad(set_to_none=True)
                (torch.nn.functional.softplus(-d[:b]).mean() + torch.nn.functional.softplus(d[b:]).mean()).backward()
                d_opt.step()
            update(torch.nn.functional.softplus(-model.discriminator(net(torch.randn(b, p.latent_dim,
                                                                                        generator=g)))).mean())
    else:
        raise ValueError(f"no floor written for {r.cfg.method!r}")
    return step


def floor_seconds(step: Callable[[], None], steps: int) -> float:
    for _ in range(10):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - t0


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    methods = [m for m in args.methods.split(",") if m]
    with worktree(args.base) as base_root, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        versions = {"before": import_version(base_root), "after": import_version(ROOT)}
        steps = {m: max(20, round(STEPS[m] * args.scale)) for m in methods}
        with using(versions["after"]):
            quick = {m: quick_params(versions["after"], m, steps[m], out) for m in methods}
        # the base may not know newer names (e.g. compile, langevin_grad_clip): they are left out of its runs,
        # and the quick suite leaves them at their defaults (compile off, no Langevin clip), so both train alike
        params = {(name, m): {k: v for k, v in quick[m].items() if k in known_names(versions[name], m)}
                  for name in versions for m in methods}
        with using(versions["after"]):
            floors = {m: floor_step(versions["after"], params["after", m]) for m in methods}
        times: dict[tuple[str, str], list[float]] = {}
        print(f"torch {torch.__version__}, 1 thread; before = {args.base}, after = working tree; "
              f"steps per round: {steps}", flush=True)
        for i in range(args.rounds):
            for m in methods:
                for name, table in versions.items():
                    with using(table):
                        times.setdefault((name, m), []).append(train_seconds(table, params[name, m], out) / steps[m])
                with using(versions["after"]):
                    times.setdefault(("floor", m), []).append(floor_seconds(floors[m], steps[m]) / steps[m])
            print(f"  round {i + 1} done", flush=True)
    report(times, methods, params)


def report(times: dict[tuple[str, str], list[float]], methods: list[str], params: dict) -> None:
    print(f"{'method':<9}{'batch':>6}{'before ms':>11}{'after ms':>10}{'floor ms':>10}{'after/before':>14}"
          f"{'after/floor':>13}{'ex/s after':>12}")
    for m in methods:
        med = {k: statistics.median(times[k, m]) for k in ("before", "after", "floor")}
        spread = {k: (min(times[k, m]), max(times[k, m])) for k in med}
        b = params["after", m]["batch_size"]
        print(f"{m:<9}{b:>6}{1e3 * med['before']:>11.3f}{1e3 * med['after']:>10.3f}{1e3 * med['floor']:>10.3f}"
              f"{med['before'] / med['after']:>13.2f}x{med['after'] / med['floor']:>12.2f}x{b / med['after']:>12.0f}")
        print(" " * 15 + "  ".join(f"{k} {1e3 * lo:.3f}-{1e3 * hi:.3f}" for k, (lo, hi) in spread.items()))
    print("ms per training step, median over rounds (min-max below); after/before > 1 is a speedup; "
          "after/floor is the step's cost over the bare network floor (1.15 = within 15 %)")


if __name__ == "__main__":
    main()
