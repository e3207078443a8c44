"""Sample quality through torch-fidelity: FID (Heusel et al. 2017), KID (Binkowski et al. 2018),
IS (Salimans et al. 2016) and precision/recall (Kynkaanniemi et al. 2019), never re-implemented.

Every number says how it was computed: the extractor and its weights hash, the reference
split (always the test split: the domain extractor has seen the training split), N, the
KID subset size, the data floor (the same metrics for N training images against the same
reference, so FID's small-sample bias is visible), a nearest-training-neighbour copy test,
and whether the number is ``comparable`` to a published one under that number's protocol
(``results/published/``). Real and generated images go through the one ``to_uint8``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from ebmbench.data.base import Dataset, tensors_hash
from ebmbench.data.convert import for_extractor, to_uint8
from ebmbench.devices import EXTRACTION_PRECISION, fp32_extraction
from ebmbench.metrics import domain
from ebmbench.metrics.base import Measured, Metric, NotApplicable, register
from ebmbench.results import atomic_write_json

# torch-fidelity and scipy.stats load lazily (seconds of import per notebook that never computes FID):
# torch-fidelity's own constant is feature_extractor_inceptionv3.URL_INCEPTION_V3 (a test checks they agree)
URL_INCEPTION_V3 = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                    "weights-inception-2015-12-05-6726825d.pth")
INCEPTION = "inception-v3-compat"  # torch-fidelity's port of the TF Inception used by published FIDs
INCEPTION_FILE = URL_INCEPTION_V3.rsplit("/", 1)[-1]
CACHE_VERSION = "v2"  # part of every cache key: bump when to_uint8 or an extractor's outputs change
FLOOR_SEED = 0  # which training images form the data floor
RNG_SEED = 2020  # torch-fidelity's seed for KID subsets and IS shuffling (its default)
KID_SUBSET_SIZE = 1000  # the usual KID subset size, lowered to the smallest set when needed
KID_SUBSETS = 100  # KID subsets (torch-fidelity's default); KID's std is over these
ALL_METRICS = ("fid", "kid", "isc", "prc")  # torch-fidelity's names
COPY_QUANTILE = 0.05  # copy threshold: this quantile of validation-to-train distances
COPY_ALPHA = 1e-3  # flag memorization when the one-sided Fisher test p-value is below this
COPY_MAX = 5000  # at most this many samples enter the nearest-neighbour search
COPY_DEFINITION = (f"fraction of samples within tau of a training image (pixel L2 on bytes/255), tau = the "
                   f"{COPY_QUANTILE} quantile of validation-to-train distances; reference: the same fraction for the "
                   f"test split; flagged when a one-sided Fisher exact test gives p < {COPY_ALPHA}")
PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "results" / "published"
PUBLISHED_DATASETS = {"cifar10": "CIFAR-10", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


class MissingWeightsError(FileNotFoundError):
    """Inception weights are absent; the message names the file, its folder and how to get it."""


class TooFewSamples(ValueError):
    """Fewer samples than the guard allows: FID's covariance would be rank-deficient or very biased."""


@dataclass(frozen=True)
class Extractor:
    """A feature extractor as torch-fidelity knows it, with what identifies its weights."""

    kind: str  # "domain" or "inception"
    name: str  # torch-fidelity registry name
    weights_hash: str
    feature_dim: int
    rgb: bool  # takes 3-channel images
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra calculate_metrics arguments
    info: dict[str, Any] = field(default_factory=dict)  # test accuracy, checkpoint, weights file


