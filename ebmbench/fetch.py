"""`ebmbench fetch`: the image datasets (torchvision's files and md5 checksums, downloaded by torchvision's
``download_url``) and the Inception weights of published FIDs (torch-fidelity's file and URL, downloaded by torch
hub's ``download_url_to_file`` with the sha256 prefix in its name), into the folders runs read.

Datasets go under the data root (``--root``, else $EBMBENCH_DATA, else ~/.cache/ebmbench/data) in torchvision's
layout: <root>/MNIST/raw, <root>/FashionMNIST/raw (the .gz files, which ``ebmbench.data.images`` reads directly),
<root>/cifar-10-batches-py (the archive is extracted, then deleted). The weights go where torch-fidelity caches
them and ``metrics.fidelity.inception_weights`` looks: torch hub's checkpoint folder
($TORCH_HOME/hub/checkpoints, default ~/.cache/torch/hub/checkpoints), or ``--weights-dir``.

Every file is downloaded into a temporary folder beside its destination, checked, and only then moved into
place: a checksum mismatch or a dropped connection leaves no partial file. ``$EBMBENCH_MIRROR`` (or
``mirror=``) replaces the upstream URLs by ``<mirror>/<name>/<file>`` (a private mirror, or a test's server).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tarfile
import tempfile
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ebmbench.data.images import data_root
from ebmbench.metrics.fidelity import INCEPTION_FILE, INCEPTION_WEIGHTS_ENV, URL_INCEPTION_V3

MIRROR_ENV = "EBMBENCH_MIRROR"


class FetchError(RuntimeError):
    """A download that failed: one line naming the URL or file and what to do."""


@dataclass(frozen=True)
class Remote:
    """One file to download: its name, the URLs to try in order, and its expected digest."""

    filename: str
    urls: tuple[str, ...]
    digest: str  # md5 (torchvision's datasets) or a sha256 prefix (torch hub's weights)


@dataclass(frozen=True)
class Item:
    """A fetchable dataset or weights file: what it is, its download size and where it goes."""

    name: str
    kind: str  # "dataset" or "weights"
    title: str
    size: str
    files: tuple[Remote, ...]
    folder: str  # relative to the data root (datasets) or the weights folder (weights), for --help and messages


def _urls(name: str, filename: str, upstream: list[str], mirror: str | None) -> tuple[str, ...]:
    return (f"{mirror.rstrip('/')}/{name}/{filename}",) if mirror else tuple(upstream)


def catalogue(mirror: str | None = None) -> dict[str, Item]:
    """Every fetchable item, with torchvision's and torch-fidelity's own file names, URLs and checksums."""
    from torchvision.datasets import CIFAR10, MNIST, FashionMNIST

    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    items = {}
    for name, cls, title, size in (("mnist", MNIST, "MNIST (LeCun et al. 1998)", "12 MB"),
                                   ("fashion_mnist", FashionMNIST, "Fashion-MNIST (Xiao et al. 2017)", "30 MB")):
        files = tuple(Remote(f, _urls(name, f, [m + f for m in cls.mirrors], mirror), md5) for f, md5 in cls.resources)
        items[name] = Item(name, "dataset", title, size, files, f"{cls.__name__}/raw")
    archive = Remote(CIFAR10.filename, _urls("cifar10", CIFAR10.filename, [CIFAR10.url], mirror), CIFAR10.tgz_md5)
    items["cifar10"] = Item("cifar10", "dataset", "CIFAR-10 (Krizhevsky 2009), python batches", "170 MB",
                            (archive,), CIFAR10.base_folder)
    sha_prefix = INCEPTION_FILE.rsplit("-", 1)[-1].split(".")[0]  # torch hub's convention: name-<sha256 prefix>.ext
    weights = Remote(INCEPTION_FILE, _urls("inception", INCEPTION_FILE, [URL_INCEPTION_V3], mirror), sha_prefix)
    items["inception"] = Item("inception", "weights", "Inception-v3 of published FID/KID/IS (torch-fidelity's port)",
                              "~96 MB", (weights,), "")
    return items


def cifar10_members() -> list[str]:
    """The files of cifar-10-batches-py that the reader needs (torchvision's lists)."""
    from torchvision.datasets import CIFAR10

    return [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]


def weights_folder(weights_dir: str | Path | None = None) -> Path:
    """Where the Inception weights go: ``weights_dir``, else torch hub's checkpoint folder (torch-fidelity's cache)."""
    import torch

    return Path(weights_dir).expanduser() if weights_dir else Path(torch.hub.get_dir()) / "checkpoints"


def fetch_command(name: str, root: str | Path | None = None) -> str:
    """The one command that fetches ``name`` (into ``root`` when given), for missing-file messages."""
    return f"ebmbench fetch {name}" + (f" --root {root}" if root else "")


# --- checks ---------------------------------------------------------------------------------------------------

def md5_of(path: Path) -> str:
    from torchvision.datasets.utils import calculate_md5

    return calculate_md5(str(path))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest_ok(path: Path, remote: Remote, kind: str) -> bool:
    """The file is there and has the expected md5 (datasets) or sha256 prefix (weights)."""
    if not path.is_file():
        return False
    return sha256_of(path).startswith(remote.digest) if kind == "weights" else md5_of(path) == remote.digest


# --- downloads ------------------------------------------------------------------------------------------------

def _unreachable(tried: list[tuple[str, BaseException]], remote: Remote, folder: Path) -> str:
    """One line: every URL tried with why it failed, and the three ways to get the file."""
    urls = ", ".join(f"{url} ({getattr(err, 'reason', None) or err})" for url, err in tried)
    return (f"could not download {urls}; connect this machine to the internet and rerun, set {MIRROR_ENV} to a "
            f"mirror that serves <mirror>/<name>/{remote.filename}, or copy {remote.filename} into {folder} from a "
            "machine that has it")


def _mismatch(remote: Remote, url: str, got: str, what: str) -> str:
    return (f"{remote.filename} from {url}: {what} {got} does not match the expected {remote.digest}; the download "
            "was deleted. Retry (a proxy or a broken transfer changes files), or use another mirror")


def _download_dataset_file(remote: Remote, tmp: Path, folder: Path, progress: bool) -> tuple[Path, str]:
    """torchvision's download of one file into ``tmp``, trying each URL; its md5 checked before it is kept."""
    from torchvision.datasets.utils import download_url

    errors = []
    for url in remote.urls:
        try:
            if progress:
                print(f"{remote.filename} <- {url}")
            download_url(url, str(tmp), remote.filename)  # md5 checked below, to name the digest we got
            break
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            (tmp / remote.filename).unlink(missing_ok=True)
            errors.append((url, err))
    else:
        raise FetchError(_unreachable(errors, remote, folder))
    path = tmp / remote.filename
    got = md5_of(path)
    if got != remote.digest:
        raise FetchError(_mismatch(remote, url, got, "md5"))
    return path, url


def _extract_cifar10(archive: Path, tmp: Path, root: Path) -> None:
    """The python batches out of the archive into <root>/cifar-10-batches-py.

    tarfile's 'data' filter, not torchvision's extract_archive: it refuses links and paths outside the folder."""
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(tmp / "x", filter="data")
    source = tmp / "x" / "cifar-10-batches-py"
    absent = [m for m in cifar10_members() if not (source / m).is_file()]
    if absent:
        raise FetchError(f"{archive.name} lacks cifar-10-batches-py/{', '.join(absent)}; not the CIFAR-10 python "
                         "archive (check the mirror)")
    dest = root / "cifar-10-batches-py"
    dest.mkdir(parents=True, exist_ok=True)
    for member in cifar10_members():
        os.replace(source / member, dest / member)


def fetch_dataset(item: Item, root: Path, progress: bool = True) -> Path:
    """Download a dataset's files into the data root (skipping files already there and intact)."""
    folder = root / item.folder
    if item.name == "cifar10":
        if all((folder / m).is_file() for m in cifar10_members()):
            return folder  # the reader checks each batch's md5 (check_integrity)
        todo = list(item.files)
    else:
        todo = [r for r in item.files if not digest_ok(folder / r.filename, r, item.kind)]
    if not todo:
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as t:  # same file system: moves are renames
        tmp = Path(t)
        for remote in todo:
            path, _ = _download_dataset_file(remote, tmp, folder, progress)
            if item.name == "cifar10":
                _extract_cifar10(path, tmp, root)
            else:
                folder.mkdir(parents=True, exist_ok=True)
                os.replace(path, folder / remote.filename)
    return folder


def fetch_weights(item: Item, folder: Path, progress: bool = True) -> Path:
    """torch hub's download of the weights file (sha256 prefix checked; a mismatch leaves no file)."""
    import torch

    remote = item.files[0]
    dest = folder / remote.filename
    if digest_ok(dest, remote, item.kind):
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in remote.urls:
        if progress:
            print(f"{remote.filename} <- {url}")
        try:
            torch.hub.download_url_to_file(url, str(dest), hash_prefix=remote.digest, progress=progress)
            return dest
        except RuntimeError as err:  # torch hub: 'invalid hash value'; it deleted its partial file
            if "hash" in str(err):
                raise FetchError(_mismatch(remote, url, str(err).split("got")[-1].strip(' ")'), "sha256")) from None
            errors.append((url, err))
        except (urllib.error.URLError, OSError) as err:
            errors.append((url, err))
    raise FetchError(_unreachable(errors, remote, folder))


def fetch(names: list[str], root: str | Path | None = None, weights_dir: str | Path | None = None,
          mirror: str | None = None, digests: dict[str, str] | None = None, progress: bool = True) -> dict[str, Path]:
    """Fetch the named items; returns where each one lies. ``digests`` ("<item>/<file>" -> md5 or sha256 prefix)
    overrides the upstream checksums: for a mirror of other files, as in the tests. ``progress``: the per-file lines
    and torch hub's bar (torchvision's download always draws its own)."""
    items = catalogue(mirror)
    unknown = sorted(set(names) - set(items))
    if unknown:
        raise FetchError(f"unknown item(s) {unknown}; choose from {sorted(items)} or 'all'")
    out = {}
    for name in names:
        item = items[name]
        if digests:
            item = Item(item.name, item.kind, item.title, item.size,
                        tuple(Remote(r.filename, r.urls, digests.get(f"{name}/{r.filename}", r.digest))
                              for r in item.files),
                        item.folder)
        if item.kind == "weights":
            out[name] = fetch_weights(item, weights_folder(weights_dir), progress)
        else:
            out[name] = fetch_dataset(item, data_root(root), progress)
    return out


# --- command line ---------------------------------------------------------------------------------------------

def epilog() -> str:
    lines = ["items:"]
    for item in catalogue().values():
        where = (f"<root>/{item.folder}" if item.kind == "dataset"
                 else "torch hub's checkpoints folder ($TORCH_HOME/hub/checkpoints) or --weights-dir")
        lines.append(f"  {item.name:<14} {item.kind:<8} {item.size:>7}  {item.title}; into {where}")
    lines += ["", "<root>: --root, else $EBMBENCH_DATA, else ~/.cache/ebmbench/data (where runs read datasets).",
              f"${MIRROR_ENV}: fetch every file from <mirror>/<name>/<file> instead of upstream.",
              "Files are checked (torchvision's md5s, torch hub's sha256 prefix) before they are moved into place."]
    return "\n".join(lines)


def configure_parser(p: argparse.ArgumentParser, fn: Callable[[argparse.Namespace], int]) -> None:
    """The arguments of `ebmbench fetch`."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = "download datasets and the Inception weights into the folders runs read"
    p.epilog = epilog()
    p.add_argument("items", nargs="+", metavar="ITEM", choices=[*catalogue(), "all"],
                   help=f"one or more of: {', '.join(catalogue())}, all")
    p.add_argument("--root", help="data root for datasets (default $EBMBENCH_DATA, else ~/.cache/ebmbench/data)")
    p.add_argument("--weights-dir", help="folder for the weights (default torch hub's checkpoints folder)")
    p.set_defaults(fn=fn)


def main(args: argparse.Namespace) -> int:
    """`ebmbench fetch ITEM...`: fetch each, print where it lies; a failure is one line."""
    import sys

    names = list(catalogue()) if "all" in args.items else list(dict.fromkeys(args.items))
    try:
        where = fetch(names, root=args.root, weights_dir=args.weights_dir, progress=True)
    except FetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, path in where.items():
        print(f"{name}: {path}")
    if "inception" in where and args.weights_dir:
        print(f"runs find these weights with {INCEPTION_WEIGHTS_ENV}={where['inception']}")
    return 0
