"""Image datasets: scikit-learn's bundled 8x8 digits (Alpaydin & Kaynak 1998) work offline; MNIST,
Fashion-MNIST and CIFAR-10 are read from torchvision's on-disk formats (downloaded by torchvision on request)."""

from __future__ import annotations

import gzip
import math
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ebmbench.data.base import Dataset
from ebmbench.protocol import Box

DIGITS_LEVELS = 17  # pixel values are the integers 0..16
SPLIT_SEED = 0  # the fixed permutation that defines train/val/test
N_TEST, N_VAL = 360, 180


def load_digits_raw() -> tuple[Tensor, Tensor]:
    """The 1797 bundled digits as integer levels (N, 1, 8, 8) and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.int64).unsqueeze(1)
    return images, torch.as_tensor(bunch.target, dtype=torch.int64)


def fixed_split(n: int) -> dict[str, Tensor]:
    """Index sets of a seeded permutation: test first, then validation, the rest is train."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return {"test": perm[:N_TEST], "val": perm[N_TEST:N_TEST + N_VAL], "train": perm[N_TEST + N_VAL:]}


def digits_dataset(binarized: bool = False) -> Dataset:
    """8x8 digits: 17 levels k mapped to 2k/16 - 1 in [-1, 1], or binarized as k >= 8 in {0, 1}."""
    levels, labels = load_digits_raw()
    if binarized:
        x, box, n_levels = (levels >= 8).float(), Box(0.0, 1.0, (1, 8, 8)), 2
        convention = "binarized: pixel = 1 if level >= 8 else 0 (levels 0..16)"
    else:
        x, box, n_levels = levels.float() / 8.0 - 1.0, Box(-1.0, 1.0, (1, 8, 8)), DIGITS_LEVELS
        convention = (
            "17 integer levels k in 0..16 stored as 2k/16 - 1 (bin width 2/16); discrete likelihoods use uniform "
            "dequantization over each level's bin: -log P(k) <= -log p(y) - 64 log(2/16) nats per image "
            "(the same bound as -log p + 64 log 17 for data scaled to (k + u) / 17)"
        )
    idx = fixed_split(len(x))
    return Dataset(
        name="digits_binary" if binarized else "digits",
        train=x[idx["train"]], val=x[idx["val"]], test=x[idx["test"]],
        support=box, convention=convention, levels=n_levels,
        labels={k: labels[v] for k, v in idx.items()},
    )


# --- MNIST, Fashion-MNIST (LeCun et al. 1998; Xiao et al. 2017) and CIFAR-10 (Krizhevsky 2009) -----------------
# Files live where torchvision puts them under the data root: <root>/MNIST/raw, <root>/FashionMNIST/raw,
# <root>/cifar-10-batches-py. The root is $EBMBENCH_DATA, else ~/.cache/ebmbench/data.

BYTE_LEVELS = 256  # 8-bit data: byte b stored as 2b/255 - 1
N_VAL_IMAGES = 5000  # validation images taken from the official training set (a seeded permutation)
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
OFFICIAL_COUNTS = {"mnist": (60000, 10000), "fashion_mnist": (60000, 10000), "cifar10": (50000, 10000)}


class MissingDataError(FileNotFoundError):
    """Dataset files are absent; the message names them, their folder and how to get them."""


def data_root(root: str | Path | None = None) -> Path:
    """The data root: the argument, else $EBMBENCH_DATA, else ~/.cache/ebmbench/data."""
    return Path(root or os.environ.get("EBMBENCH_DATA") or Path.home() / ".cache" / "ebmbench" / "data").expanduser()


def _missing(name: str, folder: Path, files: list[str], kind: str, root: Path) -> MissingDataError:
    """One line: the files, their folder, and the `ebmbench fetch` command (ebmbench/fetch.py) that gets them."""
    return MissingDataError(
        f"{name} files missing from {folder}: {', '.join(files)}; get them with `ebmbench fetch {kind} --root {root}` "
        f"(torchvision's files, md5-checked), or copy them into {folder} from a machine that has them."
    )


def _integrity_failed(name: str, problems: list[str], check: bool) -> None:
    """Stop on files that are not the official ones, or warn when the check is switched off (test files)."""
    if not problems:
        return
    text = f"{name}: files differ from the official release: {'; '.join(problems)}"
    if check:
        raise ValueError(text + " (pass check_integrity=False to read them anyway, e.g. small test files)")
    warnings.warn(text + "; integrity check skipped (check_integrity=False)", stacklevel=3)


def read_idx(path: Path) -> np.ndarray:
    """An idx ubyte array (raw or .gz). Written here because torchvision's reader opens only extracted files."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {data[:4].hex()})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != math.prod(shape):
        raise ValueError(f"{path}: header says {shape} = {math.prod(shape)} bytes, file holds {array.size}")
    return array.reshape(shape).copy()  # a writable copy: torch refuses to share read-only buffers


def _md5_ok(path: Path, md5: str | None) -> bool:
    from torchvision.datasets.utils import check_integrity

    return check_integrity(str(path), md5)


def _idx_path(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download_torchvision(kind: str, root: Path) -> None:
    """torchvision's own download (with its checksums) into the data root; needs a network."""
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[kind]
    for train in (True, False):
        cls(str(root), train=train, download=True)