class ImageSet(torch.utils.data.Dataset):
    """uint8 images as torch-fidelity wants them: each item a bare (C, H, W) tensor."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def check_applicable(dataset: Dataset) -> None:
    """Images with labels only: unlabelled sets (patches) have no domain classifier and get likelihoods."""
    if len(dataset.shape) != 3 or dataset.shape[0] not in (1, 3):
        raise NotApplicable(f"fidelity metrics need images (C, H, W) with 1 or 3 channels; "
                            f"dataset {dataset.name!r} has shape {dataset.shape}")
    if not dataset.labels:
        raise NotApplicable(f"dataset {dataset.name!r} has no labels, so no domain classifier: FID/KID/IS/PRC "
                            "are not defined for it here (it gets likelihood metrics)")


@cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def file_hash(path: Path) -> str:
    st = path.stat()
    return _file_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


def inception_weights(weights_path: str | Path | None = None, download: bool = False) -> Path:
    """The Inception weights file: the given path, else torch hub's checkpoint folder; never downloads unasked."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"Inception weights file {path} does not exist (weights_path); it should "
                                      f"hold torch-fidelity's {INCEPTION_FILE}; `ebmbench fetch inception "
                                      f"--weights-dir {path.parent}` puts it there as {INCEPTION_FILE}")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not path.is_file():
        if not download:
            raise MissingWeightsError(
                f"Inception weights {INCEPTION_FILE} not found in {path.parent}; get them with `ebmbench fetch "
                f"inception` (torch-fidelity's file from {URL_INCEPTION_V3}, sha256-checked), or pass weights_path= "
                "to a copy of the file; the domain extractor (extractor='domain') needs no download."
            )
        torch.hub.load_state_dict_from_url(URL_INCEPTION_V3, progress=False, check_hash=True)  # checked
    return path


def resolve_extractor(kind: str, dataset: Dataset, *, weights_path: str | Path | None = None,
                      cache_dir: str | Path | None = None, device: str = "cpu", download: bool = False) -> Extractor:
    """The named extractor, with its weights identified by hash (domain: trained or loaded from cache)."""
    if kind == "domain":
        ex = domain.load_or_train(dataset, cache_dir=cache_dir, device=device)
        return Extractor("domain", ex.name, ex.weights_hash, ex.feature_dim, rgb=False, info=ex.info())
    if kind == "inception":
        path = inception_weights(weights_path, download)
        return Extractor("inception", INCEPTION, file_hash(path), 2048, rgb=True,
                         kwargs={"feature_extractor_weights_path": str(path)}, info={"weights_file": str(path)})
    raise ValueError(f"extractor {kind!r}: choose 'domain' or 'inception'")


def run_fidelity(gen: Tensor, ref: Tensor, ex: Extractor, metrics: tuple[str, ...], *, gen_cache: str | None,
                 ref_cache: str, kid_subset_size: int, cache_dir: str | Path | None, cuda: bool) -> dict[str, float]:
    """One torch-fidelity call: input1 = generated (or floor) images, input2 = the reference.

    numpy's BLAS gets torch's thread count: its default (all cores) is 30x slower for KID's
    small kernels on a shared 2-core machine."""
    import torch_fidelity

    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"), fp32_extraction():
        out = torch_fidelity.calculate_metrics(
            input1=ImageSet(for_extractor(gen, ex.rgb)), input2=ImageSet(for_extractor(ref, ex.rgb)),
            input1_cache_name=gen_cache, input2_cache_name=ref_cache, feature_extractor=ex.name,
            **{m: m in metrics for m in ALL_METRICS}, kid_subset_size=kid_subset_size, kid_subsets=KID_SUBSETS,
            rng_seed=RNG_SEED,
            cuda=cuda, batch_size=256 if ex.kind == "domain" else 64, save_cpu_ram=True, verbose=False,
            cache=True, cache_root=str(domain.cache_root(cache_dir) / "fidelity"), **ex.kwargs,
        )
    names = {torch_fidelity.KEY_METRIC_FID: "fid", torch_fidelity.KEY_METRIC_KID_MEAN: "kid",
             torch_fidelity.KEY_METRIC_KID_STD: "kid_std", torch_fidelity.KEY_METRIC_ISC_MEAN: "is",
             torch_fidelity.KEY_METRIC_ISC_STD: "is_std", torch_fidelity.KEY_METRIC_PRECISION: "precision",
             torch_fidelity.KEY_METRIC_RECALL: "recall"}
    return {names[k]: float(v) for k, v in out.items() if k in names}


def nearest_train_distance(x: Tensor, train: Tensor, device: torch.device) -> Tensor:
    """L2 distance in pixel space (bytes / 255) from each image to its nearest training image.

    Squared distances are computed on the integer bytes in float64, where |a|^2 + |b|^2 - 2 a.b is exact
    (torch.cdist's matrix-product path is not), so a copied training image is at distance exactly 0."""
    b = train.flatten(1).to(device, torch.float64)
    b2 = (b * b).sum(1)
    out = []
    for blk in x.flatten(1).to(device, torch.float64).split(512):
        d2 = (blk * blk).sum(1, keepdim=True) + b2 - 2.0 * blk @ b.T
        out.append(d2.min(dim=1).values.clamp_min(0.0).sqrt() / 255.0)
    return torch.cat(out).cpu()


