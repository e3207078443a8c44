"""The one conversion from model space to 8-bit images, used for real and generated images alike.

``to_uint8`` clamps to the dataset's support, snaps to the nearest stored level and maps
that level to a byte. A real image therefore converts to exactly the bytes it is stored
as (256-level data) or to the fixed byte of its level (digits: 17 levels k -> round(k * 255 / 16),
halves rounded up). ``for_extractor`` only adapts channels for an extractor that needs RGB;
torch-fidelity's Inception resizes internally (TF1-compatible bilinear to 299x299), so
no resizing happens here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ebmbench.data.base import Dataset

CONTINUOUS_LEVELS = 256  # continuous data (levels None) is quantized to 256 levels over its support


def levels_to_uint8(k: Tensor, levels: int) -> Tensor:
    """Level index k in 0..levels-1 to the byte floor(k * 255 / (levels - 1) + 1/2), in exact integers."""
    if levels < 2:
        raise ValueError(f"levels={levels}: need at least 2 levels")
    k = k.to(torch.int64)
    return ((k * 255 * 2 + (levels - 1)) // (2 * (levels - 1))).to(torch.uint8)


def to_levels(x: Tensor, dataset: Dataset) -> Tensor:
    """Clamp to the support and round to the nearest level index (int64), as the stored data are."""
    levels = dataset.levels or CONTINUOUS_LEVELS
    box = dataset.support
    unit = (box.clamp(x.detach().float()) - box.low) / (box.high - box.low)
    return torch.round(unit * (levels - 1)).to(torch.int64)


def to_uint8(x: Tensor, dataset: Dataset) -> Tensor:
    """Model-space images (N, C, H, W) to uint8 images of the same shape: clamp, round to a level, scale."""
    if x.dim() != 4 or x.shape[1:] != dataset.train.shape[1:]:
        raise ValueError(f"expected images of shape (N, {', '.join(map(str, dataset.shape))}), got {tuple(x.shape)}")
    if torch.isnan(x).any():
        raise ValueError(f"{int(torch.isnan(x).flatten(1).any(1).sum())} of {len(x)} images contain NaN: "
                         "there is no byte for NaN (infinities clamp to the support)")
    return levels_to_uint8(to_levels(x, dataset), dataset.levels or CONTINUOUS_LEVELS)


def for_extractor(images: Tensor, rgb: bool) -> Tensor:
    """Grayscale to RGB by channel repetition where the extractor takes RGB; anything else is unchanged."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images from to_uint8, got {images.dtype}")
    if not rgb or images.shape[1] == 3:
        return images
    if images.shape[1] != 1:
        raise ValueError(f"cannot make RGB from {images.shape[1]} channels")
    return images.expand(-1, 3, -1, -1).contiguous()
