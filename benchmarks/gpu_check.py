"""One prepared check of a GPU machine (issue 23): writes one JSON of what it found, never stops at a failure.

Run: ``python benchmarks/gpu_check.py [--device auto|cuda|cpu] [--tiny] [--out gpu_check.json]``; about 5 min on
one GPU, ``--device cpu --tiny`` in seconds (tests/test_gpu_check.py runs it). Sections, each recorded with its
seconds, and an ``error`` instead of results when it breaks:

- ``device``: what ``auto`` resolves to, the provenance a row records (CUDA, cuDNN, driver, TF32 flags) and the
  numerics policy of ``precision`` fp32.
- ``resume``: a DDPM trained 12 steps uninterrupted against one stopped after 8 and resumed from its step-6
  checkpoint, on the device: equal weights (bitwise, under deterministic: true).
- ``deterministic``: the same run twice under deterministic: true: equal weights.
- ``families``: one tiny run (train, sample, evaluate) per family: status, samplers, metric counts by status.
- ``sync_free``: ``torch.cuda.set_sync_debug_mode("error")`` over training steps of each family and over the
  sync-free chains (ULA, MALA and HMC with sync=False), and host syncs counted ("warn") at two step counts of each
  sampler: syncs per step must be 0 (CUDA only).
- ``compiled``: ULA and MALA with ``compile: reduce-overhead`` (CUDA graphs) against eager: largest difference,
  and no overwritten-output error (CUDA only; minutes of compile on a CPU).
- ``fid_features``: the digits domain classifier's features of the test split on the device against the CPU,
  with TF32 off (largest difference), and fid_domain of a noisy copy of the test split on both.
- ``recipes``: ms per training step of each CIFAR-10 recipe (ebmbench/recipes.py, suites/cifar10.yaml) on
  synthetic 3x32x32 data at its batch size, and the training GPU-hours its steps take at that speed (evaluation
  sampling not included).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ebmbench import config, devices, recipes, run  # noqa: E402
from ebmbench.builtins import METHODS, load_dataset  # noqa: E402
from ebmbench.data.base import Dataset  # noqa: E402
from ebmbench.methods.base import training_step  # noqa: E402
from ebmbench.protocol import Box  # noqa: E402
from ebmbench.results import provenance  # noqa: E402

FAMILIES = {"ebm": ("pcd_ebm", "eight_gaussians"), "score": ("ncsn", "eight_gaussians"),
            "diffusion": ("ddpm", "eight_gaussians"), "gan": ("sngan", "eight_gaussians"),
            "flow": ("realnvp", "eight_gaussians"), "rbm": ("rbm_cd", "digits_binary")}
TINY_METHOD = {"pcd_ebm": {"buffer_size": 256, "langevin_steps": 5, "sample_steps": 10, "long_run_factor": 0},
               "ncsn": {"steps_per_sigma": 2},
               "ddpm": {"num_train_timesteps": 50, "ddpm_steps": 10, "ddim_steps": 5, "dpm_steps": 5},
               "rbm_cd": {"gibbs_steps": 10, "n_eval_samples": 128}}  # fid_domain needs 2 x 64 features
TINY_RUN = {"train_steps": 12, "checkpoint_every": 6, "log_every": 3, "batch_size": 32, "n_eval_samples": 64,
            "threads": 1, "curve_points": 0, "ais_steps": 5, "ais_runs": 2, "ais_chains": 2,
            "likelihood_points": 16, "pf_ode_tol": 1e-3, "elbo_t_samples": 4}


def section(out: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one check; record its result and seconds, or its error (the script goes on)."""
    t0 = time.perf_counter()
    try:
        out[name] = fn()
    except Exception as err:  # a check that breaks is a finding, recorded, not a crash
        out[name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=4)}
    out[name]["seconds"] = round(time.perf_counter() - t0, 2)
    print(f"{name}: {'error' if 'error' in out[name] else 'ok'} ({out[name]['seconds']} s)", flush=True)


def params_of(method: str, dataset: str, device: str, results: Path, suite: str, **extra: Any) -> dict[str, Any]:
    return {"dataset": dataset, "method": method, "device": device, "suite": suite, "results_dir": str(results),
            **TINY_RUN, **TINY_METHOD.get(method, {}), **extra}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def check_device(device: str) -> dict[str, Any]:
    prov = provenance(device)
    return {"auto_resolves_to": devices.resolve_device("auto"), "device": device, "row_device": prov["device"],
            "cuda": prov["versions"]["cuda"], "torch": torch.__version__,
            "fp32_policy": devices.policy(device, "fp32", False)}


