"""Pixel ↔ latent codecs: a diffusers VAE (SD style) or plain pixels."""
from __future__ import annotations

import torch

from .base import LatentCodec


class VaeCodec(LatentCodec):
    """``AutoencoderKL`` with its latent scaling factor; images in [0,1] ↔ scaled latents."""

    def __init__(self, vae, scaling_factor: float | None = None) -> None:
        self.vae = vae
        self.scaling_factor = float(scaling_factor if scaling_factor is not None
                                    else getattr(vae.config, "scaling_factor", 0.18215))
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        self.channels = int(vae.config.latent_channels)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return (self.channels, height // self.downsample, width // self.downsample)

    stochastic = True

    def _posterior(self, images: torch.Tensor):
        return self.vae.encode(images.to(self.vae.dtype) * 2 - 1).latent_dist

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The posterior mean (scaled)."""
        return self._posterior(images).mean * self.scaling_factor

    @torch.no_grad()
    def encode_sample(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A draw from the posterior, ``mean + std · ε`` (scaled), as the released training scripts encode
        (``latent_dist.sample()``); ε from ``generator`` on the CPU, so it does not depend on the device."""
        dist = self._posterior(images)
        eps = torch.randn(dist.mean.shape, generator=generator, dtype=torch.float32).to(dist.mean.device)
        return (dist.mean.float() + dist.std.float() * eps).to(dist.mean.dtype) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode_differentiable(latents)

    def decode_differentiable(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode(latents.to(self.vae.dtype) / self.scaling_factor).sample
        return ((x.float() + 1) / 2).clamp(0, 1)


class PixelCodec(LatentCodec):
    """The denoiser works on pixels scaled to [-1, 1]."""

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return (3, height, width)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2 - 1

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents + 1) / 2).clamp(0, 1)
