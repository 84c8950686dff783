"""Tiny random stand-ins for the parts of an SD-style pipeline that a random-weights UNet study does not measure
(``sd15`` and ``sd15-reduced`` at ``weights=random``): a four-level, 16-channel VAE and a one-layer CLIP text encoder
over the byte-level tokenizer's 514 ids (:func:`.text.byte_level_clip_tokenizer`). Built from the caller's RNG
state, in the caller's device context."""
from __future__ import annotations

from torch import nn


def tiny_vae(resolution: int) -> nn.Module:
    """An ``AutoencoderKL`` with SD's 4 latent channels and 8× downsampling, 16 channels wide."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16, 16, 16),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=8, sample_size=resolution)


def tiny_text_encoder(hidden_size: int, max_length: int) -> nn.Module:
    """A one-layer ``CLIPTextModel`` of width ``hidden_size`` (the UNet's cross-attention width)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=514, hidden_size=hidden_size, intermediate_size=256, num_hidden_layers=1, num_attention_heads=12,
        max_position_embeddings=max_length, bos_token_id=512, eos_token_id=513, pad_token_id=513))
