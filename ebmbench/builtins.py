"""Every built-in dataset, method, sampler and metric, registered in one place (metrics: every module of
``ebmbench.metrics`` registers itself; ``ebmbench.metrics.registry`` imports them all)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial

import ebmbench.methods.diffusion  # noqa: F401  (registers ddpm)
import ebmbench.methods.ebm  # noqa: F401  (registers pcd_ebm, replay_buffer)
import ebmbench.methods.ebm_objectives  # noqa: F401  (registers short_run_ebm, cdk_ebm, dsm_ebm, ssm_ebm, nce_ebm)
import ebmbench.methods.flow  # noqa: F401  (registers realnvp)
import ebmbench.methods.gan  # noqa: F401  (registers dcgan, wgan_gp, sngan)
import ebmbench.methods.rbm  # noqa: F401  (registers rbm_cd, rbm_pcd, gibbs)
import ebmbench.methods.score  # noqa: F401  (registers ncsn, annealed_langevin)
import ebmbench.samplers.diffusion  # noqa: F401  (registers ddpm, ddim samplers)
import ebmbench.samplers.hmc  # noqa: F401  (registers hmc)
import ebmbench.samplers.langevin  # noqa: F401  (registers langevin)
import ebmbench.samplers.mala  # noqa: F401  (registers mala)
import ebmbench.samplers.oneshot  # noqa: F401  (registers the generator sampler)
from ebmbench.data.base import Dataset
from ebmbench.data.images import cifar10_dataset, digits_dataset, fashion_mnist_dataset, mnist_dataset
from ebmbench.data.patches import patches8_dataset, patches32_dataset
from ebmbench.data.toy2d import DENSITIES, make_toy_dataset
from ebmbench.methods.base import METHODS
from ebmbench.metrics.registry import MODEL_METRICS, SAMPLE_METRICS
from ebmbench.protocol import SAMPLERS
from ebmbench.registry import Registry

DATASETS: Registry[Callable[[], Dataset]] = Registry("dataset")
for _name in DENSITIES:
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


__all__ = ["DATASETS", "METHODS", "MODEL_METRICS", "SAMPLERS", "SAMPLE_METRICS", "load_dataset"]
