"""What the per-run and per-suite figures share: drawing samples on an axis, the 2D evaluation grid."""

from __future__ import annotations

import torch
from torch import Tensor


def show_samples(ax, x: Tensor, title: str, box) -> None:
    """Scatter 2D points, or a grid of images (uint8 bytes as kept in samples.pt, or model space), on ``ax``."""
    if x.dtype == torch.uint8:
        x = box.low + (box.high - box.low) * x.float() / 255
    x = x.detach().float().cpu()
    if x.dim() == 2 and x.shape[1] == 2:
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_xlim(box.low, box.high)
        ax.set_ylim(box.low, box.high)
        ax.set_aspect("equal")
    else:
        from torchvision.utils import make_grid  # lazy: torchvision's import costs seconds, 2D runs skip it

        imgs = (x[:64] - box.low) / (box.high - box.low)
        grid = make_grid(imgs.clamp(0, 1), nrow=8, padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    ax.set_title(title, fontsize=9)


def grid_2d(box, n: int = 200) -> Tensor:
    ticks = torch.linspace(box.low, box.high, n)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="xy")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)