def copy_test(gen: Tensor, train: Tensor, val: Tensor, test: Tensor, device: torch.device) -> dict[str, Any]:
    """Nearest-training-neighbour memorization test (cf. Meehan et al. 2020, data copying).

    The threshold tau is the 5% quantile of validation-to-train distances; a model whose samples
    are fresh draws puts as many samples within tau of a training image as held-out test images do.
    A one-sided Fisher exact test of the two fractions flags memorization when p < 1e-3.
    """
    from scipy import stats

    d_gen = nearest_train_distance(gen[:COPY_MAX], train, device)
    d_val, d_test = nearest_train_distance(val, train, device), nearest_train_distance(test, train, device)
    tau = float(torch.quantile(d_val.double(), COPY_QUANTILE))
    hits_gen, hits_test = int((d_gen <= tau).sum()), int((d_test <= tau).sum())
    p = stats.fisher_exact([[hits_gen, len(d_gen) - hits_gen], [hits_test, len(d_test) - hits_test]],
                           alternative="greater").pvalue
    ratio = float(d_gen.median() / d_test.median()) if d_test.median() > 0 else float("nan")
    return {"copy_fraction": hits_gen / len(d_gen), "reference_fraction": hits_test / len(d_test), "tau": tau,
            "p_value": float(p), "flagged": bool(p < COPY_ALPHA), "median_nn_ratio": ratio,
            "exact_copy_fraction": float((d_gen == 0).double().mean()), "n": len(d_gen), "definition": COPY_DEFINITION}


def data_floor(floor: Tensor, ref: Tensor, ex: Extractor, metrics: tuple[str, ...], floor_cache: str,
               **common: Any) -> dict[str, float]:
    """The same metrics for real training images against the reference, computed once per setting and cached."""
    path = domain.cache_root(common["cache_dir"]) / "fidelity" / (
        f"{floor_cache}-floor-k{common['kid_subset_size']}-{'_'.join(sorted(metrics))}.json")
    if path.is_file():
        return json.loads(path.read_text())
    result = {**run_fidelity(floor, ref, ex, metrics, gen_cache=floor_cache, **common), "n": len(floor)}
    atomic_write_json(path, result)
    return result


def fidelity_metrics(samples: Tensor, dataset: Dataset, *, extractor: str = "domain", n: int | None = None,
                     weights_path: str | Path | None = None, kid_subset_size: int | None = None,
                     min_samples: int | None = None, metrics: tuple[str, ...] = ALL_METRICS,
                     cache_dir: str | Path | None = None, device: str = "cpu", download: bool = False,
                     published_dir: str | Path | None = None) -> dict[str, Any]:
    """FID, KID (mean, std), IS, precision/recall of ``samples`` against the test split, with the data floor,
    the copy test and the protocol. ``min_samples`` defaults to twice the feature dimension. Features are
    extracted on ``device`` (a run passes its own) in float32 with TF32 off."""
    start = time.perf_counter()
    check_applicable(dataset)
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise ValueError(f"metrics {unknown}: choose from {ALL_METRICS}")
    n = n or len(samples)
    if n > len(samples):
        raise ValueError(f"n={n} but only {len(samples)} samples were given")
    ex = resolve_extractor(extractor, dataset, weights_path=weights_path, cache_dir=cache_dir, device=device,
                           download=download)
    guard = min_samples if min_samples is not None else 2 * ex.feature_dim
    ref, n_floor = to_uint8(dataset.test, dataset), min(n, len(dataset.train))
    for what, size in (("samples", n), ("reference (test split)", len(ref)), ("floor (train split)", n_floor)):
        if size < guard:
            raise TooFewSamples(f"{what}: {size} images, fewer than min_samples={guard} "
                                f"(default: twice the {ex.feature_dim} feature dimensions)")
    subset = min(kid_subset_size or KID_SUBSET_SIZE, n, len(ref), n_floor)
    pick = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(FLOOR_SEED))[:n_floor]
    floor_u8, train_u8 = to_uint8(dataset.train[pick], dataset), to_uint8(dataset.train, dataset)
    gen = to_uint8(samples[:n].detach().cpu(), dataset)
    key = f"{dataset.name}-{dataset.content_hash}-{CACHE_VERSION}-{ex.weights_hash}"
    dev = domain.pick_device(device)
    common = {"ref_cache": f"{key}-test", "kid_subset_size": subset, "cache_dir": cache_dir, "cuda": dev.type == "cuda"}
    out: dict[str, Any] = run_fidelity(gen, ref, ex, metrics, gen_cache=None, **common)
    out["floor"] = data_floor(floor_u8, ref, ex, metrics, f"{key}-train{n_floor}s{FLOOR_SEED}", **common)
    out["memorization"] = copy_test(gen, train_u8, to_uint8(dataset.val, dataset), ref, dev)
    meta = {"extractor": ex.name, "extractor_kind": ex.kind, "weights_hash": ex.weights_hash,
            "extractor_info": ex.info, "reference": "test", "n": n, "n_reference": len(ref), "n_floor": n_floor,
            "kid_subset_size": subset, "kid_subset_size_requested": kid_subset_size, "kid_subsets": KID_SUBSETS,
            "rng_seed": RNG_SEED, "min_samples": guard, "device": str(dev), "precision": EXTRACTION_PRECISION,
            "conversion": "to_uint8: clamp, nearest level, level to byte",
            "torch_fidelity": version("torch-fidelity"),
            "floor_definition": f"{n_floor} training images (seed {FLOOR_SEED}) against the same test reference"}
    meta["comparable"] = {m: comparability(dataset.name, m, ex.kind, "test", n, published_dir)
                          for m in ("fid", "kid", "is", "precision", "recall") if m in out}
    meta["wall_s"] = time.perf_counter() - start
    out["meta"] = meta
    return out


