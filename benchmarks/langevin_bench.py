"""Wall clock of 60 Langevin steps on a conv energy: a plain autograd loop, torchebm's ``LangevinDynamics``,
and the runs' own ``ula`` path eager (``compile: off``) and compiled (``compile: default``), in one process.

Run: ``python benchmarks/langevin_bench.py [--threads N] [--repeats 5] [--device cuda]``. Not part of pytest.
Every variant runs the same chains (same start, same update, same clamp to [-1, 1]; the noise streams of
torchebm differ); the script prints the largest difference between final samples so the timings compare like
with like. torchebm is optional: without it its row is skipped with a message. The compiled row is the
sampler path runs use (``samplers.compiled.grad_fn`` on a model with ``compile_mode`` set), compiled once
before timing (its one-off cost is printed, as each run pays it once per process).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ebmbench.methods.ebm import EBM, PCDParams
from ebmbench.nets.conv import ConvEnergy
from ebmbench.protocol import Box
from ebmbench.samplers.compiled import compile_seconds, grad_fn
from ebmbench.samplers.langevin import ula

Run = Callable[[], Tensor]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's default)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per variant, after warm-up")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per variant before timing")
    p.add_argument("--steps", type=int, default=60, help="Langevin steps per run")
    p.add_argument("--batch", type=int, default=128, help="chains per run")
    p.add_argument("--eps", type=float, default=0.01, help="Langevin step size eps (noise sqrt(2 eps))")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (default, reduce-overhead, ...)")
    p.add_argument("--cold-compile", action="store_true", help="disable inductor caches: time a from-scratch compile")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    return p.parse_args()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def plain_loop(net: nn.Module, x0: Tensor, steps: int, eps: float, seed: int) -> Tensor:
    """The baseline a user would write inline: autograd.grad, the ULA update, clamp to the box."""
    generator = torch.Generator(x0.device).manual_seed(seed)
    x, noise = x0, (2.0 * eps) ** 0.5
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(x).sum(), x)
        xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = (x.detach() - eps * grad + noise * xi).clamp(-1.0, 1.0)
    return x


def run_path(model: EBM, x0: Tensor, steps: int, eps: float, seed: int) -> Tensor:
    """The runs' own chains: ``ula`` with the model's energy-and-gradient (eager or compiled by its compile_mode)."""
    generator = torch.Generator(x0.device).manual_seed(seed)
    box = Box(-1.0, 1.0, tuple(x0.shape[1:]))
    x, _ = ula(model.energy, x0, steps=steps, eps=eps, temperature=1.0, generator=generator, box=box,
               support_mode="clamp", grad=grad_fn(model))
    return x


def torchebm_run(net: nn.Module, x0: Tensor, steps: int, eps: float, seed: int) -> Run | str:
    """torchebm's LangevinDynamics on the same energy (x <- x - eps grad E + sqrt(2 eps) xi, clamped), or why not."""
    try:
        from torchebm.core import BaseModel
        from torchebm.samplers import LangevinDynamics
    except ImportError as err:
        return f"torchebm not installed ({err}); `pip install torchebm` to time it"

    class Wrapped(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Tensor) -> Tensor:
            return self.net(x)

    sampler = LangevinDynamics(Wrapped(), step_size=eps, noise_scale=1.0, clamp=(-1.0, 1.0), device=x0.device)
    return lambda: sampler.sample(x=x0.clone(), n_steps=steps, generator=torch.Generator(x0.device).manual_seed(seed))


