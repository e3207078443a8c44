"""Importance-sampling ESS of a normalized model against the exact data density (Midgley et al. 2023, FAB's
``eval_ess_flow``): x_i ~ q (the model's own one-shot sampler), log w_i = log p(x_i) - log q(x_i), and
ESS / N = 1 / (N sum_i w_bar_i^2) with w_bar the self-normalized weights (lollcat/fab-torch fab/utils/numerical.py,
``effective_sample_size``, and fab/core.py ``get_eval_info`` at c8ae67bb47a7e765595d154be597bf9a8e75f238, which
evaluates it on 50 000 flow samples: examples/paper_results/gmm/evaluation.py, num_samples = int(5e4)).
"""

from __future__ import annotations

from typing import Any

import torch

from ebmbench.data.base import Dataset
from ebmbench.metrics.base import Measured, Metric, NotApplicable, register
from ebmbench.protocol import GenerativeModel

IS_SAMPLES = 50_000  # FAB's evaluation: int(5e4) flow samples


def normalized_ess(log_w: torch.Tensor) -> float:
    """1 / (N sum w_bar^2) from log weights (FAB's ``effective_sample_size(log_w, normalised=False)``)."""
    w = torch.softmax(log_w.double().reshape(-1), dim=0)
    return float(1.0 / (w.pow(2).sum() * w.numel()))


def is_ess(model: GenerativeModel, dataset: Dataset, n: int = IS_SAMPLES, seed: int = 0) -> Measured:
    """ESS / N of the model's exact samples importance-weighted to the exact data density."""
    if dataset.density is None:
        raise NotApplicable(f"dataset {dataset.name!r} has no exact density to weight against")
    if not model.has("generate"):
        raise NotApplicable("needs exact one-shot samples (capability 'generate') with their log q")
    generator = torch.Generator(device=model.device).manual_seed(seed + 50_021)
    with torch.no_grad():
        x = model.sample(n, generator=generator, sampler="generator").x
        log_q = model.log_prob(x).double().cpu()
        log_p = dataset.density.log_prob(x.detach().cpu().double())
    log_w = log_p - log_q
    finite = torch.isfinite(log_w)
    meta: dict[str, Any] = {"n": n, "non_finite_weights": int((~finite).sum()),
                            "estimator": "1 / (N sum w_bar^2), self-normalized weights p / q (FAB eval_ess_flow)",
                            "mean_log_w": float(log_w[finite].mean()) if bool(finite.any()) else None}
    if not bool(finite.all()):
        raise ValueError(f"{meta['non_finite_weights']} of {n} importance weights are not finite")
    return normalized_ess(log_w), None, meta


register(Metric("is_ess", "model", is_ess, "Midgley et al. 2023 (FAB): importance-sampling ESS of the model vs p",
                lambda cfg: {"seed": cfg.seed}, requires="log_prob"))
