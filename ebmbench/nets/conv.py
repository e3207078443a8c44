"""Convolutional energy E_theta(x) for small images: SiLU, no batch norm (Du & Mordatch 2019)."""

from __future__ import annotations

from torch import Tensor, nn


class ConvEnergy(nn.Module):
    """3x3 convs with SiLU and stride-2 downsampling, global mean pool, linear to a scalar."""

    def __init__(self, in_channels: int, channels: tuple[int, ...] = (32, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, c_out in enumerate(channels):
            layers += [nn.Conv2d(c, c_out, 3, stride=1 if i == 0 else 2, padding=1), nn.SiLU()]
            layers += [nn.Conv2d(c_out, c_out, 3, padding=1), nn.SiLU()]
            c = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x).mean(dim=(2, 3))
        return self.head(h).squeeze(-1)
