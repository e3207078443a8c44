"""Image datasets: readers of the real on-disk formats (tiny files written here), the one to_uint8,
and the offline natural-image patches."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmbench.data.convert import for_extractor, levels_to_uint8, to_levels, to_uint8
from ebmbench.data.images import (
    MissingDataError,
    cifar10_dataset,
    digits_dataset,
    fashion_mnist_dataset,
    fixed_split,
    load_digits_raw,
    mnist_dataset,
)
from ebmbench.data.patches import COUNTS, cut, patches8_dataset

READERS = {"mnist": (mnist_dataset, "MNIST"), "fashion_mnist": (fashion_mnist_dataset, "FashionMNIST")}


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """The idx ubyte format: two zero bytes, type 0x08 (ubyte), ndim, big-endian uint32 dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist(root: Path, folder: str, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """20 training and 6 test images in torchvision's raw folder; train images gzipped, the rest extracted."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, prefix, n in (("train", "train", 20), ("test", "t10k", 6)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress=split == "train")
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress=False)
        out[split] = (images, labels)
    return out


def write_cifar(root: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Five training batches of 4 images and a test batch of 5, python pickles as in cifar-10-batches-py."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {"train": [], "test": []}
    names = [(f"data_batch_{i}", "train", 4) for i in range(1, 6)] + [("test_batch", "test", 5)]
    for name, split, n in names:
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # per row: 1024 R, 1024 G, 1024 B, row-major
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": rows, "labels": labels, "filenames": [""] * n}, f, protocol=2)
        out[split].append((rows, np.array(labels)))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f, protocol=2)
    return {k: (np.concatenate([r for r, _ in v]), np.concatenate([y for _, y in v])) for k, v in out.items()}


def as_rows(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1).numpy()}


@pytest.mark.parametrize("kind", sorted(READERS))
def test_mnist_like_reader_on_tiny_idx_files(tmp_path, kind):
    reader, folder = READERS[kind]
    written = write_mnist(tmp_path, folder, np.random.default_rng(0))
    with pytest.warns(UserWarning, match="integrity check skipped"):
        ds = reader(root=tmp_path, check_integrity=False)
    assert ds.name == kind and ds.shape == (1, 28, 28) and ds.levels == 256 and ds.support.low == -1.0
    test_images, test_labels = written["test"]
    assert torch.equal(to_uint8(ds.test, ds)[:, 0], torch.from_numpy(test_images))  # stored bytes, exactly
    assert torch.equal(ds.labels["test"], torch.from_numpy(test_labels).long())
    assert len(ds.val) == 2 and len(ds.train) == 18  # val = train // 10 images for files this small
    train_images, train_labels = written["train"]
    got = torch.cat([to_uint8(ds.train, ds), to_uint8(ds.val, ds)])
    assert as_rows(got) == as_rows(torch.from_numpy(train_images))
    pairs = {(r.tobytes(), int(y)) for r, y in zip(got.reshape(20, -1).numpy(),
                                                   torch.cat([ds.labels["train"], ds.labels["val"]]))}
    assert pairs == {(r.tobytes(), int(y)) for r, y in zip(train_images.reshape(20, -1), train_labels)}


def test_cifar10_reader_on_tiny_pickle_batches(tmp_path):
    written = write_cifar(tmp_path, np.random.default_rng(1))
    with pytest.warns(UserWarning, match="md5 mismatch"):
        ds = cifar10_dataset(root=tmp_path, check_integrity=False)
    assert ds.shape == (3, 32, 32) and len(ds.test) == 5 and len(ds.train) + len(ds.val) == 20
    rows, labels = written["test"]
    u8 = to_uint8(ds.test, ds)
    # channel-major layout: byte 1024 + 32 * h + w of a row is the green value at (h, w)
    assert u8[3, 1, 2, 5].item() == rows[3, 1024 + 32 * 2 + 5]
    assert u8[4, 2, 31, 31].item() == rows[4, 3071]
    assert torch.equal(u8.reshape(5, -1), torch.from_numpy(rows))
    assert torch.equal(ds.labels["test"], torch.from_numpy(labels))
    assert as_rows(torch.cat([to_uint8(ds.train, ds), to_uint8(ds.val, ds)])) == as_rows(
        torch.from_numpy(written["train"][0]))


def test_integrity_check_rejects_unofficial_files(tmp_path):
    write_cifar(tmp_path / "c", np.random.default_rng(2))
    write_mnist(tmp_path / "m", "MNIST", np.random.default_rng(3))
    with pytest.raises(ValueError, match="official release.*check_integrity=False"):
        cifar10_dataset(root=tmp_path / "c")
    with pytest.raises(ValueError, match="train has 20 images, the official release 60000"):
        mnist_dataset(root=tmp_path / "m")


@pytest.mark.parametrize("kind, folder, first_file", [
    ("mnist", "MNIST/raw", "train-images-idx3-ubyte"),
    ("fashion_mnist", "FashionMNIST/raw", "train-images-idx3-ubyte"),
    ("cifar10", "cifar-10-batches-py", "data_batch_1"),
])
def test_missing_files_name_the_files_the_folder_and_the_fetch_command(tmp_path, monkeypatch, kind, folder, first_file):
    monkeypatch.setenv("EBMBENCH_DATA", str(tmp_path))  # the root comes from the environment
    reader = {"mnist": mnist_dataset, "fashion_mnist": fashion_mnist_dataset, "cifar10": cifar10_dataset}[kind]
    with pytest.raises(MissingDataError) as err:
        reader()
    text = str(err.value)
    assert str(tmp_path / folder) in text and first_file in text
    assert f"`ebmbench fetch {kind} --root {tmp_path}`" in text


def test_to_uint8_round_trips_the_stored_digits():
    levels, _ = load_digits_raw()
    ds = digits_dataset()
    test_levels = levels[fixed_split(len(levels))["test"]]
    assert torch.equal(to_levels(ds.test, ds), test_levels)  # the stored integer levels, exactly
    expected = np.floor(test_levels.numpy() * 255 / 16 + 0.5).astype(np.uint8)  # round(k * 255 / 16), halves up
    assert torch.equal(to_uint8(ds.test, ds), torch.from_numpy(expected))
    assert levels_to_uint8(torch.arange(17), 17).tolist()[:3] == [0, 16, 32] and levels_to_uint8(
        torch.tensor([8, 16]), 17).tolist() == [128, 255]


def test_to_uint8_clamps_and_rounds_generated_values():
    ds = digits_dataset()
    x = torch.full((4, 1, 8, 8), 0.0)
    x[0], x[1], x[2] = 7.0, -3.0, 2 * 5.4 / 16 - 1  # above, below the support; nearest level 5
    u8 = to_uint8(x, ds)
    assert u8[0].unique().tolist() == [255] and u8[1].unique().tolist() == [0]
    assert u8[2].unique().tolist() == [80] and u8[3].unique().tolist() == [128]  # round(5*255/16)=80; level 8
    rgb = for_extractor(u8, rgb=True)
    assert rgb.shape == (4, 3, 8, 8) and torch.equal(rgb[:, 2], u8[:, 0])
    with pytest.raises(ValueError, match="expected images of shape"):
        to_uint8(torch.zeros(2, 64), ds)
    x[3, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="1 of 4 images contain NaN"):
        to_uint8(x, ds)


def test_patches_are_cut_inside_their_column_region():
    width, height = 200, 40
    photo = np.tile(np.arange(width, dtype=np.uint8), (height, 1))  # pixel value = its column
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    p = cut(photo, 8, 300, (0.7, 0.85), g1)
    assert p.shape == (300, 1, 8, 8) and torch.equal(p, cut(photo, 8, 300, (0.7, 0.85), g2))
    assert int(p.min()) >= 140 and int(p.max()) < 170  # columns [0.7 W, 0.85 W)
    assert torch.equal(p[:, 0, 0, 1:] - p[:, 0, 0, :-1], torch.ones(300, 7, dtype=torch.uint8))  # contiguous columns


def test_patches8_offline_split_and_levels():
    ds = patches8_dataset()
    n_photos = len(ds.train) // COUNTS["patches8"]["train"]
    assert ds.shape == (1, 8, 8) and ds.labels == {} and n_photos == 11
    assert (len(ds.val), len(ds.test)) == (n_photos * 500, n_photos * 1000)
    grid = (ds.test + 1.0) * 127.5
    assert torch.allclose(grid, grid.round(), atol=1e-4) and ds.test.min() >= -1 and ds.test.max() <= 1
