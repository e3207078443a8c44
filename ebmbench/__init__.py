"""ebmbench: one benchmark for EBMs, score, diffusion, GAN and flow models."""

__version__ = "0.1.0"
