"""A small diffusers UNet2DModel as a noise predictor eps_theta(x_t, t) for small images."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from diffusers import UNet2DModel


class EpsUNet(nn.Module):
    """Wraps ``UNet2DModel`` so that every eps net has the signature ``net(x_t, t) -> eps``."""

    def __init__(self, unet: UNet2DModel) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        return self.unet(x, t).sample


def small_unet(
    shape: tuple[int, int, int],
    *,
    channels: tuple[int, ...] = (32, 64),
    layers_per_block: int = 1,
    norm_num_groups: int = 8,
) -> EpsUNet:
    """UNet (Ronneberger et al. 2015, as in Ho et al. 2020) for (C, H, W) images, e.g. 1x8x8 digits."""
    if len(shape) != 3:
        raise ValueError(f"small_unet needs an image shape (C, H, W), got {shape}")
    c, h, w = shape
    if h != w:
        raise ValueError(f"small_unet needs square images, got {h}x{w}")
    if h % 2 ** (len(channels) - 1):
        raise ValueError(f"image size {h} is not divisible by 2^{len(channels) - 1} (one halving per block)")
    from diffusers import UNet2DModel  # lazy: seconds of import for notebooks without a U-Net

    unet = UNet2DModel(
        sample_size=h,
        in_channels=c,
        out_channels=c,
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        down_block_types=("DownBlock2D",) * len(channels),
        up_block_types=("UpBlock2D",) * len(channels),
        norm_num_groups=norm_num_groups,
    )
    return EpsUNet(unet)
