"""One training loop for every method: steps, EMA, checkpoint/resume, divergence guard, curves."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ebmbench.config import RunConfig
from ebmbench.methods.base import MethodSpec, training_step
from ebmbench.protocol import GenerativeModel
from ebmbench.results import atomic_torch_save, atomic_write_text

CHECKPOINT = "checkpoint.pt"
CURVES = "curves.jsonl"
SNAPSHOTS = "snapshots.pt"


@dataclass
class TrainResult:
    """How training ended: ok, diverged (with step and reason) or interrupted (resumable)."""

    status: str
    steps: int
    wall_s: float
    reason: str = ""


def ema_update(ema: dict[str, Tensor], model: GenerativeModel, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * theta, parameters only.

    By hand rather than torch.optim.swa_utils.AveragedModel: that keeps a full model copy
    whose buffers (here the EBM replay buffer) would go stale or be averaged.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            ema[name].lerp_(p.detach(), 1.0 - decay)


def load_weights(model: GenerativeModel, weights: dict[str, Tensor]) -> None:
    """Overwrite the model's parameters with ``weights`` (e.g. the EMA), keeping its buffers."""
    model.load_state_dict({**model.state_dict(), **weights})


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


def save_checkpoint(path: Path, step: int, model, optimizers, ema, generator, wall_s: float) -> None:
    atomic_torch_save(path, {
        "step": step, "model": model.state_dict(), "ema": ema,
        "optimizers": {k: opt.state_dict() for k, opt in optimizers.items()},
        "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "wall_s": wall_s,
    })


def save_snapshot(path: Path, model: GenerativeModel, step: int, n: int = 64, seed: int = 12345) -> None:
    """Append samples of the current (raw) weights, drawn with the same fixed seed at every snapshot.

    The model is put in eval mode for the draw (no batch-norm statistics are updated) and the
    training generator is not touched, so a run with snapshots trains exactly like one without.
    """
    snaps = torch.load(path, weights_only=True) if path.exists() else {}
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
) -> tuple[TrainResult, dict[str, Tensor]]:
    """Train ``model`` on ``data`` rows; resumes from ``run_dir/checkpoint.pt`` when present.

    ``stop_after`` ends the process-equivalent early (tests simulate a crash with it).
    Returns how training ended and the EMA weights.
    """
    device = model.device
    data = data.to(device)
    step_fn, make_optimizers = training_step(spec, cfg.grad_clip)
    optimizers = make_optimizers(model, cfg.lr, (cfg.adam_beta1, cfg.adam_beta2))
    ema = {n: p.detach().clone() for n, p in model.named_parameters()}
    generator = torch.Generator(device).manual_seed(cfg.seed)
    ckpt_path, curves_path = run_dir / CHECKPOINT, run_dir / CURVES
    start, wall_before = 0, 0.0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        for k, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][k])
        ema = ckpt["ema"]
        generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        start, wall_before = ckpt["step"], ckpt["wall_s"]
        truncate_curves(curves_path, start)
    elif curves_path.exists():
        curves_path.unlink()
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(range(start, cfg.train_steps), initial=start, total=cfg.train_steps, disable=not progress,
               desc=f"{cfg.method} on {cfg.dataset}")

    def next_batch() -> Tensor:
        return data[torch.randint(len(data), (cfg.batch_size,), generator=generator, device=device)]

    for step in bar:
        diag = step_fn(model, next_batch, optimizers, generator, cfg.method_params)
        reason = divergence(diag, cfg)
        if reason:  # nothing after the last good checkpoint is kept
            return TrainResult("diverged", step, wall_before + time.perf_counter() - t0, reason), ema
        ema_update(ema, model, cfg.ema_decay)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.train_steps:
            record = {"step": done, **diag, "wall_s": wall_before + time.perf_counter() - t0}
            with curves_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{diag['loss']:.4g}")
        if cfg.snapshot_every and done % cfg.snapshot_every == 0:
            save_snapshot(run_dir / SNAPSHOTS, model, done)
        if done % cfg.checkpoint_every == 0 or done == cfg.train_steps:
            save_checkpoint(ckpt_path, done, model, optimizers, ema, generator,
                            wall_before + time.perf_counter() - t0)
        if stop_after is not None and done >= stop_after and done < cfg.train_steps:
            return TrainResult("interrupted", done, wall_before + time.perf_counter() - t0), ema
    model.eval()
    return TrainResult("ok", cfg.train_steps, wall_before + time.perf_counter() - t0), ema
