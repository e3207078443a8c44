"""``ebmbench evaluate``: score samples from anywhere (a file of arrays or a folder of PNGs) with every sample metric,
under the protocol a suite uses, into the same tidy rows (as torch-fidelity's ``fidelity --input1 DIR`` and
clean-fid's ``compute_fid(dir1, dir2)`` take folders).

The samples are checked against the dataset first (shape, dtype, value range, finite values, enough of them for
N), each problem one line naming the file and what to fix. Then every registered sample metric runs on the first N
samples, with the same code, the same extractor and the same cached floors and statistics as a run's evaluation.
The rows have ``family = sampler = "external"`` and no cost: nothing was counted (``meta.cost = "not counted"``);
an NFE the user states is kept as ``meta.stated_nfe`` and shown as stated. With ``suite`` the record goes to
``<results>/<suite>/external/<run id>/result.json``, which ``results.load_results`` reads beside the suite's runs
(a rerun of the suite keeps it), so the suite's leaderboard ranks it, marked external.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ebmbench.builtins import METHODS, SAMPLE_METRICS, load_dataset
from ebmbench.data.base import Dataset, tensors_hash
from ebmbench.results import SCHEMA_VERSION, MetricValue, atomic_torch_save, atomic_write_json, make_rows, provenance
from ebmbench.run import kept_samples, measure, to_value
from ebmbench.serialization import load_tensors

EXTERNAL = "external"  # the family and sampler of every external row, and the folder they are kept in
ARRAY_KEYS = ("samples", "x", "arr_0")  # where an .npz / .pt dict keeps the samples, in the order tried
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RANGE_SLACK = 0.1  # float images may overshoot their support by this fraction of its width (to_uint8 clamps them)
MIN_2D = 10  # fewest 2D samples the k-NN entropy (k = 3) and the mode histogram make sense on
DEFAULT_N = 1000  # RunConfig.n_eval_samples' default: N without a suite


class SampleFileError(ValueError):
    """A sample file that cannot be scored; the one-line message names the file and what to fix."""


# ---------------------------------------------------------------- reading

def _pick(arrays: dict[str, Any], path: Path) -> tuple[Any, float | None]:
    """The samples and the stated NFE (key ``nfe``) of an .npz or a .pt dict."""
    key = next((k for k in ARRAY_KEYS if k in arrays), None)
    if key is None:
        raise SampleFileError(f"{path}: no array named {' or '.join(ARRAY_KEYS)} (found {sorted(arrays)}); save the "
                              "samples under 'samples', e.g. np.savez(path, samples=x, nfe=100)")
    nfe = arrays.get("nfe")
    return arrays[key], (float(np.asarray(nfe)) if nfe is not None else None)


def _read_pngs(folder: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(folder.glob("*.png"))
    if not files:
        raise SampleFileError(f"{folder}: a folder of samples must hold .png files; found none")
    images = []
    for f in files:
        with Image.open(f) as im:
            images.append(np.asarray(im.convert("L") if im.mode in ("L", "1", "P", "I;16") else im.convert("RGB")))
        if images[-1].shape != images[0].shape:
            raise SampleFileError(f"{f}: shape {images[-1].shape} differs from {files[0].name}'s {images[0].shape}; "
                                  "every image of the folder must have the same size")
    return np.stack(images)


def read_samples(path: str | Path) -> tuple[Tensor, float | None]:
    """The samples in ``path`` (.npz, .npy, .pt or a folder of PNGs) as a tensor, and the NFE stated with them."""
    path = Path(path)
    if not path.exists():
        raise SampleFileError(f"{path}: no such file or folder")
    nfe = None
    try:
        if path.is_dir():
            arr = _read_pngs(path)
        elif path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arr, nfe = _pick({k: z[k] for k in z.files}, path)
        elif path.suffix in (".pt", ".pth"):
            obj = load_tensors(path)
            arr, nfe = _pick(obj, path) if isinstance(obj, dict) else (obj, None)
        else:
            raise SampleFileError(f"{path}: unknown format {path.suffix!r}; give .npz, .npy, .pt or a folder of .png")
    except SampleFileError:
        raise
    except Exception as err:  # a truncated or pickled file: refused, never unpickled
        raise SampleFileError(f"{path}: cannot be read ({type(err).__name__}: {str(err)[:200]})") from None
    if isinstance(arr, np.ndarray):
        if arr.dtype.kind not in "fiub":
            raise SampleFileError(f"{path}: dtype {arr.dtype} is not numeric; save float or uint8 arrays")
        arr = torch.from_numpy(np.ascontiguousarray(arr))
    if not isinstance(arr, Tensor):
        raise SampleFileError(f"{path}: holds a {type(arr).__name__}, not an array of samples")
    return arr, nfe


# ---------------------------------------------------------------- checking against the dataset

def _image_layout(x: Tensor, shape: tuple[int, ...], path: Path, dataset: Dataset) -> Tensor:
    """(N, C, H, W) from (N, C, H, W), (N, H, W) for one channel, or channels-last (N, H, W, C)."""
    c, h, w = shape
    if x.dim() == 4 and tuple(x.shape[1:]) == (c, h, w):
        return x
    if x.dim() == 3 and c == 1 and tuple(x.shape[1:]) == (h, w):
        return x.unsqueeze(1)
    if x.dim() == 4 and tuple(x.shape[1:]) == (h, w, c):
        return x.permute(0, 3, 1, 2)
    got = "×".join(map(str, x.shape[1:])) or "scalars"
    raise SampleFileError(f"{path}: samples of shape {got}, but dataset {dataset.name!r} holds {c}×{h}×{w} images "
                          f"(C×H×W; H×W×C and H×W for one channel are read too); draw samples of the dataset's size")


def _finite(x: Tensor, path: Path) -> None:
    bad = int((~torch.isfinite(x.reshape(len(x), -1))).any(dim=1).sum())
    if bad:
        raise SampleFileError(f"{path}: {bad} of {len(x)} samples contain NaN or inf; remove them or fix the sampler "
                              "(a diverged sampler has no score)")


def to_model_space(x: Tensor, dataset: Dataset, path: str | Path) -> Tensor:
    """The samples as float32 in the dataset's model space, or SampleFileError naming what does not fit:
    the shape, the dtype, non-finite values, values outside the support (beyond a small overshoot)."""
    path, shape, box = Path(path), dataset.shape, dataset.support
    if x.dim() < 2 or len(x) == 0:
        raise SampleFileError(f"{path}: expected an array of samples (N, {', '.join(map(str, shape))}), got shape "
                              f"{tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise SampleFileError(f"{path}: dtype {x.dtype}; save float samples in [{box.low:g}, {box.high:g}]")
    images = len(shape) == 3
    if images:
        x = _image_layout(x, shape, path, dataset)
    elif tuple(x.shape[1:]) != shape:
        raise SampleFileError(f"{path}: samples of shape {tuple(x.shape[1:])}, but dataset {dataset.name!r} holds "
                              f"points of shape {shape}; save an (N, {', '.join(map(str, shape))}) array")
    if x.dtype == torch.uint8:
        if not images:
            raise SampleFileError(f"{path}: uint8 values for the points of {dataset.name!r}; save float coordinates")
        return (box.low + (box.high - box.low) * x.float() / 255.0).contiguous()  # bytes: to_uint8 maps them back
    if not x.is_floating_point():
        raise SampleFileError(f"{path}: integer dtype {x.dtype}; save uint8 bytes (0..255) or floats in "
                              f"[{box.low:g}, {box.high:g}]")
    x = x.float()
    _finite(x, path)
    width = box.high - box.low
    slack = RANGE_SLACK * width if images else width
    lo, hi = float(x.min()), float(x.max())
    if lo < box.low - slack or hi > box.high + slack:
        what = "dataset's support" if images else "density's box"
        raise SampleFileError(f"{path}: values in [{lo:.4g}, {hi:.4g}], but {dataset.name!r} lives in "
                              f"[{box.low:g}, {box.high:g}] (the {what}); rescale the samples to it"
                              + (" (or save uint8 bytes 0..255)" if images else ""))
    return x.contiguous()


def min_samples(dataset: Dataset) -> int:
    """Fewest samples the sample metrics take: twice the domain extractor's features for FID (fidelity's guard),
    MIN_2D for the k-NN estimators."""
    if len(dataset.shape) == 3:
        from ebmbench.metrics.domain import DEFAULT_PARAMS, DomainParams

        return 2 * DEFAULT_PARAMS.get(dataset.name, DomainParams()).feature_dim
    return MIN_2D


def protocol_n(suite: str | None, dataset: str, results_dir: str) -> int:
    """N of the suite's runs on ``dataset`` (their n_eval_samples), or RunConfig's default without a suite."""
    if not suite:
        return DEFAULT_N
    from ebmbench.suites import load_suite

    _, runs = load_suite(suite, results_dir)
    ns = sorted({r.cfg.n_eval_samples for r in runs if getattr(r.cfg, "dataset", None) == dataset})
    if not ns:
        raise SampleFileError(f"suite {suite!r} has no run on dataset {dataset!r}: its rows would stand alone; "
                              "pick the suite's dataset, or leave out --suite")
    if len(ns) > 1:
        raise SampleFileError(f"suite {suite!r} scores {ns} samples on {dataset!r} in different runs; pass --n")
    return ns[0]


def checked(x: Tensor, dataset: Dataset, n: int, path: str | Path) -> Tensor:
    """The first ``n`` samples in model space, after every check."""
    x = to_model_space(x, dataset, path)
    need = min_samples(dataset)
    if n < need:
        raise SampleFileError(f"{path}: N = {n} is fewer than the {need} samples the metrics of {dataset.name!r} need; "
                              f"score at least {need}")
    if len(x) < n:
        raise SampleFileError(f"{path}: {len(x)} samples, fewer than the N = {n} the protocol scores per setting; "
                              f"draw at least {n} (or pass --n {len(x)}, not comparable with N = {n} rows)")
    return x[:n]


# ---------------------------------------------------------------- scoring and recording

def score(x: Tensor, dataset: Dataset, meta: dict[str, Any], metrics: list[str] | None = None) -> list[MetricValue]:
    """Every registered sample metric on ``x`` (or only ``metrics``; the others are not_applicable rows that say
    so), as a run's evaluation computes it; no cost (nothing counted)."""
    unknown = sorted(set(metrics or ()) - set(SAMPLE_METRICS.names()))
    if unknown:
        raise SampleFileError(f"--metrics: unknown sample metric(s) {unknown}; choose from {SAMPLE_METRICS.names()}")
    values = []
    for metric in (SAMPLE_METRICS.get(m) for m in SAMPLE_METRICS.names()):
        t0 = time.perf_counter()
        if metrics and metric.name not in metrics:
            status, out = "not_applicable", f"not computed: `ebmbench evaluate --metrics {','.join(metrics)}`"
        else:
            status, out = measure(metric, x, dataset)
        value = to_value(metric.name, status, out, sampler=EXTERNAL, eval_s=time.perf_counter() - t0)
        value.meta.update(meta)
        values.append(value)
    return values


