"""The published CIFAR-10 networks of the cifar10 suite's recipes, as their papers and reference code specify them.

Each builder takes the image shape (C, H, W) and returns plain ``nn.Module``s with the call signatures
the methods expect: an energy ``E(x) -> (B,)``, a noise predictor ``eps(x_t, t)``, a noise-conditional
score network ``f(x, c_noise)`` (c_noise = 100 ln sigma, ``ebmbench.methods.score``), or a GAN pair
(G: z -> x, D: x -> (B,)). The parameter counts these builders reach, and where each architecture is
specified, are in ``ebmbench.recipes``. Choose one by name through ``energy_net``, ``eps_net``,
``score_net`` or ``gan_nets``; the methods' ``arch`` parameter carries the name.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ebmbench.nets.gan import spatial_plan
from ebmbench.nets.unet import EpsUNet


def _check_image(shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"{name} needs a square image shape (C, H, W), got {tuple(shape)}")
    return shape  # type: ignore[return-value]


def _sn(module: nn.Module) -> nn.Module:
    """torch's spectral normalization (Miyato et al. 2018) of ``module``'s weight (one power iteration per step)."""
    return spectral_norm(module)


# ---------------------------------------------------------------- IGEBM energy (Du & Mordatch 2019)


class IGEBMBlock(nn.Module):
    """Residual block of the IGEBM energy: conv(x + b1) -> LeakyReLU -> g * conv(h + b2), plus the skip,
    then a 2x2 average pool (when downsampling) and LeakyReLU(0.2).

    As in the reference code's unconditional ResNet32Large: convolutions carry no bias; a learned
    per-channel shift b is added to each conv's input and a learned per-channel gain g scales the second
    conv's output; the skip is the identity or (when widening) a 3x3 conv; every conv is spectrally
    normalized.
    """

    def __init__(self, c_in: int, c_out: int, downsample: bool) -> None:
        super().__init__()
        self.b1 = nn.Parameter(torch.zeros(c_in))
        self.conv1 = _sn(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False))
        self.b2 = nn.Parameter(torch.zeros(c_out))
        self.conv2 = _sn(nn.Conv2d(c_out, c_out, 3, padding=1, bias=False))
        self.g = nn.Parameter(torch.ones(c_out))
        self.skip = _sn(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)) if c_in != c_out else None
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv1(x + self.b1.view(1, -1, 1, 1)), 0.2)
        h = self.conv2(h + self.b2.view(1, -1, 1, 1)) * self.g.view(1, -1, 1, 1)
        h = h + (x if self.skip is None else self.skip(x))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return F.leaky_relu(h, 0.2)


class IGEBMResNet(nn.Module):
    """E(x): 3x3 conv, nine residual blocks (widths w, 2w, 4w; three 2x downsamplings), ReLU, sum pool, linear.

    The unconditional CIFAR-10 model of Du & Mordatch 2019 (reference code ResNet32Large, w = 128).
    """

    def __init__(self, in_channels: int = 3, width: int = 128) -> None:
        super().__init__()
        w = width
        self.stem = _sn(nn.Conv2d(in_channels, w, 3, padding=1, bias=False))
        plan = [(w, w, True), (w, w, False), (w, w, False), (w, 2 * w, True), (2 * w, 2 * w, False),
                (2 * w, 2 * w, False), (2 * w, 4 * w, True), (4 * w, 4 * w, False), (4 * w, 4 * w, False)]
        self.blocks = nn.Sequential(*(IGEBMBlock(c_in, c_out, down) for c_in, c_out, down in plan))
        self.head = nn.Linear(4 * w, 1)  # the reference code leaves the output layer unnormalized

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(F.leaky_relu(self.stem(x), 0.2))
        return self.head(F.relu(h).sum(dim=(2, 3))).squeeze(-1)


def igebm_resnet(shape: tuple[int, ...]) -> IGEBMResNet:
    """IGEBM's CIFAR-10 energy (Du & Mordatch 2019) for images of ``shape``."""
    c, _, _ = _check_image(shape, "igebm_resnet")
    return IGEBMResNet(c, width=128)


# ---------------------------------------------------------------- short-run EBM energy (Nijkamp et al. 2019)