def timed(run: Run, device: torch.device) -> tuple[float, float, Tensor]:
    """Wall clock (device-synchronized) and this process's CPU time of one call, and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    x = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu, x


def measure(runs: dict[str, Run], device: torch.device, warmup: int, repeats: int) -> dict[str, dict]:
    """``warmup`` untimed calls of every variant, then ``repeats`` timed rounds, round-robin over variants
    so that load changes on a shared machine hit every row alike."""
    rows: dict[str, dict] = {name: {"wall": [], "cpu": []} for name in runs}
    for name, run in runs.items():
        for _ in range(warmup):
            rows[name]["x"] = timed(run, device)[2]
    for i in range(repeats):
        for name, run in runs.items():
            wall, cpu, _ = timed(run, device)
            rows[name]["wall"].append(wall)
            rows[name]["cpu"].append(cpu)
        print(f"  round {i + 1}: " + ", ".join(f"{n} {r['wall'][-1]:.2f} s" for n, r in rows.items()), flush=True)
    for r in rows.values():
        r["median"], r["cpu_median"] = statistics.median(r["wall"]), statistics.median(r["cpu"])
    return rows


def report(rows: dict[str, dict | str], baseline: str, steps: int, batch: int) -> None:
    base = rows[baseline]
    print(f"{'variant':<30}{'median s':>9}{'min s':>8}{'max s':>8}{'ms/step':>9}{'speedup':>9}"
          f"{'cpu s':>8}{'cpu speedup':>13}")
    for name, r in rows.items():
        if isinstance(r, str):
            print(f"{name:<30}FAILED: {r}")
            continue
        print(f"{name:<30}{r['median']:>9.2f}{min(r['wall']):>8.2f}{max(r['wall']):>8.2f}"
              f"{1000 * r['median'] / steps:>9.1f}{base['median'] / r['median']:>8.2f}x"
              f"{r['cpu_median']:>8.2f}{base['cpu_median'] / r['cpu_median']:>12.2f}x")
    print(f"({steps} steps at batch {batch}; speedup = plain median / variant median, wall clock, same run; "
          f"cpu = this process's CPU seconds, less sensitive to other load)")
    for name, r in rows.items():
        if isinstance(r, dict) and name != baseline:
            print(f"max |x_{name} - x_plain| = {float((r['x'] - base['x']).abs().max()):.2e}")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cold_compile:
        torch._inductor.config.force_disable_caches = True
    device = torch.device(args.device)
    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | CPU {cpu_name()} "
          f"({os.cpu_count()} logical cores) | device {device} | load avg {os.getloadavg()[0]:.1f}", flush=True)
    torch.manual_seed(0)  # weights only; the chains use their own seeded generators
    net = ConvEnergy(1, (32, 64, 64)).to(device).requires_grad_(False)
    x0 = Box(-1.0, 1.0, (1, 28, 28)).uniform(args.batch, torch.Generator(device).manual_seed(1), device)
    n, eps = args.steps, args.eps
    # own copies: the compiled path puts its conv weights in channels-last, which must not speed up the others
    eager = EBM(copy.deepcopy(net), Box(-1.0, 1.0, (1, 28, 28)), PCDParams(buffer_size=1)).to(device).eval()
    compiled = EBM(copy.deepcopy(net), Box(-1.0, 1.0, (1, 28, 28)), PCDParams(buffer_size=1)).to(device).eval()
    compiled.compile_mode = args.compile_mode
    runs: dict[str, Run] = {"plain autograd loop": lambda: plain_loop(net, x0, n, eps, 2)}
    failed: dict[str, str] = {}
    tebm = torchebm_run(net, x0, n, eps, 2)
    if isinstance(tebm, str):
        print(f"  skipped torchebm: {tebm}", flush=True)
    else:
        runs["torchebm LangevinDynamics"] = tebm
    runs["ula eager (compile: off)"] = lambda: run_path(eager, x0, n, eps, 2)
    label = f"ula compiled ({args.compile_mode})"
    try:
        run_path(compiled, x0, 1, eps, 2)
        cache = "caches disabled" if args.cold_compile else "inductor caches on: a rerun may reuse earlier work"
        print(f"  torch.compile(mode={args.compile_mode!r}): one-off {compile_seconds(compiled):.1f} s ({cache}; "
              f"includes one step; excluded from the timings; a run pays it once per process)", flush=True)
        runs[label] = lambda: run_path(compiled, x0, n, eps, 2)
    except Exception as err:  # e.g. no working C++ toolchain: report the row as failed, time the others
        failed[label] = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"
    rows: dict[str, dict | str] = {**measure(runs, device, args.warmup, args.repeats), **failed}
    report(rows, "plain autograd loop", n, args.batch)
    if "torchebm LangevinDynamics" in rows and isinstance(rows.get(label), dict):
        ratio = rows["torchebm LangevinDynamics"]["median"] / rows[label]["median"]  # type: ignore[index]
        print(f"runs' compiled path vs torchebm: {ratio:.2f}x (median wall clock, same process)")


if __name__ == "__main__":
    main()