# --- is a number comparable to a published one? -----------------------------------------------------------------

def published_rows(published_dir: str | Path | None = None) -> list[dict[str, str]]:
    path = Path(published_dir or PUBLISHED_DIR) / "published_results.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _protocol_mismatch(row: dict[str, str], metric: str, extractor: str, reference: str,
                       n: int) -> tuple[int, str] | None:
    """How far our protocol is from this published number's (rank: 3 unrecorded ... 0 sample count) and why;
    None when it matches."""
    want_n, want_ref, want_ex = (row.get(k, "").strip() for k in
                                 ("protocol_n_samples", "protocol_reference", "protocol_extractor"))
    if not (want_n and want_ex and (want_ref or metric == "is")):
        return 3, "its protocol (sample count, reference set, extractor) is not recorded"
    if want_ex != "inception-v3" or extractor != "inception":
        return 2, f"extractor {want_ex} vs ours {INCEPTION if extractor == 'inception' else 'domain classifier'}"
    if metric == "fid" and want_ref != reference:
        return 1, f"reference {want_ref} set vs ours {reference} split"
    if n < int(want_n):
        return 0, f"{want_n} samples vs ours {n}"
    return None


def comparability(dataset: str, metric: str, extractor: str, reference: str, n: int,
                  published_dir: str | Path | None = None) -> dict[str, Any]:
    """Comparable when an unconditional published number on this dataset has the same extractor, reference
    set (FID) and at most our sample count; otherwise the reason, naming the nearest miss."""
    label, prefix = PUBLISHED_DATASETS.get(dataset), {"fid": "FID", "is": "IS"}.get(metric)
    rows = [r for r in published_rows(published_dir)
            if label and prefix and r["dataset"].startswith(label) and r["conditional"].strip() == "no"
            and (r["metric"] == prefix or (prefix == "FID" and r["metric"].startswith("FID (vs")))]
    if not rows:
        return {"comparable": False, "reason": f"no published unconditional {metric} for {dataset!r} in "
                                               f"results/published/published_results.csv", "matches": []}
    misses = [(r, _protocol_mismatch(r, metric, extractor, reference, n)) for r in rows]
    matches = [f"{r['model']} ({r['first_author']} {r['year']}): {r['value']}" for r, why in misses if why is None]
    if matches:
        return {"comparable": True, "reason": "same extractor, reference and at least the published sample count",
                "matches": matches}
    r, (_, why) = min(misses, key=lambda m: m[1][0])
    return {"comparable": False, "reason": f"{len(rows)} published {metric} rows, none with our protocol; "
                                           f"nearest: {r['model']} ({r['first_author']} {r['year']}): {why}",
            "matches": []}