class ShortRunConvNet(nn.Module):
    """E(x): 3x3 conv, three 4x4 stride-2 convs (n_f -> 8 n_f), LeakyReLU(0.2), a final 4x4 conv to a scalar.

    The paper's network is f = -E; the sign is absorbed by the last layer, so this net outputs E itself.
    Needs 32x32 inputs (the last conv reads the whole 4x4 map).
    """

    def __init__(self, in_channels: int = 3, n_f: int = 64) -> None:
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv2d(in_channels, n_f, 3, 1, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(n_f, 2 * n_f, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * n_f, 4 * n_f, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * n_f, 8 * n_f, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(8 * n_f, 1, 4, 1, 0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.f(x).flatten(1).squeeze(-1)


def shortrun_convnet(shape: tuple[int, ...]) -> ShortRunConvNet:
    """The short-run EBM's CIFAR-10 energy (Nijkamp et al. 2019), n_f = 64, for 32x32 images."""
    c, h, _ = _check_image(shape, "shortrun_convnet")
    if h != 32:
        raise ValueError(f"shortrun_convnet is the paper's 32x32 network; got {h}x{h} images")
    return ShortRunConvNet(c, n_f=64)


# ---------------------------------------------------------------- NCSN RefineNet (Song & Ermon 2019)


class NoiseLevels(nn.Module):
    """Maps c_noise = 100 ln sigma to a fractional index u in [0, L-1] of the geometric grid sigma_1 > ... > sigma_L.

    The paper conditions on the integer level i; off the grid we interpolate linearly in u, so the
    network is exactly the paper's at the L trained levels and continuous in between.
    """

    def __init__(self, sigma_max: float, sigma_min: float, n_sigmas: int) -> None:
        super().__init__()
        if n_sigmas < 2 or not sigma_max > sigma_min > 0:
            raise ValueError(f"need n_sigmas >= 2 and sigma_max > sigma_min > 0, got {n_sigmas}, "
                             f"{sigma_max}, {sigma_min}")
        self.n = n_sigmas
        self.log_max = math.log(sigma_max)
        self.step = (math.log(sigma_max) - math.log(sigma_min)) / (n_sigmas - 1)

    def forward(self, c_noise: Tensor) -> Tensor:
        log_sigma = c_noise.float() / 100.0  # inverse of ebmbench.methods.score.noise_label
        return ((self.log_max - log_sigma) / self.step).clamp(0.0, self.n - 1.0)


def interpolate_rows(table: Tensor, u: Tensor) -> Tensor:
    """Rows of ``table`` at fractional indices ``u`` (B,), linear between neighbours."""
    lo = u.floor().long().clamp(max=table.shape[0] - 1)
    hi = (lo + 1).clamp(max=table.shape[0] - 1)
    frac = (u - lo.to(u.dtype)).unsqueeze(1)
    return table[lo] * (1.0 - frac) + table[hi] * frac


class CondInstanceNormPlus(nn.Module):
    """Conditional instance normalization++ (Song & Ermon 2019, Appendix A.1): per noise level gamma, alpha, beta.

    z = gamma * (IN(x) + alpha * (mu - m) / s) + beta, with mu the per-channel means and m, s their
    mean and (unbiased) standard deviation over channels. By hand: torch has no conditional norm.
    """

    def __init__(self, channels: int, n_levels: int) -> None:
        super().__init__()
        self.channels = channels
        table = torch.zeros(n_levels, 3 * channels)
        table[:, : 2 * channels].normal_(1.0, 0.02)  # gamma and alpha start near 1, beta at 0
        self.embed = nn.Parameter(table)

    def forward(self, x: Tensor, u: Tensor) -> Tensor:
        gamma, alpha, beta = interpolate_rows(self.embed, u).chunk(3, dim=1)
        mu = x.mean(dim=(2, 3))
        mu_std = (mu - mu.mean(dim=1, keepdim=True)) / (mu.var(dim=1, keepdim=True) + 1e-5).sqrt()
        h = F.instance_norm(x) + (mu_std * alpha)[..., None, None]
        return gamma[..., None, None] * h + beta[..., None, None]


class ConvMeanPool(nn.Module):
    """A conv followed by a 2x2 mean pool (the downsampling conv of Gulrajani et al. 2017's ResNets)."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(x), 2)


def _conv3(c_in: int, c_out: int, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=bias)


class CondResBlock(nn.Module):
    """Pre-activation residual block with conditional norms and ELU; "down" halves the resolution unless dilated
    (the dilated stages of NCSN keep 16x16 and widen the receptive field instead)."""

    def __init__(self, c_in: int, c_out: int, n_levels: int, down: bool = False, dilation: int = 1) -> None:
        super().__init__()
        mid = c_in if down else c_out
        self.norm1 = CondInstanceNormPlus(c_in, n_levels)
        self.conv1 = _conv3(c_in, mid, dilation)
        self.norm2 = CondInstanceNormPlus(mid, n_levels)
        pooled = down and dilation == 1
        self.conv2 = ConvMeanPool(mid, c_out, 3) if pooled else _conv3(mid, c_out, dilation)
        self.skip: nn.Module | None = None
        if pooled:
            self.skip = ConvMeanPool(c_in, c_out, 1)
        elif down or c_in != c_out:
            self.skip = _conv3(c_in, c_out, dilation)

    def forward(self, x: Tensor, u: Tensor) -> Tensor:
        h = self.conv1(F.elu(self.norm1(x, u)))
        h = self.conv2(F.elu(self.norm2(h, u)))
        return h + (x if self.skip is None else self.skip(x))


class CondRCU(nn.Module):
    """Residual conv units of RefineNet (Lin et al. 2017): n_blocks x (n_stages x [norm, ELU, 3x3 conv]) + skip."""

    def __init__(self, channels: int, n_blocks: int, n_levels: int, n_stages: int = 2) -> None:
        super().__init__()
        self.n_stages = n_stages
        self.norms = nn.ModuleList(CondInstanceNormPlus(channels, n_levels) for _ in range(n_blocks * n_stages))
        self.convs = nn.ModuleList(_conv3(channels, channels, bias=False) for _ in range(n_blocks * n_stages))

    def forward(self, x: Tensor, u: Tensor) -> Tensor:
        h = x
        for k, (norm, conv) in enumerate(zip(self.norms, self.convs, strict=True)):
            h = conv(F.elu(norm(h, u)))
            if (k + 1) % self.n_stages == 0:  # end of a unit: add its input
                x = h = x + h
        return x


class CondCRP(nn.Module):
    """Chained residual pooling (Lin et al. 2017) with conditional norms and 5x5 average pooling."""

    def __init__(self, channels: int, n_levels: int, n_stages: int = 2) -> None:
        super().__init__()
        self.norms = nn.ModuleList(CondInstanceNormPlus(channels, n_levels) for _ in range(n_stages))
        self.convs = nn.ModuleList(_conv3(channels, channels, bias=False) for _ in range(n_stages))

    def forward(self, x: Tensor, u: Tensor) -> Tensor:
        x = F.elu(x)
        path = x
        for norm, conv in zip(self.norms, self.convs, strict=True):
            path = conv(F.avg_pool2d(norm(path, u), 5, stride=1, padding=2))
            x = x + path
        return x


class CondRefineBlock(nn.Module):
    """RefineNet block: RCUs per input, multi-resolution fusion (norm, conv, bilinear upsampling, sum), CRP, RCUs."""

    def __init__(self, in_channels: list[int], features: int, n_levels: int, end: bool = False) -> None:
        super().__init__()
        self.adapt = nn.ModuleList(CondRCU(c, 2, n_levels) for c in in_channels)
        self.fuse_norms = nn.ModuleList(CondInstanceNormPlus(c, n_levels) for c in in_channels)
        self.fuse_convs = nn.ModuleList(_conv3(c, features) for c in in_channels)
        if len(in_channels) == 1:  # a single input is not fused (and must already have `features` channels)
            self.fuse_norms, self.fuse_convs = nn.ModuleList(), nn.ModuleList()
        self.crp = CondCRP(features, n_levels)
        self.out = CondRCU(features, 3 if end else 1, n_levels)

    def forward(self, xs: list[Tensor], u: Tensor) -> Tensor:
        hs = [rcu(x, u) for rcu, x in zip(self.adapt, xs, strict=True)]
        if self.fuse_convs:
            size = hs[0].shape[2:]
            h = sum(F.interpolate(conv(norm(x, u)), size=size, mode="bilinear", align_corners=True)
                    for norm, conv, x in zip(self.fuse_norms, self.fuse_convs, hs, strict=True))
        else:
            h = hs[0]
        return self.out(self.crp(h, u), u)


class NCSNRefineNet(nn.Module):
    """f(x, c_noise): the 4-cascaded dilated RefineNet of NCSN (Song & Ermon 2019, Appendix B.1) with ngf filters.

    Input x in the data's own coordinates (the paper's 2x - 1 input map is the identity for data on [-1, 1]);
    conditioning on the noise level through CondInstanceNorm++ embeddings (see ``NoiseLevels``).
    """

    def __init__(self, in_channels: int, ngf: int, levels: NoiseLevels) -> None:
        super().__init__()
        L = levels.n  # noqa: N806 (the paper's L)
        self.levels = levels
        self.begin = nn.Conv2d(in_channels, ngf, 3, padding=1)
        self.stage1 = nn.ModuleList([CondResBlock(ngf, ngf, L), CondResBlock(ngf, ngf, L)])
        self.stage2 = nn.ModuleList([CondResBlock(ngf, 2 * ngf, L, down=True), CondResBlock(2 * ngf, 2 * ngf, L)])
        self.stage3 = nn.ModuleList([CondResBlock(2 * ngf, 2 * ngf, L, down=True, dilation=2),
                                     CondResBlock(2 * ngf, 2 * ngf, L, dilation=2)])
        self.stage4 = nn.ModuleList([CondResBlock(2 * ngf, 2 * ngf, L, down=True, dilation=4),
                                     CondResBlock(2 * ngf, 2 * ngf, L, dilation=4)])
        self.refine1 = CondRefineBlock([2 * ngf], 2 * ngf, L)
        self.refine2 = CondRefineBlock([2 * ngf, 2 * ngf], 2 * ngf, L)
        self.refine3 = CondRefineBlock([2 * ngf, 2 * ngf], ngf, L)
        self.refine4 = CondRefineBlock([ngf, ngf], ngf, L, end=True)
        self.end_norm = CondInstanceNormPlus(ngf, L)
        self.end = nn.Conv2d(ngf, in_channels, 3, padding=1)

    @staticmethod
    def _stage(blocks: nn.ModuleList, h: Tensor, u: Tensor) -> Tensor:
        for block in blocks:
            h = block(h, u)
        return h

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        u = self.levels(c_noise.expand(x.shape[0]) if c_noise.dim() == 0 else c_noise)
        h1 = self._stage(self.stage1, self.begin(x), u)
        h2 = self._stage(self.stage2, h1, u)
        h3 = self._stage(self.stage3, h2, u)
        h4 = self._stage(self.stage4, h3, u)
        r = self.refine1([h4], u)
        r = self.refine2([h3, r], u)
        r = self.refine3([h2, r], u)
        r = self.refine4([h1, r], u)
        return self.end(F.elu(self.end_norm(r, u)))


def ncsn_refinenet(shape: tuple[int, ...], *, sigma_max: float, sigma_min: float, n_sigmas: int,
                   ngf: int = 128) -> NCSNRefineNet:
    """NCSN's RefineNet (Song & Ermon 2019): ngf = 128 for CIFAR-10 and CelebA, 64 for MNIST."""
    c, h, _ = _check_image(shape, "ncsn_refinenet")
    if h % 2:
        raise ValueError(f"ncsn_refinenet halves the resolution once; image size {h} must be even")
    return NCSNRefineNet(c, ngf, NoiseLevels(sigma_max, sigma_min, n_sigmas))


# ---------------------------------------------------------------- DDPM U-Net (Ho et al. 2020)


def ddpm_unet(shape: tuple[int, ...], dropout: float = 0.1) -> EpsUNet:
    """Ho et al.'s CIFAR-10 U-Net as a diffusers UNet2DModel: ch 128, ch_mult (1, 2, 2, 2), two res blocks per
    resolution, self-attention at 16x16 and in the middle, GroupNorm(32), dropout 0.1, sinusoidal t embedding."""
    c, h, _ = _check_image(shape, "ddpm_unet")
    if h % 8:
        raise ValueError(f"ddpm_unet halves the resolution three times; image size {h} must be divisible by 8")
    from diffusers import UNet2DModel  # lazy: seconds of import for notebooks without a U-Net

    unet = UNet2DModel(
        sample_size=h, in_channels=c, out_channels=c,
        block_out_channels=(128, 256, 256, 256), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=None,  # one head over all channels, as in Ho et al.
        norm_num_groups=32, dropout=dropout,
        flip_sin_to_cos=False, freq_shift=1,  # the sinusoidal embedding of Ho et al.'s code (diffusers' conversion)
        downsample_padding=0,
    )
    return EpsUNet(unet)


# ------------------------------------------------ ResNet GANs (Gulrajani et al. 2017, Miyato et al. 2018)


class GenBlock(nn.Module):
    """BN, ReLU, nearest 2x upsampling, 3x3 conv, BN, ReLU, 3x3 conv; skip: upsampling and a 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)
        self.conv1, self.conv2 = _conv3(channels, channels), _conv3(channels, channels)
        self.skip = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest"))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResNetGenerator(nn.Module):
    """G(z): linear to s0 x s0 x ch, n up-blocks, BN, ReLU, 3x3 conv, tanh mapped to [low, high]."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], ch: int, low: float, high: float) -> None:
        super().__init__()
        c, h, _ = shape
        self.s0, n = spatial_plan(h)
        self.ch = ch
        self.linear = nn.Linear(latent_dim, self.s0 * self.s0 * ch)
        self.blocks = nn.Sequential(*(GenBlock(ch) for _ in range(n)))
        self.bn = nn.BatchNorm2d(ch)
        self.out = _conv3(ch, c)
        self.low, self.high = low, high

    def forward(self, z: Tensor) -> Tensor:
        h = self.linear(z.flatten(1)).view(z.shape[0], self.ch, self.s0, self.s0)
        y = torch.tanh(self.out(F.relu(self.bn(self.blocks(h)))))
        return self.low + (self.high - self.low) * (y + 1.0) / 2.0


class DiscBlock(nn.Module):
    """Pre-activation block: ReLU, 3x3 conv, ReLU, 3x3 conv (+ 2x2 mean pool); skip: identity or 1x1 conv (+ pool).

    ``first`` is the "optimized" input block: no leading ReLU, and the skip pools before its conv.
    """

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool = False) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv3(c_in, c_out), _conv3(c_out, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if (down or c_in != c_out) else None
        self.down, self.first = down, first

    def _pool(self, h: Tensor) -> Tensor:
        return F.avg_pool2d(h, 2) if self.down else h

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        h = self._pool(h)
        if self.skip is None:
            return h + x
        skip = self.skip(self._pool(x)) if self.first else self._pool(self.skip(x))
        return h + skip


class ResNetDiscriminator(nn.Module):
    """D(x): optimized down-block, down-block, two blocks (ch filters), ReLU, global pooling, linear to one value."""

    def __init__(self, in_channels: int, ch: int, pool: str, head_bias: bool) -> None:
        super().__init__()
        self.blocks = nn.Sequential(DiscBlock(in_channels, ch, True, first=True), DiscBlock(ch, ch, True),
                                    DiscBlock(ch, ch, False), DiscBlock(ch, ch, False))
        self.head = nn.Linear(ch, 1, bias=head_bias)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.blocks(x))
        h = h.sum(dim=(2, 3)) if self.pool == "sum" else h.mean(dim=(2, 3))
        return self.head(h).squeeze(-1)


def _glorot(module: nn.Module) -> None:
    """Glorot-uniform weights (gain sqrt 2 in residual 3x3 convs, 1 elsewhere) and zero biases, as in
    Miyato et al.'s reference code."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            gain = math.sqrt(2.0) if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) else 1.0
            nn.init.xavier_uniform_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def wgan_gp_resnet(shape: tuple[int, ...], latent_dim: int = 128, low: float = -1.0, high: float = 1.0
                   ) -> tuple[ResNetGenerator, ResNetDiscriminator]:
    """Gulrajani et al. 2017's CIFAR-10 ResNet: G with 128 filters and batch norm; critic with 128 filters,
    no normalization (the gradient penalty is per sample), mean pooling, biased linear output."""
    c, _, _ = _check_image(shape, "wgan_gp_resnet")
    return (ResNetGenerator(latent_dim, shape, 128, low, high),  # type: ignore[arg-type]
            ResNetDiscriminator(c, 128, pool="mean", head_bias=True))


def sngan_resnet(shape: tuple[int, ...], latent_dim: int = 128, low: float = -1.0, high: float = 1.0
                 ) -> tuple[ResNetGenerator, ResNetDiscriminator]:
    """Miyato et al. 2018's CIFAR-10 ResNet: G with 256 filters and batch norm; D with 128 filters, spectral
    norm on every layer, sum pooling, unbiased linear output; Glorot-uniform init."""
    c, _, _ = _check_image(shape, "sngan_resnet")
    g = ResNetGenerator(latent_dim, shape, 256, low, high)  # type: ignore[arg-type]
    d = ResNetDiscriminator(c, 128, pool="sum", head_bias=False)
    _glorot(g)
    _glorot(d)  # initialize the raw weights first: spectral norm wraps what is there
    for m in list(d.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            _sn(m)
    return g, d


# ---------------------------------------------------------------- choose by name

ENERGY_ARCHS: dict[str, Callable[[tuple[int, ...]], nn.Module]] = {
    "igebm_resnet": igebm_resnet,
    "shortrun_convnet": shortrun_convnet,
}
EPS_ARCHS: dict[str, Callable[[tuple[int, ...]], nn.Module]] = {"ddpm_unet": ddpm_unet}
SCORE_NGF = {"ncsn_refinenet": 128, "ncsn_refinenet_small": 64}  # CIFAR-10 / CelebA, and MNIST (NCSN's configs)
GAN_ARCHS: dict[str, Callable[..., tuple[nn.Module, nn.Module]]] = {
    "wgan_gp_resnet": wgan_gp_resnet,
    "sngan_resnet": sngan_resnet,
}


def _unknown(kind: str, arch: str, known: dict) -> ValueError:
    return ValueError(f"unknown {kind} arch {arch!r}; choose 'default' or one of {sorted(known)}")


def energy_net(arch: str, shape: tuple[int, ...]) -> nn.Module:
    """The named paper energy E(x) for images of ``shape``."""
    if arch not in ENERGY_ARCHS:
        raise _unknown("energy", arch, ENERGY_ARCHS)
    return ENERGY_ARCHS[arch](shape)


def eps_net(arch: str, shape: tuple[int, ...]) -> nn.Module:
    """The named paper noise predictor eps(x_t, t) for images of ``shape``."""
    if arch not in EPS_ARCHS:
        raise _unknown("eps", arch, EPS_ARCHS)
    return EPS_ARCHS[arch](shape)


def score_net(arch: str, shape: tuple[int, ...], *, sigma_max: float, sigma_min: float, n_sigmas: int
              ) -> nn.Module:
    """The named paper score network f(x, c_noise), conditioned on the model's L geometric noise levels."""
    if arch not in SCORE_NGF:
        raise _unknown("score", arch, SCORE_NGF)
    return ncsn_refinenet(shape, sigma_max=sigma_max, sigma_min=sigma_min, n_sigmas=n_sigmas, ngf=SCORE_NGF[arch])


def gan_nets(arch: str, shape: tuple[int, ...], latent_dim: int, low: float = -1.0, high: float = 1.0
             ) -> tuple[nn.Module, nn.Module]:
    """The named paper (G, D) pair; G's tanh output is mapped to the support [low, high]."""
    if arch not in GAN_ARCHS:
        raise _unknown("GAN", arch, GAN_ARCHS)
    return GAN_ARCHS[arch](shape, latent_dim, low, high)


ALL_ARCHS = {**{k: "energy" for k in ENERGY_ARCHS}, **{k: "eps" for k in EPS_ARCHS},
             **{k: "score" for k in SCORE_NGF}, **{k: "gan" for k in GAN_ARCHS}}