def evaluate_file(path: str | Path, dataset_name: str, name: str, *, suite: str | None = None, n: int | None = None,
                  nfe: float | None = None, seed: int = 0, results_dir: str = "results",
                  metrics: list[str] | None = None) -> dict[str, Any]:
    """Check, score and record the samples in ``path`` as method ``name`` on ``dataset_name``; returns the record
    (written to ``<results_dir>/<suite or 'external'>/external/<run id>/result.json``)."""
    if not NAME.fullmatch(name):
        raise SampleFileError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (e.g. my-gan)")
    if name in METHODS:
        raise SampleFileError(f"--name {name!r} is a registered method; name the external model differently")
    if nfe is not None and not (nfe >= 0):
        raise SampleFileError(f"--nfe {nfe!r}: a stated NFE is a number >= 0")
    dataset = load_dataset(dataset_name)
    raw, stated = read_samples(path)
    stated = nfe if nfe is not None else stated
    n = n or protocol_n(suite, dataset_name, results_dir)
    x = checked(raw, dataset, n, path)
    digest = hashlib.sha256(json.dumps([tensors_hash(x), name, stated, seed]).encode()).hexdigest()[:16]
    run_id = f"{dataset_name}__{name}__{EXTERNAL}__s{seed}__{digest[:8]}"
    meta = {EXTERNAL: True, "cost": "not counted", "stated_nfe": stated, "source": Path(path).name,
            "samples_hash": tensors_hash(x)}
    values = score(x, dataset, meta, metrics)
    folder = Path(results_dir) / (suite_folder(suite) if suite else EXTERNAL) / EXTERNAL / run_id
    fields = {"run_id": run_id, "suite": suite_folder(suite) if suite else EXTERNAL, "dataset": dataset_name,
              "dataset_hash": dataset.content_hash, "family": EXTERNAL, "method": name, "seed": seed,
              "run_status": "ok", "train_steps": None, "train_wall_s": None, "train_flops": None, "threads": None,
              "config_hash": digest, **provenance("cpu")}
    record = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "run_status": "ok",
              "rows": make_rows(fields, values), "weights": "none: samples scored from a file"}
    atomic_torch_save(folder / "samples.pt", {EXTERNAL: kept_samples(x, dataset)})
    atomic_write_json(folder / "result.json", record)
    return record


