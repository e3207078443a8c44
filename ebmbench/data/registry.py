"""Every built-in dataset by name, and ``load_dataset``: the data layer's registry (``builtins`` re-exports it)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial

from ebmbench.data.base import Dataset
from ebmbench.data.images import cifar10_dataset, digits_dataset, fashion_mnist_dataset, mnist_dataset
from ebmbench.data.patches import patches8_dataset, patches32_dataset
from ebmbench.data.targets import PLANAR
from ebmbench.data.toy2d import DENSITIES, make_toy_dataset
from ebmbench.registry import Registry

DATASETS: Registry[Callable[[], Dataset]] = Registry("dataset")
for _name in [*DENSITIES, *PLANAR]:  # PLANAR: 2D sampling targets (gmm40), also training sets
    DATASETS.register(_name, partial(make_toy_dataset, _name))
DATASETS.register("digits", digits_dataset)
DATASETS.register("digits_binary", partial(digits_dataset, binarized=True))
for _name, _build in [("mnist", mnist_dataset), ("fashion_mnist", fashion_mnist_dataset),
                      ("cifar10", cifar10_dataset), ("patches8", patches8_dataset), ("patches32", patches32_dataset)]:
    DATASETS.register(_name, _build)


@cache
def load_dataset(name: str) -> Dataset:
    """The named dataset, built once per process."""
    return DATASETS.get(name)()
