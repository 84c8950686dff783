"""``sd15-reduced``: SD 1.5's UNet layout at reduced width, random weights: the measuring model of the efficiency suite.

The UNet is SD 1.5's config (block types, 2 layers per block, 8-wide attention heads, cross-attention to 77 × 768 text
states, so the decoder attention q/k/v/o linears MaskUNet masks are where they are in SD 1.5, cross-attention k/v
included) with block widths 64/128/256/256 (35-37M parameters instead of 860M; ../shared/deps.md §5), run at 256 px
(32 × 32 latents). The text encoder (one 768-wide CLIP layer over a byte-level tokenizer) and the 8× VAE are tiny
stand-ins with SD 1.5's interface shapes. All weights are random and seeded: numbers made with it are costs, never
quality. ``weights=pretrained`` and ``weights=random`` build the same thing (there are no trained weights).
"""
from __future__ import annotations

from typing import Any

import torch

from ..config import stable_hash
from .base import LoadContext, Model, ModelBundle
from .codecs import VaeCodec
from .sd15 import MAX_LENGTH, SD15_SCHEDULER_CONFIG, SD15_UNET_CONFIG
from .standins import tiny_text_encoder, tiny_vae
from .text import TextEncoderConditioner, byte_level_clip_tokenizer
from .params import REDUCED_BLOCK_WIDTHS, SD15ReducedParams

BLOCK_WIDTHS = REDUCED_BLOCK_WIDTHS


def reduced_unet_config(block_out_channels: tuple[int, ...] = BLOCK_WIDTHS, cross_attention_dim: int = 768,
                        sample_size: int = 32) -> dict[str, Any]:
    """SD 1.5's UNet config with other block widths (and optionally another text width / latent size)."""
    return dict(SD15_UNET_CONFIG, block_out_channels=tuple(block_out_channels),
                cross_attention_dim=cross_attention_dim, sample_size=sample_size)


class SD15Reduced(Model):
    Params = SD15ReducedParams

    @classmethod
    def load(cls, params: SD15ReducedParams, ctx: LoadContext) -> ModelBundle:
        from diffusers import UNet2DConditionModel

        unet_config = reduced_unet_config(params.block_out_channels, params.cross_attention_dim,
                                          params.resolution // 8)
        meta = ctx.device.type == "meta"
        with torch.random.fork_rng(devices=[]), torch.device("meta" if meta else "cpu"):
            torch.manual_seed(params.seed)
            unet = UNet2DConditionModel(**unet_config)
            vae = tiny_vae(params.resolution)
            text = tiny_text_encoder(params.cross_attention_dim, MAX_LENGTH)
        for m in (unet, vae, text):
            m.eval().requires_grad_(False)
            if not meta:
                m.to(ctx.device, ctx.dtype)
        return ModelBundle(
            name="sd15-reduced", denoiser=unet,
            conditioner=TextEncoderConditioner(byte_level_clip_tokenizer(MAX_LENGTH), text, MAX_LENGTH),
            codec=VaeCodec(vae, scaling_factor=0.18215), scheduler_config=dict(SD15_SCHEDULER_CONFIG),
            resolution=params.resolution,
            fingerprint="sd15-reduced:" + stable_hash({"seed": params.seed, "unet": unet_config}),
            default_sampler={"scheduler": "ddim", "steps": 50, "guidance": 7.5},
            extras={"weights": "random (SD 1.5 UNet layout at widths "
                               f"{'/'.join(map(str, params.block_out_channels))}; tiny text encoder and VAE)"},
        )
