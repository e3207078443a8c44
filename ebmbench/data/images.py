"""Image datasets. scikit-learn's bundled 8x8 digits (Alpaydin & Kaynak 1998) work offline."""

from __future__ import annotations

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
            "17 integer levels k in 0..16 stored as 2k/16 - 1; discrete likelihoods use uniform "
            "dequantization over each level's bin and add 64 * log(17) nats per image"
        )
    idx = fixed_split(len(x))
    return Dataset(
        name="digits_binary" if binarized else "digits",
        train=x[idx["train"]], val=x[idx["val"]], test=x[idx["test"]],
        support=box, convention=convention, levels=n_levels,
        labels={k: labels[v] for k, v in idx.items()},
    )
