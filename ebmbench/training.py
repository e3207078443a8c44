"""One training loop for every method: steps, EMA, checkpoint/resume, divergence guard, curves."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ebmbench.config import RunConfig
from ebmbench.devices import autocast
from ebmbench.methods.base import MethodSpec, training_step
from ebmbench.metrics.cost import count_flops
from ebmbench.protocol import GenerativeModel
from ebmbench.results import atomic_torch_save, atomic_write_text, code_version
from ebmbench.serialization import CheckpointError, load_checkpoint, load_tensors

CHECKPOINT = "checkpoint.pt"
CURVES = "curves.jsonl"
CURVE_POINTS = "curve_points.jsonl"
SNAPSHOTS = "snapshots.pt"
RUN_STATE = (CHECKPOINT, CURVES, CURVE_POINTS, SNAPSHOTS)  # files that belong to one training state
# (model, step) -> curve records of the cheap sample metrics at that step; must not touch the training state
CurveFn = Callable[[GenerativeModel, int], list[dict[str, Any]]]


@dataclass
class TrainResult:
    """How training ended: ok, diverged (with step and reason) or interrupted (resumable)."""

    status: str
    steps: int
    wall_s: float
    reason: str = ""
    flops_per_step: float | None = None  # counted matmul/conv FLOPs of one training step (torch.utils.flop_counter)
    resumed_from: int = 0  # the checkpoint step training resumed from (0: a fresh start)
    moved_aside: str = ""  # a stale or unreadable checkpoint that was moved aside, and why

    @property
    def flops(self) -> float | None:
        """Counted training FLOPs of the steps done."""
        return None if self.flops_per_step is None else self.flops_per_step * self.steps


def ema_step(ema: list[Tensor], params: list[Tensor], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * theta, parameters only, on lists made once per training.

    By hand rather than torch.optim.swa_utils.AveragedModel: that keeps a full model copy
    whose buffers (here the EBM replay buffer) would go stale or be averaged.
    """
    with torch.no_grad():  # one foreach kernel over all tensors (the same lerp per element as a loop)
        torch._foreach_lerp_(ema, params, 1.0 - decay)


def load_weights(model: GenerativeModel, weights: dict[str, Tensor]) -> None:
    """Overwrite the model's parameters with ``weights`` (e.g. the EMA), keeping its buffers."""
    model.load_state_dict({**model.state_dict(), **weights})


