"""Small numerical helpers shared across layers (data, methods, metrics); they import nothing from ebmbench."""

from __future__ import annotations

import torch
from torch import Tensor


def log_ndtr_diff(u: Tensor, v: Tensor) -> Tensor:
    """log(Phi(u) - Phi(v)) for u > v, stable in both tails (reflects to the lower tail)."""
    flip = v > 0
    hi, lo = torch.where(flip, -v, u), torch.where(flip, -u, v)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp(log_lo - log_hi))


def visible_logits(train: Tensor) -> Tensor:
    """logit of each pixel's mean over binary ``train``, smoothed by Laplace's rule (k + 1) / (n + 2) so it stays
    finite: the visible biases of a base-rate RBM (Hinton 2010; Salakhutdinov & Murray 2008)."""
    flat = train.flatten(1).double()
    p = (flat.sum(dim=0) + 1) / (len(flat) + 2)
    return torch.logit(p).float()
