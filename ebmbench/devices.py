"""Devices, numerical precision and determinism of a run; one GPU per Dask worker.

A run names its device (``cpu | cuda | auto``; auto is cuda when torch sees one) and its ``precision``:

- ``fp32``: today's numerics. On the CPU nothing is touched (bit-identical to before these parameters existed);
  on CUDA TF32 is switched off for matmuls and convolutions, so fp32 means fp32.
- ``tf32``: TF32 tensor cores for float32 matmuls and cuDNN convolutions (Ampere and later; a no-op on the CPU).
- ``bf16``: ``torch.autocast`` to bfloat16 around training steps and sampling (Kalamkar et al. 2019); parameters,
  optimizer state and the samplers' accumulators stay float32.

``deterministic: true`` asks torch for deterministic algorithms (``torch.use_deterministic_algorithms``, with
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` that cuBLAS needs for it) and switches cuDNN's autotuner off; otherwise, on
CUDA only, ``cudnn.benchmark`` picks the fastest convolution per shape. Feature extraction for FID/KID/IS always
runs in float32 with TF32 off (``extraction_precision``), whatever the run's precision, so a row's extractor
features do not depend on the GPU generation's defaults.

This module imports nothing of ebmbench, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

DEVICES = ("cpu", "cuda", "auto")
PRECISIONS = ("fp32", "tf32", "bf16")
CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs for deterministic results (CUDA docs, "Results reproducibility")
EXTRACTION_PRECISION = "fp32, TF32 off for matmuls and cuDNN convolutions"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a CUDA device, else ``cpu``; a named device is returned as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def tf32_flags() -> dict[str, bool]:
    """The process' TF32 switches: float32 matmuls (cuBLAS) and cuDNN convolutions."""
    return {"matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32)}


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def apply_policy(device: str, precision: str = "fp32", deterministic: bool = False) -> dict[str, Any]:
    """Set the process' numerics for a run on ``device`` (resolved) and return what was set, for the row's meta.

    On the CPU with fp32 and not deterministic nothing changes (today's behaviour, bit for bit)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if device.startswith("cuda"):
        set_tf32(precision == "tf32")
        torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    if deterministic != torch.are_deterministic_algorithms_enabled():  # a run in the same process set it before
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.deterministic = deterministic
    return policy(device, precision, deterministic)


def policy(device: str, precision: str, deterministic: bool) -> dict[str, Any]:
    """The numerics in force: the run's choices and the process' flags."""
    return {"precision": precision, "deterministic": deterministic, "autocast": autocast_dtype(precision),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark), **tf32_flags(),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


def autocast_dtype(precision: str) -> str | None:
    return "bfloat16" if precision == "bf16" else None


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """bf16: ``torch.autocast`` on the device's type; fp32 and tf32: nothing (a null context)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def fp32_extraction() -> Iterator[None]:
    """Feature extraction in float32 with TF32 off and no autocast, the flags restored afterwards."""
    before = tf32_flags()
    set_tf32(False)
    try:
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before["matmul_allow_tf32"]
        torch.backends.cudnn.allow_tf32 = before["cudnn_allow_tf32"]


def cuda_provenance() -> dict[str, Any]:
    """CUDA runtime, cuDNN and driver versions, the GPU and its compute capability, and the TF32 flags."""
    out: dict[str, Any] = {"cuda_runtime": torch.version.cuda, "cudnn": None, "driver": None, "gpu": None,
                           **tf32_flags(), "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
                           "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    if not torch.cuda.is_available():
        return out
    out["cudnn"] = torch.backends.cudnn.version()
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    out["gpu"] = f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB)"
    out["driver"] = driver_version()
    return out


def driver_version() -> str | None:
    """The NVIDIA driver version from NVML (pynvml, when installed), else from the kernel module's file."""
    try:
        import pynvml  # noqa: PLC0415 - optional; torch.cuda uses it when present

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:  # no NVML: read what the kernel module says
        try:
            with open("/proc/driver/nvidia/version") as f:
                return f.readline().strip()
        except OSError:
            return None


# --- one GPU per Dask worker ------------------------------------------------------------------------------------

def worker_gpus(workers: int, gpus: int) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` of each of ``workers`` workers on a node with ``gpus`` GPUs: one GPU each,
    round robin over the ids this process may use (its own ``CUDA_VISIBLE_DEVICES``, else 0 .. gpus - 1)."""
    if gpus < 1:
        raise ValueError("worker_gpus needs at least one GPU")
    visible = [s.strip() for s in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if s.strip()]
    ids = visible or [str(i) for i in range(gpus)]
    return [ids[i % len(ids)] for i in range(workers)]


def local_cluster(workers: int, gpus: int | None = None) -> Any:
    """A Dask cluster of ``workers`` single-threaded worker processes on this node, each on its own GPU.

    Dask's ``LocalCluster`` gives every worker the parent's environment, so on a node with several GPUs every
    worker's ``cuda`` would be GPU 0. With two or more GPUs this is a ``SpecCluster`` whose Nannies each start
    their worker with ``CUDA_VISIBLE_DEVICES`` set to one GPU (round robin, so more workers than GPUs share
    them): the worker's papermill kernels inherit it and see that GPU as ``cuda:0``, also after a restart.
    This is what dask-cuda's ``LocalCUDACluster`` does per node (it also pins CPU affinity; it pulls in the RAPIDS
    pins of dask, so it is not a dependency: start one yourself and pass its address with ``--scheduler``).
    With fewer than two GPUs it is a plain ``LocalCluster``.
    """
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    gpus = torch.cuda.device_count() if gpus is None else gpus
    if gpus < 2:
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
    specs = {i: {"cls": Nanny, "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": gpu}}}
             for i, gpu in enumerate(worker_gpus(workers, gpus))}
    return SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}})
