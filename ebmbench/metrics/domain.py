"""Domain feature extractor: a small classifier trained on a dataset's training split, so that
FID/KID/IS/precision-recall exist offline and on small images (the in-domain analogue of the
Inception network of Heusel et al. 2017).

The checkpoint is cached under the dataset's content hash and a tag of its architecture, training and, off
the CPU, the device type it is trained on (``<cache>/domain/<name>-<content_hash>-<tag>.pt``: a classifier trained on
a GPU has other weights, so it never stands in for the CPU's); training and extraction run in float32 with TF32 off
(``ebmbench.devices.fp32_extraction``); the weights hash is recomputed
from the loaded weights, never trusted from the file. The extractor is registered with
torch-fidelity as ``ebmbench-domain-<name>-<weights_hash>``, so any cached features or
statistics keyed by that name change with the weights. It reads uint8 images (from
``ebmbench.data.convert.to_uint8``) and provides ``features`` (penultimate layer, used for
FID/KID/PRC) and ``logits`` (for IS).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebmbench.data.base import Dataset, tensors_hash
from ebmbench.data.convert import to_uint8
from ebmbench.devices import EXTRACTION_PRECISION, fp32_extraction, resolve_device
from ebmbench.serialization import load_tensors

ARCH_VERSION = 1  # bump when DomainClassifier changes: old checkpoints are then not reused


@dataclass(frozen=True)
class DomainParams:
    """Architecture and training of one domain classifier (all part of the checkpoint key)."""

    epochs: int = 30  # passes over the training split
    batch_size: int = 64  # images per Adam step
    lr: float = 1e-3  # Adam learning rate
    width: int = 32  # channels of the first conv stage; doubled at every stage
    feature_dim: int = 64  # width of the penultimate layer (the FID/KID/PRC features)
    seed: int = 0  # initialization and batch order


DEFAULT_PARAMS = {  # per dataset; digits trains in seconds on a CPU, the others want a GPU
    "digits": DomainParams(epochs=30),
    "mnist": DomainParams(epochs=4),
    "fashion_mnist": DomainParams(epochs=10),
    "cifar10": DomainParams(epochs=30, width=64, feature_dim=128),
}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: the argument, else $EBMBENCH_CACHE, else ~/.cache/ebmbench."""
    return Path(cache_dir or os.environ.get("EBMBENCH_CACHE") or Path.home() / ".cache" / "ebmbench").expanduser()


def pick_device(device: str) -> torch.device:
    """The torch device of a run's device name (``auto``: cuda when available)."""
    return torch.device(resolve_device(device))


