"""The built-in models' parameters (``model.KEY=VALUE``): plain dataclasses and the names their options take.

They live apart from the models, which import torch and diffusers, so that a configuration is resolved and checked
before those are imported. Each model class points at its dataclass (``Params``) and the registry entry names it
too (:meth:`mubench.registry.Registry.params`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

REDUCED_BLOCK_WIDTHS = (64, 128, 256, 256)  # sd15-reduced: SD 1.5's UNet layout at these widths
DIT_ARCHS = ("xl", "tiny")  # the keys of mubench.models.dit.ARCHS
PIXART_ARCHS = ("alpha-512", "tiny")  # the keys of mubench.models.pixart.ARCHS
PIXART_MAX_LENGTH = 120  # T5 tokens of PixArt-alpha's pipeline
VAE_CHOICES = ("ema", "bundled")  # dit: the VAE the latents are decoded with


@dataclass
class TinySDParams:
    seed: int = 0  # seed of the random weights
    resolution: int = 32  # image side in pixels (latents are resolution / 2)
    cross_attention_dim: int = 32
    max_length: int = 16

@dataclass
class SD15Params:
    path: Optional[str] = None  # diffusers folder of SD 1.5 (default: $MUBENCH_HOME assets, then the HF cache)
    seed: int = 0  # weights=random only: seed of the random weights
    resolution: int = 512

@dataclass
class SD15ReducedParams:
    seed: int = 0  # seed of the random weights
    resolution: int = 256  # image side in pixels (latents are resolution / 8)
    # SD 1.5: 320/640/1280/1280
    block_out_channels: list[int] = field(default_factory=lambda: list(REDUCED_BLOCK_WIDTHS))
    cross_attention_dim: int = 768  # SD 1.5's text width

@dataclass
class DiTParams:
    path: Optional[str] = None  # diffusers folder of DiT-XL/2 256 (default: $MUBENCH_HOME assets, then the HF cache)
    vae: str = "ema"  # ema: sd-vae-ft-ema (DiT's FID protocol) | bundled: the folder's own vae/
    vae_path: Optional[str] = None  # folder of sd-vae-ft-ema (vae=ema)
    cfg_channels: int = 3  # latent channels classifier-free guidance applies to (3 official, 4 diffusers)
    seed: int = 0  # weights=random only: seed of the random weights
    arch: str = "xl"  # weights=random only: xl (DiT-XL/2 256) | tiny (tests)
    resolution: int = 256

    def validate(self) -> None:
        if self.vae not in VAE_CHOICES:
            raise ValueError(f"vae must be one of {', '.join(VAE_CHOICES)}, got {self.vae!r}")
        if self.arch not in DIT_ARCHS:
            raise ValueError(f"arch must be one of {', '.join(DIT_ARCHS)}, got {self.arch!r}")
        if not 1 <= self.cfg_channels <= 4:
            raise ValueError(f"cfg_channels must be in 1..4, got {self.cfg_channels}")

@dataclass
class PixArtParams:
    path: Optional[str] = None  # diffusers folder of PixArt-XL-2-512x512 (default: $MUBENCH_HOME assets, HF cache)
    max_length: int = PIXART_MAX_LENGTH  # T5 tokens (the pipeline's max_sequence_length)
    seed: int = 0  # weights=random only: seed of the random weights
    arch: str = "alpha-512"  # weights=random only: alpha-512 | tiny (tests)
    resolution: int = 512

    def validate(self) -> None:
        if self.arch not in PIXART_ARCHS:
            raise ValueError(f"arch must be one of {', '.join(PIXART_ARCHS)}, got {self.arch!r}")
        if self.max_length < 1:
            raise ValueError("max_length must be >= 1")

@dataclass
class MicroParams:
    path: Optional[str] = None  # zoo folder holding manifest.json + safetensors (default: the shipped zoo/micro)
    seed: int = 0  # seed of the random weights when weights=random

@dataclass
class MicroDiTParams:
    path: Optional[str] = None  # zoo folder with manifest.json + dit.safetensors (default: the shipped zoo/micro-dit)
    seed: int = 0  # seed of the random weights when weights=random