def check_resume(device: str, results: Path) -> dict[str, Any]:
    p = params_of("ddpm", "eight_gaussians", device, results, "resume", deterministic=True)
    full = run.start({**p, "suite": "resume-full"})
    run.fit(full, progress=False)
    first = run.start(p)
    status = run.fit(first, stop_after=8, progress=False).status
    again = run.start(p)
    resumed = run.fit(again, progress=False)
    a, b = full.model.state_dict(), again.model.state_dict()
    return {"stopped": status, "resumed_from": resumed.resumed_from, "status": resumed.status,
            "equal": all(torch.equal(a[k], b[k]) for k in a), "max_abs_diff": max_diff(a, b)}


def check_deterministic(device: str, results: Path) -> dict[str, Any]:
    states = []
    for i in range(2):
        r = run.start(params_of("pcd_ebm", "eight_gaussians", device, results, f"det{i}", deterministic=True))
        run.fit(r, progress=False)
        states.append({k: v.detach().cpu() for k, v in r.model.state_dict().items()})
    torch.use_deterministic_algorithms(False)
    return {"equal": all(torch.equal(states[0][k], states[1][k]) for k in states[0]),
            "max_abs_diff": max_diff(*states)}


# --tiny on a CPU: the PCD EBM's AIS reverse start runs 2000 transitions (6 s of the smoke); AIS runs on the
# flow and the RBM there, and on every family on a GPU
TINY_SKIP = {"pcd_ebm": {"skip_metrics": "nll_ais_forward,nll_ais_reverse"}}


def check_families(device: str, results: Path, tiny: bool) -> dict[str, Any]:
    out = {}
    for family, (method, dataset) in FAMILIES.items():
        t0 = time.perf_counter()
        try:
            extra = TINY_SKIP.get(method, {}) if tiny else {}
            r = run.start(params_of(method, dataset, device, results, f"family-{family}", **extra))
            run.fit(r, progress=False)
            run.draw_samples(r)
            run.evaluate(r)
            record = run.finish(r)
            by_status: dict[str, int] = {}
            for row in record["rows"]:
                by_status[row["metric_status"]] = by_status.get(row["metric_status"], 0) + 1
            failed = sorted({f"{row['metric']}: {row['reason'][:120]}" for row in record["rows"]
                             if row["metric_status"] == "failed"})
            out[family] = {"method": method, "run_status": record["run_status"], "samplers": sorted(r.samples),
                           "metrics": by_status, "failed": failed, "row_device": record["rows"][0]["device"],
                           "seconds": round(time.perf_counter() - t0, 2),
                           "metric_seconds": {row["metric"]: row["meta"].get("eval_s") for row in record["rows"]
                                              if (row["meta"].get("eval_s") or 0) > 0.5}}
        except Exception as err:  # noqa: PERF203 - one family's error must not hide the others
            out[family] = {"method": method, "error": f"{type(err).__name__}: {err}"}
    return out


def syncs_during(fn: Callable[[], Any]) -> int:
    """Host syncs CUDA reports in ``fn`` (sync debug mode "warn", one warning each)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
            torch.cuda.set_sync_debug_mode(0)
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def under_error_mode(fn: Callable[[], Any]) -> str:
    """'ok', or the error torch.cuda.set_sync_debug_mode("error") raised in ``fn``."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
        return "ok"
    except RuntimeError as err:
        return f"sync: {str(err)[:200]}"
    finally:
        torch.cuda.set_sync_debug_mode(0)


