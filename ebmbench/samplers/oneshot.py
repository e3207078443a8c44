"""One-shot sampling from a latent prior: x = G(z), z ~ N(0, I) — one network call per batch.

Serves every model that declares the capability "generate": it must define ``latent_shape``
(one latent's shape) and ``generate(z)``, which maps a batch of latents to data with exactly
one call of ``model.net`` (a GAN generator, Goodfellow et al. 2014; a flow's inverse, Dinh et al. 2017).
"""

from __future__ import annotations

import torch

from ebmbench.protocol import SAMPLERS, GenerativeModel, SamplerOutput, SamplerSpec


@torch.no_grad()
def generator_sampler(model: GenerativeModel, n: int, generator: torch.Generator,
                      support_mode: str = "none") -> SamplerOutput:
    """z ~ N(0, I) from ``generator``, x = model.generate(z); kept to the support only if support_mode says so."""
    z = torch.randn((n, *model.latent_shape), generator=generator, device=model.device)
    x = model.support.project(model.generate(z), support_mode)
    return SamplerOutput(x, nfe=1, info={"prior": "standard normal", "support_mode": support_mode})


SAMPLERS.register(
    "generator",
    SamplerSpec("generator", requires="generate", fn=generator_sampler,
                cite="ancestral sampling x = G(z), z ~ N(0, I) (Goodfellow et al. 2014; Dinh et al. 2017)"),
)