def suite_folder(suite: str) -> str:
    """The results folder name of a suite given by name or by .yaml path."""
    if suite.endswith((".yaml", ".yml")):
        from ebmbench.suites import read_suite_file, suite_path

        path = suite_path(suite)
        return read_suite_file(path).get("name") or path.stem
    return suite


def lines(record: dict[str, Any]) -> list[str]:
    """The record's rows as text: each computed metric with its floor, each failed one with its reason, and how many
    do not apply."""
    out, skipped = [], 0
    for r in record["rows"]:
        floor = r["meta"].get("floor")
        floor = floor.get("mean") if isinstance(floor, dict) else floor
        if r["metric_status"] == "ok":
            f = f"  (floor {floor:.4g})" if isinstance(floor, (int, float)) else ""
            out.append(f"{r['metric']:<22} {r['value']:.6g}{f}")
        elif r["metric_status"] == "failed":
            out.append(f"{r['metric']:<22} failed: {r['reason'].splitlines()[0][:120]}")
        else:
            skipped += 1
    row, n = record["rows"][0], next((r["n_samples"] for r in record["rows"] if r["n_samples"]), "?")
    return [f"{row['method']} on {row['dataset']}: N = {n}, sampler external, cost not counted"
            + (f" (stated NFE {row['meta']['stated_nfe']:g})" if row["meta"].get("stated_nfe") is not None else ""),
            *out, f"{skipped} metrics not applicable (their reasons are in the rows)"]