def read_mnist_like(kind: str, root: str | Path | None = None, check_integrity: bool = True
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST or Fashion-MNIST bytes (N, 28, 28) and labels per official split, from torchvision's raw folder."""
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[kind]
    folder = data_root(root) / cls.__name__ / "raw"
    stems = [s for pair in IDX_FILES.values() for s in pair]
    paths = {s: _idx_path(folder, s) for s in stems}
    absent = [f"{s}(.gz)" for s, p in paths.items() if p is None]
    if absent:
        raise _missing(cls.__name__, folder, absent, kind, data_root(root))
    md5 = {name: digest for name, digest in cls.resources}
    problems = [f"{p.name}: md5 mismatch" for p in paths.values()
                if p.suffix == ".gz" and not _md5_ok(p, md5.get(p.name))]
    out = {split: (read_idx(paths[img]), read_idx(paths[lab]).astype(np.int64))
           for split, (img, lab) in IDX_FILES.items()}
    problems += _count_problems(kind, {s: len(v[0]) for s, v in out.items()})
    _integrity_failed(cls.__name__, problems, check_integrity)
    return out


def read_cifar10(root: str | Path | None = None, check_integrity: bool = True
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 bytes (N, 3, 32, 32) and labels per official split from the python pickle batches."""
    from torchvision.datasets import CIFAR10

    folder = data_root(root) / CIFAR10.base_folder
    lists = {"train": CIFAR10.train_list, "test": CIFAR10.test_list}
    absent = [name for files in lists.values() for name, _ in files if not (folder / name).is_file()]
    if absent:
        raise _missing("CIFAR-10", folder, absent, "cifar10", data_root(root))
    problems = [f"{name}: md5 mismatch" for files in lists.values() for name, digest in files
                if not _md5_ok(folder / name, digest)]
    if check_integrity:  # before a byte is unpickled
        _integrity_failed("CIFAR-10", problems, check_integrity)
    out = {}
    for split, files in lists.items():
        # the official format is a python pickle (torchvision reads it the same way), read by an unpickler that
        # builds numpy arrays and nothing else, so that even an unchecked file cannot run code
        batches = [_unpickle_batch(folder / name) for name, _ in files]
        images = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
        out[split] = (images, labels)
    problems += _count_problems("cifar10", {s: len(v[0]) for s, v in out.items()})
    _integrity_failed("CIFAR-10", problems, check_integrity)
    return out


# what a CIFAR-10 batch pickle may name: numpy's array reconstruction (old and new module paths) and bytes
BATCH_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                 ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays; any other global is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) not in BATCH_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle_batch(path: Path) -> dict:
    """One CIFAR-10 python batch through ``_BatchUnpickler``; a refused file names itself."""
    try:
        with open(path, "rb") as f:
            return _BatchUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: not a CIFAR-10 batch ({err}); replace it with the official file") from None


def _count_problems(kind: str, counts: dict[str, int]) -> list[str]:
    expected = dict(zip(("train", "test"), OFFICIAL_COUNTS[kind]))
    return [f"{split} has {counts[split]} images, the official release {n}"
            for split, n in expected.items() if counts[split] != n]


def byte_dataset(name: str, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> Dataset:
    """Official train/test bytes to a Dataset: val is a seeded subset of train, values 2b/255 - 1 in [-1, 1]."""
    train_bytes, train_labels = splits["train"]
    n_val = min(N_VAL_IMAGES, len(train_bytes) // 10)
    perm = torch.randperm(len(train_bytes), generator=torch.Generator().manual_seed(SPLIT_SEED))
    idx = {"val": perm[:n_val], "train": perm[n_val:].sort().values}
    images = {"test": torch.from_numpy(splits["test"][0]),
              **{k: torch.from_numpy(train_bytes)[v] for k, v in idx.items()}}
    labels = {"test": torch.from_numpy(splits["test"][1]),
              **{k: torch.from_numpy(train_labels)[v] for k, v in idx.items()}}
    x = {k: (v.float() / 127.5 - 1.0).reshape(len(v), -1, *v.shape[-2:]) for k, v in images.items()}
    shape = tuple(x["test"].shape[1:])
    return Dataset(
        name=name, train=x["train"], val=x["val"], test=x["test"], support=Box(-1.0, 1.0, shape),
        convention=(f"256 integer levels b in 0..255 stored as 2b/255 - 1; test = the official test set, "
                    f"val = {n_val} images of the official training set (seeded permutation, seed {SPLIT_SEED}), "
                    "train = the rest"),
        levels=BYTE_LEVELS, labels=labels,
    )


def mnist_dataset(root: str | Path | None = None, download: bool = False, check_integrity: bool = True) -> Dataset:
    """MNIST (LeCun et al. 1998), 28x28 grayscale; download=True fetches it through torchvision."""
    if download:
        _download_torchvision("mnist", data_root(root))
    return byte_dataset("mnist", read_mnist_like("mnist", root, check_integrity))


def fashion_mnist_dataset(root: str | Path | None = None, download: bool = False,
                          check_integrity: bool = True) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017), 28x28 grayscale; download=True fetches it through torchvision."""
    if download:
        _download_torchvision("fashion_mnist", data_root(root))
    return byte_dataset("fashion_mnist", read_mnist_like("fashion_mnist", root, check_integrity))


def cifar10_dataset(root: str | Path | None = None, download: bool = False, check_integrity: bool = True) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009), 32x32 RGB; download=True fetches it through torchvision."""
    if download:
        _download_torchvision("cifar10", data_root(root))
    return byte_dataset("cifar10", read_cifar10(root, check_integrity))