class DomainClassifier(nn.Module):
    """Conv stages (two 3x3 convs + 2x2 max-pool) until the map is at most 7 pixels wide,
    then a linear layer to ``feature_dim`` features (SiLU) and a linear layer to logits."""

    def __init__(self, channels: int, size: int, n_classes: int, width: int, feature_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c_out = channels, width
        while size > 7:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, c_out, size = c_out, 2 * c_out, size // 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.to_features = nn.Sequential(nn.Linear(c_in * size * size, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, n_classes)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 images -> (features, logits); bytes are mapped to [-1, 1] as the datasets store them."""
        x = images.to(torch.float32) / 127.5 - 1.0
        features = self.to_features(self.body(x))
        return features, self.head(features)


def arch_of(dataset: Dataset, params: DomainParams) -> dict[str, int]:
    channels, size = dataset.shape[0], dataset.shape[-1]
    n_classes = int(dataset.labels["train"].max()) + 1
    return {"channels": channels, "size": size, "n_classes": n_classes, "width": params.width,
            "feature_dim": params.feature_dim}


def checkpoint_path(dataset: Dataset, params: DomainParams, cache_dir: str | Path | None = None,
                    device: str = "cpu") -> Path:
    """Where the classifier of this dataset content, architecture/training and device type is cached (the CPU's
    key is the one it had before devices were part of it, so CPU caches stay valid)."""
    fields = {"arch_version": ARCH_VERSION, **arch_of(dataset, params), **asdict(params)}
    kind = pick_device(device).type
    if kind != "cpu":  # what else changes the weights: the device's kernels, at the one precision policy
        fields.update(train_device=kind, numerics=EXTRACTION_PRECISION)
    key = json.dumps(fields, sort_keys=True)
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_root(cache_dir) / "domain" / f"{dataset.name}-{dataset.content_hash}-{tag}.pt"


def weights_hash(state: dict[str, Tensor]) -> str:
    return tensors_hash(*(state[k] for k in sorted(state)))


def accuracy(net: DomainClassifier, images: Tensor, labels: Tensor, device: torch.device) -> float:
    net.eval()
    with torch.no_grad():
        correct = sum(int((net(x.to(device))[1].argmax(1).cpu() == y).sum())
                      for x, y in zip(images.split(1024), labels.split(1024)))
    return correct / len(labels)


def train_classifier(dataset: Dataset, params: DomainParams, device: str = "cpu") -> dict[str, Any]:
    """Train on the training split with a fixed seed, in float32 with TF32 off; return the checkpoint (weights,
    test accuracy, time)."""
    with fp32_extraction():
        return _train_classifier(dataset, params, pick_device(device))


def _train_classifier(dataset: Dataset, params: DomainParams, dev: torch.device) -> dict[str, Any]:
    images, labels = to_uint8(dataset.train, dataset), dataset.labels["train"]
    generator = torch.Generator().manual_seed(params.seed)
    with torch.random.fork_rng(devices=[]):  # initialization from the seed, global RNG left untouched
        torch.manual_seed(params.seed)
        net = DomainClassifier(**arch_of(dataset, params)).to(dev)
    optimizer = torch.optim.Adam(net.parameters(), lr=params.lr)
    start = time.perf_counter()
    for _ in range(params.epochs):
        net.train()
        for idx in torch.randperm(len(labels), generator=generator).split(params.batch_size):
            loss = F.cross_entropy(net(images[idx].to(dev))[1], labels[idx].to(dev))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    wall = time.perf_counter() - start
    test_acc = accuracy(net, to_uint8(dataset.test, dataset), dataset.labels["test"], dev)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return {"state_dict": state, "arch": arch_of(dataset, params), "params": asdict(params),
            "test_accuracy": test_acc, "train_wall_s": wall, "device": str(dev), "torch": str(torch.__version__)}


def save_if_absent(path: Path, checkpoint: dict[str, Any]) -> None:
    """Publish the checkpoint unless another process already did: concurrent runs then all use the
    first checkpoint written, never a mix of weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(checkpoint, tmp)
        os.chmod(tmp, 0o644)
        os.link(tmp, path)  # atomic, and fails when the file exists
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: an atomic rename, last writer wins
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@dataclass(frozen=True)
class DomainExtractor:
    """A trained domain classifier, registered with torch-fidelity under ``name``."""

    name: str  # torch-fidelity feature extractor name, includes the weights hash
    weights_hash: str  # content hash of the loaded weights
    feature_dim: int
    test_accuracy: float  # on the dataset's test split
    train_wall_s: float  # training time when the checkpoint was made
    train_device: str
    path: str  # the cached checkpoint

    def info(self) -> dict[str, Any]:
        return asdict(self)


def load_or_train(dataset: Dataset, params: DomainParams | None = None, cache_dir: str | Path | None = None,
                  device: str = "cpu") -> DomainExtractor:
    """The dataset's domain extractor: the cached checkpoint of ``device``'s type, or a fresh one trained there
    and cached."""
    if not dataset.labels:
        raise ValueError(f"dataset {dataset.name!r} has no labels: no domain classifier can be trained")
    params = params or DEFAULT_PARAMS.get(dataset.name, DomainParams())
    path = checkpoint_path(dataset, params, cache_dir, device)
    if not path.is_file():
        save_if_absent(path, train_classifier(dataset, params, device))
    ckpt = load_tensors(path)
    digest = weights_hash(ckpt["state_dict"])
    name = f"ebmbench-domain-{dataset.name}-{digest}"
    register(name, ckpt["arch"], ckpt["state_dict"])
    return DomainExtractor(name, digest, ckpt["arch"]["feature_dim"], ckpt["test_accuracy"], ckpt["train_wall_s"],
                           ckpt["device"], str(path))


class DomainFeatures:
    """torch-fidelity adapter (mixed into its FeatureExtractorBase at registration, so that torch-fidelity
    loads only when a fidelity metric runs); each registered class carries one classifier's weights."""

    arch: ClassVar[dict[str, int]]
    state: ClassVar[dict[str, Tensor]]

    def __init__(self, name: str, features_list: list[str], **kwargs: Any) -> None:
        super().__init__(name, features_list)
        self.classifier = DomainClassifier(**self.arch)
        self.classifier.load_state_dict(self.state)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("features", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "logits" if metric == "isc" else "features"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> Tensor:
        raise NotImplementedError("the domain extractor is not compiled")

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        if images.dtype != torch.uint8:
            raise TypeError(f"the domain extractor takes uint8 images (to_uint8), got {images.dtype}")
        features, logits = self.classifier(images)
        # float64 out: torch-fidelity's means, covariances and kernels then do not depend on sample order
        out = {"features": features.double(), "logits": logits.double()}
        return tuple(out[k] for k in self.features_list)


def register(name: str, arch: dict[str, int], state: dict[str, Tensor]) -> None:
    """Register once per name; the name carries the weights hash, so equal names mean equal weights."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if name in FEATURE_EXTRACTORS_REGISTRY:
        return
    cls = type(f"DomainFeatureExtractor_{name.replace('-', '_')}", (DomainFeatures, FeatureExtractorBase),
               {"arch": dict(arch), "state": {k: v.clone() for k, v in state.items()}})
    register_feature_extractor(name, cls)
