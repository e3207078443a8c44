"""Convolutional energy E_theta(x) for images: SiLU (Swish), no batch norm, optional spectral norm.

Batch norm is left out on purpose: it makes E(x) depend on the other samples of the batch,
so E would not be a function of x alone and Langevin chains would interact (Du & Mordatch 2019).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


def apply_spectral_norm(net: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Spectral normalization (Miyato et al. 2018) of every Conv2d and Linear weight of ``net``, in place.

    torch normalizes the weight reshaped to (out, in * k * k), one power iteration per forward in
    training mode (15 at wrapping time).
    """
    for module in list(net.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            _spectral_norm(module, n_power_iterations=n_power_iterations)
    return net


class ConvEnergy(nn.Module):
    """3x3 convs with SiLU and stride-2 downsampling, global mean pool, linear to a scalar.

    Global pooling makes the image size free: 1x8x8 digits, 1x28x28 MNIST, 3x32x32 CIFAR-10.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...] = (32, 64), spectral_norm: bool = False) -> None:
        super().__init__()
        if not channels:
            raise ValueError("ConvEnergy needs at least one stage of channels")
        layers: list[nn.Module] = []
        c = in_channels
        for i, c_out in enumerate(channels):
            layers += [nn.Conv2d(c, c_out, 3, stride=1 if i == 0 else 2, padding=1), nn.SiLU()]
            layers += [nn.Conv2d(c_out, c_out, 3, padding=1), nn.SiLU()]
            c = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 1)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x).mean(dim=(2, 3))
        return self.head(h).squeeze(-1)


def conv_energy_for(
    shape: tuple[int, ...], channels: tuple[int, ...] = (32, 64), spectral_norm: bool = False
) -> ConvEnergy:
    """A ConvEnergy for images of ``shape`` (C, H, W)."""
    if len(shape) != 3:
        raise ValueError(f"a conv energy needs an image shape (C, H, W), got {tuple(shape)}")
    return ConvEnergy(shape[0], tuple(channels), spectral_norm=spectral_norm)