def host_values(pending: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Diagnostics of several steps as floats, with one device-to-host copy for all of them."""
    keys = [list(d) for d in pending]
    tensors = [torch.as_tensor(v, dtype=torch.float64).reshape(()).cpu() if not isinstance(v, Tensor)
               else v.detach().to(torch.float64).reshape(()) for d in pending for v in d.values()]
    if not tensors:
        return [{} for _ in pending]
    devices = {t.device for t in tensors}
    flat = torch.stack([t.to(next(iter(devices))) for t in tensors]).tolist() if len(devices) == 1 else \
        [float(t) for t in tensors]
    out, i = [], 0
    for ks in keys:
        out.append(dict(zip(ks, flat[i:i + len(ks)], strict=True)))
        i += len(ks)
    return out


def guard_every(device: torch.device, cfg: RunConfig) -> int:
    """Steps between reads of the diagnostics: every step on the CPU (a read costs nothing there), every
    ``log_every`` on an accelerator (no host sync per step; every step is still checked, in order)."""
    return 1 if device.type == "cpu" else cfg.log_every


def divergence(diag: dict[str, float], cfg: RunConfig) -> str:
    """The reason training must stop (a non-finite diagnostic; loss, energy or gradient beyond its bound), or ''."""
    bad = sorted(k for k, v in diag.items() if not math.isfinite(v))
    if bad:
        return f"non-finite {', '.join(bad)} ({', '.join(str(diag[k]) for k in bad)})"
    bounds = [("loss", "max_loss", cfg.max_loss), ("grad_norm", "max_grad_norm", cfg.max_grad_norm)]
    bounds += [(k, "max_energy", cfg.max_energy) for k in diag if k.startswith("energy_") and k != "energy_gap"]
    for key, name, bound in bounds:
        if key in diag and abs(diag[key]) > bound:
            return f"|{key}| = {abs(diag[key]):.3g} exceeds {name} = {bound:.3g}"
    return ""


def rng_states(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every random state training draws from, as CPU ByteTensors: the run's generator, torch's global CPU
    generator and, on CUDA, every GPU's default generator (dropout in the CIFAR U-Net draws from it)."""
    states: dict[str, Any] = {"generator": generator.get_state(), "torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return states


def restore_rng(ckpt: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    """Set the states ``rng_states`` saved; CUDA states only on CUDA, for the GPUs that exist now."""
    generator.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    saved = ckpt.get("cuda_rng") or []
    if device.type == "cuda" and saved:
        torch.cuda.set_rng_state_all(saved[: torch.cuda.device_count()])


def save_checkpoint(path: Path, step: int, model, optimizers, ema, generator, wall_s: float,
                    key: dict[str, str]) -> None:
    """The resume point, stamped with ``key`` (config hash and code version) so it is resumed only by its run."""
    atomic_torch_save(path, {
        "step": step, "model": model.state_dict(), "ema": ema,
        "optimizers": {k: opt.state_dict() for k, opt in optimizers.items()},
        **rng_states(generator, generator.device), "wall_s": wall_s, **key,
    })


def state_key(cfg: RunConfig) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the run's config hash and the code version."""
    return {"config_hash": cfg.config_hash, "code_version": code_version()}


def move_aside(run_dir: Path, why: str) -> str:
    """Rename every training-state file to ``<name>.stale-<UTC time>``: kept for a person, never resumed."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    moved = []
    for name in RUN_STATE:
        path = run_dir / name
        if path.exists():
            path.rename(run_dir / f"{name}.stale-{stamp}")
            moved.append(name)
    msg = f"moved aside {', '.join(moved)} of {run_dir} (suffix .stale-{stamp}): {why}; training starts fresh"
    print(msg)
    return msg


def load_resumable(run_dir: Path, key: dict[str, str]) -> tuple[dict | None, str]:
    """The run's checkpoint when it was written by this config and code version; anything else is moved aside."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None, ""
    try:  # onto the CPU, tensors and primitives only: runs no code, and RNG states stay CPU ByteTensors
        return load_checkpoint(path, expect=key), ""
    except CheckpointError as err:  # truncated, corrupt, or another run's: kept for a person, training starts fresh
        return None, move_aside(run_dir, str(err))


def step_flops(step_fn, model, make_optimizers, cfg: RunConfig, data: Tensor) -> float | None:
    """Counted matmul/conv FLOPs of one training step, on a copy of the model (the run's state is untouched)."""
    twin = copy.deepcopy(model)
    optimizers = make_optimizers(twin, cfg.lr, (cfg.adam_beta1, cfg.adam_beta2))
    generator = torch.Generator(model.device).manual_seed(cfg.seed)

    def next_batch() -> Tensor:
        return data[torch.randint(len(data), (cfg.batch_size,), generator=generator, device=model.device)]

    # the CPU's and the device's global RNG (dropout) are restored: counting does not move the run's streams
    with torch.random.fork_rng(devices=cuda_devices(model.device)):
        try:  # FlopCount, not FlopCounterMode: the same formulas, and it counts steps that differentiate a gradient
            return float(count_flops(lambda: step_fn(twin, next_batch, optimizers, generator, cfg.method_params)))
        except Exception:  # FLOPs that cannot be counted are None (recorded as missing), never guessed
            return None


def cuda_devices(device: torch.device) -> list[int]:
    """The CUDA device whose RNG a step on ``device`` draws from (for ``torch.random.fork_rng``), or none."""
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []


def curve_steps(train_steps: int, points: int) -> list[int]:
    """``points`` steps at successive doublings, ending at ``train_steps`` (train_steps / 2^k, k < points)."""
    return sorted({max(1, round(train_steps / 2**k)) for k in range(points)}) if points > 0 else []


def record_curve_point(path: Path, curve_fn: CurveFn, model: GenerativeModel, step: int, wall_s: float,
                       flops: float | None, weights: dict[str, Tensor] | None) -> float:
    """Evaluate the cheap sample metrics at ``step`` with the evaluated ``weights`` (the EMA; None: the raw
    weights) and append them; returns the seconds it took.

    The raw weights and the global RNG are restored afterwards and ``curve_fn`` draws from its own
    generator, so a run with curve points trains exactly like one without.
    """
    t0 = time.perf_counter()
    raw = {n: p.detach().clone() for n, p in model.named_parameters()}
    try:
        with torch.random.fork_rng(devices=cuda_devices(model.device)):  # CPU and device RNG restored after
            if weights is not None:
                load_weights(model, weights)
            model.eval()
            records = curve_fn(model, step)
    finally:
        load_weights(model, raw)
        model.train()
    with path.open("a") as f:
        for rec in records:
            f.write(json.dumps({"step": step, "train_wall_s": wall_s, "train_flops": flops, **rec}) + "\n")
    return time.perf_counter() - t0


def save_snapshot(path: Path, model: GenerativeModel, step: int, n: int = 64, seed: int = 12345) -> None:
    """Append samples of the current (raw) weights, drawn with the same fixed seed at every snapshot.

    The model is put in eval mode for the draw (no batch-norm statistics are updated) and the
    training generator is not touched, so a run with snapshots trains exactly like one without.
    """
    snaps = load_tensors(path) if path.exists() else {}
    model.eval()
    with torch.no_grad():
        x = model.sample(n, generator=torch.Generator(model.device).manual_seed(seed)).x
    model.train()
    snaps = {k: v for k, v in snaps.items() if k < step} | {step: x.cpu()}
    atomic_torch_save(path, snaps)


def truncate_curves(path: Path, step: int) -> None:
    """Drop curve records after ``step`` (written after the last checkpoint, before a crash)."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def train(
    model: GenerativeModel,
    spec: MethodSpec,
    cfg: RunConfig,
    data: Tensor,
    run_dir: Path,
    *,
    stop_after: int | None = None,
    progress: bool = True,
    curve_fn: CurveFn | None = None,
) -> tuple[TrainResult, dict[str, Tensor]]:
    """Train ``model`` on ``data`` rows; resumes from ``run_dir/checkpoint.pt`` when it was written by this
    config and code version (a stale or unreadable one is moved aside and training starts fresh).

    ``curve_fn`` is called at ``curve_steps(train_steps, cfg.curve_points)`` (learning-curve points; their
    time is excluded from the training wall clock). ``stop_after`` ends the process-equivalent early
    (tests simulate a crash with it). Returns how training ended and the EMA weights.
    """
    device = model.device
    data = data.to(device)
    step_fn, make_optimizers = training_step(spec, cfg.grad_clip)
    optimizers = make_optimizers(model, cfg.lr, (cfg.adam_beta1, cfg.adam_beta2))
    ema = {n: p.detach().clone() for n, p in model.named_parameters()}
    generator = torch.Generator(device).manual_seed(cfg.seed)
    ckpt_path, curves_path, points_path = run_dir / CHECKPOINT, run_dir / CURVES, run_dir / CURVE_POINTS
    key = state_key(cfg)
    flops = step_flops(step_fn, model, make_optimizers, cfg, data)
    marks = set(curve_steps(cfg.train_steps, cfg.curve_points)) if curve_fn is not None else set()
    start, wall_before = 0, 0.0
    ckpt, moved = load_resumable(run_dir, key)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])  # copies into the model's tensors, on its device
        for k, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][k])  # moves state to its parameters' device
        ema = {n: v.to(device) for n, v in ckpt["ema"].items()}
        restore_rng(ckpt, generator, device)
        start, wall_before = ckpt["step"], ckpt["wall_s"]
        truncate_curves(curves_path, start)
        truncate_curves(points_path, start)
    else:
        for path in (curves_path, points_path, run_dir / SNAPSHOTS):
            path.unlink(missing_ok=True)
    t0, eval_s = time.perf_counter(), 0.0

    def wall() -> float:
        return wall_before + time.perf_counter() - t0 - eval_s

    def result(status: str, steps: int, reason: str = "") -> TrainResult:
        return TrainResult(status, steps, wall(), reason, flops, start, moved)

    model.train()
    bar = tqdm(range(start, cfg.train_steps), initial=start, total=cfg.train_steps, disable=not progress,
               desc=f"{cfg.method} on {cfg.dataset}")

    def next_batch() -> Tensor:
        return data[torch.randint(len(data), (cfg.batch_size,), generator=generator, device=device)]

    every, pending = guard_every(device, cfg), []
    names, params = zip(*model.named_parameters())  # the same Parameter objects all training (loads copy into them)
    ema_list, param_list = [ema[n] for n in names], list(params)
    precision = autocast(device.type, cfg.precision)  # bf16: autocast; fp32, tf32: a null context
    for step in bar:
        with precision:
            pending.append(step_fn(model, next_batch, optimizers, generator, cfg.method_params))
        done = step + 1
        if (done % every == 0 or done % cfg.log_every == 0 or done % cfg.checkpoint_every == 0 or done in marks
                or done == cfg.train_steps or (cfg.snapshot_every and done % cfg.snapshot_every == 0)
                or (stop_after is not None and done >= stop_after)):
            for back, values in enumerate(host_values(pending)):
                reason = divergence(values, cfg)
                if reason:  # nothing after the last good checkpoint is kept
                    return result("diverged", done - len(pending) + back, reason), ema
            diag, pending = values, []
        ema_step(ema_list, param_list, cfg.ema_decay)
        if done % cfg.log_every == 0 or done == cfg.train_steps:
            record = {"step": done, **diag, "wall_s": wall()}
            with curves_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{diag['loss']:.4g}")
        if cfg.snapshot_every and done % cfg.snapshot_every == 0:
            save_snapshot(run_dir / SNAPSHOTS, model, done)
        if done in marks:
            eval_s += record_curve_point(points_path, curve_fn, model, done, wall(),
                                         None if flops is None else flops * done,
                                         ema if cfg.eval_weights == "ema" else None)
        if done % cfg.checkpoint_every == 0 or done == cfg.train_steps:
            save_checkpoint(ckpt_path, done, model, optimizers, ema, generator, wall(), key)
        if stop_after is not None and done >= stop_after and done < cfg.train_steps:
            return result("interrupted", done), ema
    model.eval()
    return result("ok", cfg.train_steps), ema