def check_sync_free(device: str, results: Path) -> dict[str, Any]:
    if not device.startswith("cuda"):
        return {"skipped": "torch.cuda.set_sync_debug_mode needs CUDA"}
    from ebmbench.samplers.compiled import grad_fn
    from ebmbench.samplers.hmc import hmc_chain
    from ebmbench.samplers.langevin import ula_chain
    from ebmbench.samplers.mala import mala_chain

    out: dict[str, Any] = {"training_step": {}, "chains": {}, "sampler_syncs_per_step": {}}
    for family, (method, dataset) in FAMILIES.items():
        r = run.start(params_of(method, dataset, device, results, f"sync-{family}"))
        step_fn, make_optimizers = training_step(r.spec, r.cfg.grad_clip)
        optimizers = make_optimizers(r.model, r.cfg.lr, (r.cfg.adam_beta1, r.cfg.adam_beta2))
        data = r.dataset.train.to(r.model.device)
        g = torch.Generator(r.model.device).manual_seed(0)

        def next_batch(data=data, g=g):  # noqa: ANN001, ANN202
            return data[torch.randint(len(data), (32,), generator=g, device=data.device)]

        for _ in range(2):
            step_fn(r.model, next_batch, optimizers, g, r.cfg.method_params)
        out["training_step"][method] = under_error_mode(
            lambda r=r, f=step_fn, o=optimizers, g=g, nb=next_batch: [f(r.model, nb, o, g, r.cfg.method_params)
                                                                       for _ in range(3)])
    r = run.start(params_of("pcd_ebm", "eight_gaussians", device, results, "sync-chains"))
    model, g = r.model.eval(), torch.Generator(r.model.device).manual_seed(0)
    x0 = model.support.uniform(64, g, model.device)
    kw = {"generator": g, "grad": grad_fn(model)}
    chains = {"ula": lambda: ula_chain(model.energy, x0, steps=10, eps=0.01, temperature=1.0, box=model.support, **kw),
              "mala": lambda: mala_chain(model.energy, x0, steps=10, eps=0.01, box=model.support, sync=False, **kw),
              "hmc": lambda: hmc_chain(model.energy, x0, steps=5, leapfrog_steps=3, step_size=0.05,
                                       box=model.support, sync=False, **kw)}
    for name, fn in chains.items():
        fn()
        out["chains"][name] = under_error_mode(fn)
    for method, sampler, key in (("pcd_ebm", "langevin", "steps"), ("pcd_ebm", "mala", "steps"),
                                 ("pcd_ebm", "hmc", "steps"), ("ncsn", "annealed_langevin", "steps_per_sigma"),
                                 ("ddpm", "ddpm", "steps"), ("ddpm", "ddim", "steps"),
                                 ("ddpm", "dpm_solver", "steps")):
        r = run.start(params_of(method, "eight_gaussians", device, results, f"sync-{sampler}"))
        r.model.eval()
        counts = [syncs_during(lambda b={key: s}, r=r, name=sampler: r.model.sample(
            32, generator=torch.Generator(device).manual_seed(0), sampler=name, **b)) for s in (8, 16)]
        out["sampler_syncs_per_step"][sampler] = {"syncs_at_8_and_16": counts,
                                                  "per_step": (counts[1] - counts[0]) / 8}
    return out


def check_compiled(device: str, results: Path, tiny: bool) -> dict[str, Any]:
    if not device.startswith("cuda") and tiny:
        return {"skipped": "reduce-overhead compiles CUDA graphs; on a CPU it costs minutes of compile"}
    out = {}
    for sampler in ("langevin", "mala"):
        xs = {}
        for mode in ("off", "reduce-overhead"):
            r = run.start(params_of("pcd_ebm", "digits", device, results, f"compiled-{mode}", compile=mode))
            r.model.eval()
            s = r.model.sample(128, generator=torch.Generator(device).manual_seed(0), sampler=sampler, steps=20)
            xs[mode] = (s.x.detach().double().cpu(), s.info.get("compile_s"))
        out[sampler] = {"max_abs_diff": float((xs["off"][0] - xs["reduce-overhead"][0]).abs().max()),
                        "compile_s": xs["reduce-overhead"][1]}
    return out


def check_fid_features(device: str) -> dict[str, Any]:
    from ebmbench.data.convert import to_uint8
    from ebmbench.metrics import domain
    from ebmbench.metrics.fidelity import fidelity_metrics

    digits = load_dataset("digits")
    ex = domain.load_or_train(digits, device="cpu")
    ckpt = domain.load_tensors(ex.path)
    images = to_uint8(digits.test, digits)
    feats = {}
    for dev in dict.fromkeys(("cpu", device)):
        net = domain.DomainClassifier(**ckpt["arch"]).to(dev).eval()
        net.load_state_dict(ckpt["state_dict"])
        with devices.fp32_extraction(), torch.no_grad():
            feats[dev] = net(images.to(dev))[0].double().cpu()
    noisy = (digits.test + 0.3 * torch.randn(digits.test.shape, generator=torch.Generator().manual_seed(0)))
    fid = {dev: fidelity_metrics(noisy, digits, metrics=("fid",), device=dev)["fid"] for dev in feats}
    return {"feature_max_abs_diff": float((feats["cpu"] - feats[device]).abs().max()),
            "feature_scale": float(feats["cpu"].abs().max()), "fid_domain_by_device": fid,
            "note": "fid_domain on each device uses that device's own cached classifier (its cache key has the "
                    "device type); the feature comparison uses the CPU's weights on both"}


