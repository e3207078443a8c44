"""`ebmbench fetch`: small files in the real on-disk formats (MNIST idx .gz, the CIFAR-10 python tarball, a torch
weights file) served from a loopback HTTP server, fetched, checked, and read back by the package's own loaders."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmbench import cli
from ebmbench.data.convert import to_uint8
from ebmbench.data.images import MissingDataError, cifar10_dataset, fashion_mnist_dataset, mnist_dataset
from ebmbench.fetch import MIRROR_ENV, FetchError, catalogue, fetch
from ebmbench.metrics.fidelity import INCEPTION_FILE, MissingWeightsError, inception_weights
from ebmbench.serialization import load_tensors


def idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def write_mnist(folder: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """10 training and 2 test images as torchvision's four .gz idx files."""
    folder.mkdir(parents=True)
    out = {}
    for prefix, n in (("train", 10), ("t10k", 2)):
        out[prefix] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx_gz(out[prefix]))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx_gz(rng.integers(0, 10, n, dtype=np.uint8)))
    return out


def write_cifar_tarball(path: Path, rng: np.random.Generator) -> np.ndarray:
    """cifar-10-python.tar.gz with 2 images per batch (python pickles in cifar-10-batches-py/); the test rows."""
    path.parent.mkdir(parents=True)
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        members[name] = {"batch_label": name, "data": rows, "labels": [1, 2], "filenames": ["a", "b"]}
    members["batches.meta"] = {"label_names": [f"class{i}" for i in range(10)]}
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return members["test_batch"]["data"]


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request log on stderr
        pass


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A loopback HTTP server over <mirror>/<name>/<file>, and what it serves."""
    base = tmp_path_factory.mktemp("mirror")
    rng = np.random.default_rng(0)
    served = {"mnist": write_mnist(base / "mnist", rng), "fashion_mnist": write_mnist(base / "fashion_mnist", rng),
              "cifar10": write_cifar_tarball(base / "cifar10" / "cifar-10-python.tar.gz", rng)}
    (base / "inception").mkdir()
    served["inception"] = {"w": torch.arange(12.0).reshape(3, 4)}
    torch.save(served["inception"], base / "inception" / INCEPTION_FILE)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(base)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", base, served
    server.shutdown()
    server.server_close()


def digests_of(base: Path) -> dict[str, str]:
    """md5 of each dataset file, sha256 prefix of the weights: computed here, for the files the mirror serves."""
    out = {f"{p.parent.name}/{p.name}": hashlib.md5(p.read_bytes()).hexdigest() for p in base.glob("*/*")}
    weights = base / "inception" / INCEPTION_FILE
    return {**out, f"inception/{INCEPTION_FILE}": hashlib.sha256(weights.read_bytes()).hexdigest()[:8]}


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_fetch_from_a_loopback_mirror_then_load_with_the_packages_loaders(mirror, tmp_path, monkeypatch):
    url, base, served = mirror
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    root = tmp_path / "data"
    where = fetch(["mnist", "fashion_mnist", "cifar10", "inception"], root=root, mirror=url,
                  digests=digests_of(base), progress=False)
    assert where["cifar10"] == root / "cifar-10-batches-py" and where["mnist"] == root / "MNIST" / "raw"
    for name, folder in (("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")):  # byte-identical copies
        for p in (base / name).iterdir():
            assert (root / folder / "raw" / p.name).read_bytes() == p.read_bytes()
    assert not list(root.glob(".fetch-*")) and not (root / "cifar-10-python.tar.gz").exists()  # temp and archive gone
    for reader, name in ((mnist_dataset, "mnist"), (fashion_mnist_dataset, "fashion_mnist")):
        with pytest.warns(UserWarning, match="official release"):  # tiny files: not the official counts
            ds = reader(root=root, check_integrity=False)
        assert torch.equal(to_uint8(ds.test, ds)[:, 0], torch.from_numpy(served[name]["t10k"]))
    with pytest.warns(UserWarning, match="md5 mismatch"):
        ds = cifar10_dataset(root=root, check_integrity=False)
    assert torch.equal(to_uint8(ds.test, ds).reshape(2, -1), torch.from_numpy(served["cifar10"]))
    weights = inception_weights()  # where runs look: torch hub's checkpoints folder
    assert weights == tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_FILE
    assert torch.equal(load_tensors(weights)["w"], served["inception"]["w"])
    again = fetch(["mnist", "inception"], root=root, mirror="http://127.0.0.1:9/none", digests=digests_of(base),
                  progress=False)  # intact files are not downloaded again (this mirror does not exist)
    assert again["inception"] == weights


def test_a_checksum_mismatch_is_one_clear_line_and_leaves_no_file(mirror, tmp_path, monkeypatch):
    url, base, _ = mirror
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FetchError, match=r"cifar-10-python.tar.gz from http://127.*md5 \w+ does not match the "
                                         r"expected c58f30108f718f92721af3b95e74349a; the download was deleted"):
        fetch(["cifar10"], root=tmp_path / "data", mirror=url, progress=False)  # torchvision's official md5
    wrong = {**digests_of(base), "mnist/t10k-labels-idx1-ubyte.gz": "0" * 32}
    with pytest.raises(FetchError, match="t10k-labels-idx1-ubyte.gz .*does not match"):
        fetch(["mnist"], root=tmp_path / "data", mirror=url, digests=wrong, progress=False)
    assert {p.name for p in files_under(tmp_path / "data")} == {  # the three intact files, no partial fourth
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"}
    with pytest.raises(FetchError, match=r"sha256 \w+ does not match the expected 6726825d") as err:
        fetch(["inception"], mirror=url, progress=False)
    assert "\n" not in str(err.value) and files_under(tmp_path / "torch") == []


def test_offline_is_one_line_naming_the_url_and_what_to_do(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name, file in (("mnist", "train-images-idx3-ubyte.gz"), ("inception", INCEPTION_FILE)):
        with pytest.raises(FetchError) as err:
            fetch([name], root=tmp_path / "data", mirror=f"http://127.0.0.1:{port}", progress=False)
        text = str(err.value)
        assert "\n" not in text and f"http://127.0.0.1:{port}/{name}/{file}" in text
        assert "connect this machine to the internet" in text and MIRROR_ENV in text
    assert files_under(tmp_path / "data") == [] and files_under(tmp_path / "torch") == []


def test_cli_fetch_help_lists_the_items_and_reads_the_mirror_variable(mirror, tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["fetch", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and all(f"  {name} " in out for name in ("mnist", "fashion_mnist", "cifar10",
                                                                          "inception"))
    url, _, _ = mirror
    monkeypatch.setenv(MIRROR_ENV, url)  # the mirror's files are not the official ones: the md5 check refuses them
    assert cli.main(["fetch", "fashion_mnist", "--root", str(tmp_path)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]  # and the bar
    assert len(errors) == 1 and errors[0].startswith(f"error: train-images-idx3-ubyte.gz from {url}/fashion_mnist/")


def test_upstream_sources_are_torchvisions_and_torch_fidelitys():
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    from torchvision.datasets import CIFAR10, MNIST

    items = catalogue(mirror="")
    assert items["mnist"].files[0].urls == tuple(m + MNIST.resources[0][0] for m in MNIST.mirrors)
    assert items["cifar10"].files[0].urls == (CIFAR10.url,) and items["cifar10"].files[0].digest == CIFAR10.tgz_md5
    assert items["inception"].files[0].urls == (URL_INCEPTION_V3,)
    assert items["inception"].files[0].digest == "6726825d"  # torch hub's sha256 prefix in the file name


@pytest.mark.parametrize("kind, reader", [("mnist", mnist_dataset), ("cifar10", cifar10_dataset)])
def test_a_missing_file_names_the_fetch_command(tmp_path, kind, reader):
    with pytest.raises(MissingDataError) as err:
        reader(root=tmp_path)
    assert f"`ebmbench fetch {kind} --root {tmp_path}`" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(MissingWeightsError, match="`ebmbench fetch inception"):
        inception_weights(tmp_path / "w.pth")
