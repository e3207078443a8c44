"""Natural image patches (8x8 grayscale, 32x32 color), a classic density-modelling benchmark
(Zoran & Weiss 2011; Theis et al. 2016), cut from the photos bundled with scikit-image (no download).

Split by region, so that no pixel is shared between splits: in every photo the columns
[0, 0.7 W) give the training patches, [0.7 W, 0.85 W) validation and [0.85 W, W) test.
Patch positions are drawn uniformly inside each region with a seeded generator
(seed ``PATCH_SEED``), a fixed number per photo and split. Bytes b map to 2b/255 - 1 in
[-1, 1]; grayscale versions of color photos are round(255 * Y) with skimage's
``rgb2gray`` luma Y. Patches have no labels: they get likelihood metrics, not FID.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ebmbench.data.base import Dataset
from ebmbench.protocol import Box

PATCH_SEED = 0  # seeds the patch positions
REGIONS = {"train": (0.0, 0.7), "val": (0.7, 0.85), "test": (0.85, 1.0)}  # column fractions of each photo
GRAY_PHOTOS = ("camera", "coins", "moon", "grass", "gravel", "brick")  # bundled grayscale photos
COLOR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle")  # bundled color photos
COUNTS = {  # patches per photo and split
    "patches8": {"train": 4000, "val": 500, "test": 1000},
    "patches32": {"train": 1000, "val": 200, "test": 200},
}


def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as uint8 (H, W) or (H, W, 3)."""
    from skimage import data

    if name == "motorcycle":
        return data.stereo_motorcycle()[0]  # the left view
    return getattr(data, name)()


def to_gray(photo: np.ndarray) -> np.ndarray:
    """uint8 grayscale: unchanged for gray photos, round(255 * rgb2gray) for color ones."""
    from skimage.color import rgb2gray

    if photo.ndim == 2:
        return photo
    return np.round(255.0 * rgb2gray(photo)).astype(np.uint8)


def cut(photo: np.ndarray, size: int, n: int, columns: tuple[float, float], generator: torch.Generator) -> Tensor:
    """n patches (n, C, size, size) at uniform positions fully inside the photo's column range."""
    height, width = photo.shape[:2]
    lo, hi = int(columns[0] * width), int(columns[1] * width)
    if hi - lo < size or height < size:
        raise ValueError(f"region of {hi - lo}x{height} pixels cannot hold a {size}x{size} patch")
    rows = torch.randint(0, height - size + 1, (n,), generator=generator)
    cols = torch.randint(lo, hi - size + 1, (n,), generator=generator)
    image = torch.from_numpy(photo if photo.ndim == 3 else photo[..., None])  # (H, W, C)
    offsets = torch.arange(size)
    r = (rows[:, None] + offsets)[:, :, None]  # (n, size, 1)
    c = (cols[:, None] + offsets)[:, None, :]  # (n, 1, size)
    return image[r, c].permute(0, 3, 1, 2).contiguous()  # (n, C, size, size)


def patches_dataset(name: str) -> Dataset:
    """``patches8`` (8x8 gray, all photos) or ``patches32`` (32x32 RGB, color photos)."""
    if name not in COUNTS:
        raise ValueError(f"patch dataset {name!r}: choose one of {sorted(COUNTS)}")
    size, color = (8, False) if name == "patches8" else (32, True)
    names = COLOR_PHOTOS if color else GRAY_PHOTOS + COLOR_PHOTOS
    photos = [load_photo(p) if color else to_gray(load_photo(p)) for p in names]
    generator = torch.Generator().manual_seed(PATCH_SEED)
    splits = {split: torch.cat([cut(photo, size, COUNTS[name][split], columns, generator) for photo in photos])
              for split, columns in REGIONS.items()}
    x = {k: v.float() / 127.5 - 1.0 for k, v in splits.items()}
    channels = 3 if color else 1
    return Dataset(
        name=name, train=x["train"], val=x["val"], test=x["test"], support=Box(-1.0, 1.0, (channels, size, size)),
        convention=(f"256 integer levels b in 0..255 stored as 2b/255 - 1; {size}x{size} patches of the "
                    f"scikit-image photos {', '.join(names)}{'' if color else ' (color ones as round(255 * luma))'}; "
                    f"split by column region {REGIONS}, positions seeded with {PATCH_SEED}"),
        levels=256,
    )


def patches8_dataset() -> Dataset:
    """8x8 grayscale natural image patches (Zoran & Weiss 2011 style), offline."""
    return patches_dataset("patches8")


def patches32_dataset() -> Dataset:
    """32x32 color natural image patches, offline."""
    return patches_dataset("patches32")
