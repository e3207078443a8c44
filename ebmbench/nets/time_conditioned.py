"""The time-conditioned network f(x, t) that diffusion (eps_theta) and score (s_theta via c_noise) models share."""

from __future__ import annotations

from torch import nn

from ebmbench.nets.mlp import TimeMLP
from ebmbench.nets.unet import small_unet


def time_conditioned_net(shape: tuple[int, ...], *, hidden: int, depth: int, channels: str, what: str) -> nn.Module:
    """TimeMLP for vector data (D,), diffusers' UNet2DModel of block widths ``channels`` for images (C, H, W)
    (Ho et al. 2020's U-Net, small); ``what`` names the network in the error for any other shape."""
    if len(shape) == 1:
        return TimeMLP(shape[0], hidden=hidden, depth=depth)
    if len(shape) == 3:
        return small_unet(shape, channels=tuple(int(c) for c in channels.split(",")))  # type: ignore[arg-type]
    raise ValueError(f"{what} nets take shapes (D,) and (C, H, W), not {shape}")
