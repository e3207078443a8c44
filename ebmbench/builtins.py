"""Every built-in dataset, method, sampler and metric, registered in one place (metrics: every module of
``ebmbench.metrics`` registers itself; ``ebmbench.metrics.registry`` imports them all)."""

from __future__ import annotations

import ebmbench.methods.diffusion  # noqa: F401  (registers ddpm)
import ebmbench.methods.ebm  # noqa: F401  (registers pcd_ebm, replay_buffer)
import ebmbench.methods.ebm_objectives  # noqa: F401  (registers short_run_ebm, cdk_ebm, dsm_ebm, ssm_ebm, nce_ebm)
import ebmbench.methods.energy_diffusion  # noqa: F401  (registers energy_ddpm)
import ebmbench.methods.flow  # noqa: F401  (registers realnvp)
import ebmbench.methods.gan  # noqa: F401  (registers dcgan, wgan_gp, sngan)
import ebmbench.methods.rbm  # noqa: F401  (registers rbm_cd, rbm_pcd, gibbs)
import ebmbench.methods.score  # noqa: F401  (registers ncsn, annealed_langevin)
import ebmbench.samplers.corrected  # noqa: F401  (registers ddpm_ula, ddpm_mala, ddpm_hmc)
import ebmbench.samplers.diffusion  # noqa: F401  (registers ddpm, ddim samplers)
import ebmbench.samplers.hmc  # noqa: F401  (registers hmc)
import ebmbench.samplers.langevin  # noqa: F401  (registers langevin)
import ebmbench.samplers.mala  # noqa: F401  (registers mala)
import ebmbench.samplers.oneshot  # noqa: F401  (registers the generator sampler)
from ebmbench.data.registry import DATASETS, load_dataset
from ebmbench.methods.base import METHODS
from ebmbench.metrics.registry import MODEL_METRICS, SAMPLE_METRICS
from ebmbench.protocol import SAMPLERS

__all__ = ["DATASETS", "METHODS", "MODEL_METRICS", "SAMPLERS", "SAMPLE_METRICS", "load_dataset"]
