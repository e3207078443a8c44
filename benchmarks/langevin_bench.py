"""Wall clock of 60 Langevin steps on a conv energy: a plain autograd loop vs ``ula`` eager vs ``ula`` compiled.

Run: ``python benchmarks/langevin_bench.py [--threads N] [--repeats 5]``. Not part of pytest.
Every variant runs the same chains (same seed, same update, same clamp to [-1, 1]); the script
prints the largest difference between their final samples so the timings compare like with like.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ebmbench.nets.conv import ConvEnergy
from ebmbench.protocol import Box
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


def our_ula(energy: Callable[[Tensor], Tensor], x0: Tensor, steps: int, eps: float, seed: int) -> Tensor:
    generator = torch.Generator(x0.device).manual_seed(seed)
    box = Box(-1.0, 1.0, tuple(x0.shape[1:]))
    x, _ = ula(energy, x0, steps=steps, eps=eps, temperature=1.0, generator=generator, box=box,
               support_mode="clamp")
    return x


def timed(run: Run, device: torch.device) -> tuple[float, Tensor]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    x = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, x


def warm_up(runs: dict[str, Run], device: torch.device, warmup: int) -> dict[str, dict | str]:
    """Each variant's first call (compile, if any, happens here) and further untimed calls."""
    rows: dict[str, dict | str] = {}
    for name, run in runs.items():
        try:
            first, x = timed(run, device)
            for _ in range(warmup - 1):
                timed(run, device)
        except Exception as err:  # e.g. torch.compile without a working toolchain: report it, don't crash
            rows[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            continue
        rows[name] = {"first": first, "times": [], "x": x}
        print(f"  warm-up {name}: first call {first:.1f} s", flush=True)
    return rows


def measure(runs: dict[str, Run], device: torch.device, warmup: int, repeats: int) -> dict[str, dict | str]:
    """Warm every variant up, then time them round-robin so that load changes hit every row alike."""
    rows = warm_up(runs, device, warmup)
    live = [name for name, r in rows.items() if isinstance(r, dict)]
    for i in range(repeats):
        for name in live:
            rows[name]["times"].append(timed(runs[name], device)[0])
        print(f"  repeat {i + 1}: " + ", ".join(f"{n} {rows[n]['times'][-1]:.2f} s" for n in live), flush=True)
    for name in live:
        rows[name]["median"] = statistics.median(rows[name]["times"])
    return rows


def report(rows: dict[str, dict | str], baseline: str, steps: int, batch: int) -> None:
    base = rows[baseline]["median"] if isinstance(rows[baseline], dict) else float("nan")
    print(f"{'variant':<22}{'median s':>10}{'min s':>9}{'max s':>9}{'ms/step':>9}{'speedup vs plain':>18}")
    for name, r in rows.items():
        if isinstance(r, str):
            print(f"{name:<22}FAILED: {r}")
            continue
        print(f"{name:<22}{r['median']:>10.3f}{min(r['times']):>9.3f}{max(r['times']):>9.3f}"
              f"{1000 * r['median'] / steps:>9.1f}{base / r['median']:>17.2f}x")
    for name, r in rows.items():
        if isinstance(r, dict) and "compile" in name:
            print(f"{name}: first call {r['first']:.1f} s, one-off compile ~ {r['first'] - r['median']:.1f} s "
                  f"(excluded from the timings above)")
    xs = {k: r["x"] for k, r in rows.items() if isinstance(r, dict)}
    for name, x in xs.items():
        if name != baseline:
            print(f"max |x_{name} - x_plain| = {float((x - xs[baseline]).abs().max()):.2e}")
    print(f"({steps} steps at batch {batch}; speedup = plain median / variant median, same run)")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | CPU {cpu_name()} "
          f"({os.cpu_count()} logical cores) | device {device} | load avg {os.getloadavg()[0]:.1f}", flush=True)
    torch.manual_seed(0)  # weights only; the chains use their own seeded generators
    net = ConvEnergy(1, (32, 64, 64)).to(device).requires_grad_(False)
    x0 = Box(-1.0, 1.0, (1, 28, 28)).uniform(args.batch, torch.Generator(device).manual_seed(1), device)
    n, eps = args.steps, args.eps
    runs: dict[str, Run] = {
        "plain autograd loop": lambda: plain_loop(net, x0, n, eps, 2),
        "ula eager": lambda: our_ula(net, x0, n, eps, 2),
    }
    compile_error = None
    try:
        compiled = torch.compile(net, mode=args.compile_mode)  # lazy: compiles on the first call, in warm_up
        runs["ula + torch.compile"] = lambda: our_ula(compiled, x0, n, eps, 2)
    except Exception as err:
        compile_error = f"{type(err).__name__}: {err}"
    rows = measure(runs, device, args.warmup, args.repeats)
    if compile_error:
        rows["ula + torch.compile"] = compile_error
    report(rows, "plain autograd loop", n, args.batch)


if __name__ == "__main__":
    main()