def synthetic_cifar(n: int, device: str) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, *recipes.CIFAR10_SHAPE, generator=g) * 2 - 1
    return Dataset("synthetic_cifar10", x, x[:8], x[:8], Box(-1.0, 1.0, recipes.CIFAR10_SHAPE), "continuous")


def recipe_step_ms(recipe: recipes.Recipe, device: str, tiny: bool) -> dict[str, Any]:
    spec = METHODS.get(recipe.method)
    values = {k: v.value for k, v in recipe.params.items()}
    own = {f.name for f in dataclasses.fields(spec.params)}
    method = {k: v for k, v in values.items() if k in own}
    batch = 2 if tiny else values.get("batch_size", 128)
    if tiny:  # the CPU smoke: a few Langevin steps, a small buffer
        method.update({k: v for k, v in {"langevin_steps": 2, "buffer_size": 8}.items() if k in own})
    params = spec.params(**method, arch=recipe.arch)
    data = synthetic_cifar(max(batch * 4, 16), device)
    model = spec.build(data, params).to(device)
    step_fn, make_optimizers = training_step(spec, values.get("grad_clip", 0.0))
    optimizers = make_optimizers(model, values["lr"], (values.get("adam_beta1", 0.9), values.get("adam_beta2", 0.999)))
    x, g = data.train.to(device), torch.Generator(device).manual_seed(0)

    def next_batch() -> torch.Tensor:
        return x[torch.randint(len(x), (batch,), generator=g, device=x.device)]

    def step() -> None:
        step_fn(model, next_batch, optimizers, g, params)

    model.train()
    for _ in range(0 if tiny else 3):  # warm-up: cuDNN autotune, allocator, buffer fill
        step()
    times = []
    for _ in range(1 if tiny else 5):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(1 if tiny else 4):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / (1 if tiny else 4))
    ms = 1000 * statistics.median(times)
    steps = values["train_steps"]
    return {"method": recipe.method, "arch": recipe.arch, "batch_size": batch, "ms_per_step": round(ms, 2),
            "train_steps": steps, "train_gpu_hours": round(ms * steps / 3.6e6, 2),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None}


def check_recipes(device: str, tiny: bool, keys: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    unknown = sorted(set(keys) - set(recipes.RECIPES))
    if unknown:
        raise ValueError(f"--recipes {unknown}: choose from {sorted(recipes.RECIPES)}")
    for key, recipe in recipes.RECIPES.items():
        if keys and key not in keys:
            continue
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        try:
            out[key] = recipe_step_ms(recipe, device, tiny)
        except Exception as err:  # noqa: PERF203 - an out-of-memory recipe is a finding
            out[key] = {"method": recipe.method, "error": f"{type(err).__name__}: {str(err)[:300]}"}
    hours = [v["train_gpu_hours"] for v in out.values() if "train_gpu_hours" in v]
    return {"by_recipe": out, "total_train_gpu_hours": round(sum(hours), 1),
            "basis": "median ms per step x the recipe's train_steps; batch 2 and 2 Langevin steps under --tiny "
                     "(a smoke, not an estimate); evaluation sampling not included"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=config.DEVICES)
    p.add_argument("--tiny", action="store_true", help="the smallest sizes: a smoke of every section (tests)")
    p.add_argument("--out", default="gpu_check.json", help="the JSON file written")
    p.add_argument("--skip", default="", help="comma-separated sections to leave out")
    p.add_argument("--recipes", default="", help="comma-separated recipes to time (default: all of them)")
    args = p.parse_args(argv)
    device = config.resolve_device(args.device)
    skip = set(filter(None, args.skip.split(",")))
    out: dict[str, Any] = {"args": vars(args), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp)
        checks = {"device": lambda: check_device(device), "resume": lambda: check_resume(device, results),
                  "deterministic": lambda: check_deterministic(device, results),
                  "families": lambda: check_families(device, results, args.tiny),
                  "sync_free": lambda: check_sync_free(device, results),
                  "compiled": lambda: check_compiled(device, results, args.tiny),
                  "fid_features": lambda: check_fid_features(device),
                  "recipes": lambda: check_recipes(device, args.tiny, [k for k in args.recipes.split(",") if k])}
        for name, fn in checks.items():
            if name not in skip:
                section(out, name, fn)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