# --- registry wiring: one evaluation per (samples, dataset, extractor), one row per metric ------------------------

_LAST: dict[tuple[str, str, str], dict[str, Any]] = {}


def evaluate_cached(x: Tensor, dataset: Dataset, extractor: str, device: str = "cpu") -> dict[str, Any]:
    """fidelity_metrics, remembered for the last samples so that each row does not recompute it."""
    key = (tensors_hash(x), dataset.content_hash, extractor, device)
    if key not in _LAST:
        _LAST.clear()
        weights = os.environ.get(INCEPTION_WEIGHTS_ENV) if extractor == "inception" else None
        _LAST[key] = fidelity_metrics(x, dataset, extractor=extractor, weights_path=weights, device=device)
    return _LAST[key]


def row(result: dict[str, Any], metric: str) -> Measured:
    """(value, stderr, meta) of one metric of a fidelity_metrics result, with its floor and protocol."""
    meta = {k: v for k, v in result["meta"].items() if k != "comparable"}
    if metric == "nn_copy_fraction":
        mem = result["memorization"]
        return mem["copy_fraction"], None, {**meta, **mem, "n": mem["n"]}
    comparable = result["meta"]["comparable"][metric]
    extra = {"floor": result["floor"].get(metric), "comparable": comparable["comparable"],
             "comparable_reason": comparable["reason"], "comparable_to": comparable["matches"]}
    if metric in ("fid", "kid"):
        extra.update(kid=result.get("kid"), kid_std_over_subsets=result.get("kid_std"),
                     floor_kid_std_over_subsets=result["floor"].get("kid_std"))
    if metric == "is":
        extra.update(is_std_over_splits=result["is_std"], floor_is_std_over_splits=result["floor"]["is_std"])
    return result[metric], None, {**meta, **extra}


INCEPTION_WEIGHTS_ENV = "EBMBENCH_INCEPTION_WEIGHTS"  # a path to the weights file, for offline machines


def sample_metric(metric: str, extractor: str = "domain") -> Callable[[Tensor, Dataset], Measured]:
    def fn(x: Tensor, dataset: Dataset, device: str = "cpu") -> Measured:
        check_applicable(dataset)
        if extractor == "inception":
            try:
                inception_weights(os.environ.get(INCEPTION_WEIGHTS_ENV))
            except MissingWeightsError as err:  # recorded as not_applicable, with where to put the file
                raise NotApplicable(f"{err} (or set {INCEPTION_WEIGHTS_ENV} to the file)") from None
        return row(evaluate_cached(x, dataset, extractor, device), metric)

    fn.__name__ = f"{metric}_{extractor}"
    return fn


def run_device(cfg: Any) -> dict[str, Any]:
    """Features are extracted on the run's (resolved) device."""
    return {"device": cfg.device}


METRICS = [
    Metric("fid_domain", "samples", sample_metric("fid"), "Heusel et al. 2017, domain-classifier features",
           ladder="passed", headline=True, configure=run_device),
    Metric("kid_domain", "samples", sample_metric("kid"), "Binkowski et al. 2018, domain-classifier features",
           ladder="failed", configure=run_device),
    Metric("is_domain", "samples", sample_metric("is"), "Salimans et al. 2016, domain-classifier logits",
           configure=run_device),
    Metric("precision_domain", "samples", sample_metric("precision"), "Kynkaanniemi et al. 2019, k=3",
           configure=run_device),
    Metric("recall_domain", "samples", sample_metric("recall"), "Kynkaanniemi et al. 2019, k=3", configure=run_device),
    Metric("nn_copy_fraction", "samples", sample_metric("nn_copy_fraction"), "nearest-training-neighbour copy test",
           configure=run_device),
    Metric("fid_inception", "samples", sample_metric("fid", "inception"), "Heusel et al. 2017, Inception-v3 (compat)",
           configure=run_device),
    Metric("kid_inception", "samples", sample_metric("kid", "inception"), "Binkowski et al. 2018, Inception-v3",
           configure=run_device),
    Metric("is_inception", "samples", sample_metric("is", "inception"), "Salimans et al. 2016, Inception-v3",
           configure=run_device),
]
register(*METRICS)
