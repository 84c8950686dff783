"""``tiny-sd``: an SD-1.5-shaped pipeline with tiny random weights, built from configs (tests, demos).

Same parts as SD 1.5 — CLIP text encoder, UNet2DConditionModel with cross-attention down/up blocks (so the decoder
attention q/k/v/o linears exist where MaskUNet expects them), AutoencoderKL — at a size that runs in milliseconds.
The weights are random but seeded, so the model's fingerprint and its images are reproducible.
"""
from __future__ import annotations


import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from ..config import stable_hash
from .base import LoadContext, Model, ModelBundle
from .codecs import VaeCodec
from .text import TextEncoderConditioner, byte_level_clip_tokenizer
from .params import TinySDParams

SD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
}


def tiny_unet_config(cross_attention_dim: int = 32, sample_size: int = 16) -> dict:
    return dict(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_attention_dim,
        attention_head_dim=8, norm_num_groups=8,
    )


class TinySD(Model):
    Params = TinySDParams

    @classmethod
    def load(cls, params: TinySDParams, ctx: LoadContext) -> ModelBundle:
        with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's RNG state is left as it was
            torch.manual_seed(params.seed)
            unet = UNet2DConditionModel(**tiny_unet_config(params.cross_attention_dim, params.resolution // 2))
            vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                                down_block_types=("DownEncoderBlock2D",) * 2,
                                up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=8,
                                sample_size=params.resolution)
            text = CLIPTextModel(CLIPTextConfig(vocab_size=514, hidden_size=params.cross_attention_dim,
                                                intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                max_position_embeddings=params.max_length, bos_token_id=512,
                                                eos_token_id=513, pad_token_id=513))
        for m in (unet, vae, text):
            m.eval().requires_grad_(False).to(ctx.device, ctx.dtype)
        tokenizer = byte_level_clip_tokenizer(params.max_length)
        return ModelBundle(
            name="tiny-sd", denoiser=unet,
            conditioner=TextEncoderConditioner(tokenizer, text, params.max_length),
            codec=VaeCodec(vae), scheduler_config=dict(SD_SCHEDULER_CONFIG), resolution=params.resolution,
            fingerprint="tiny-sd:" + stable_hash({"seed": params.seed, "cfg": tiny_unet_config(
                params.cross_attention_dim), "xattn": params.cross_attention_dim, "len": params.max_length}),
            default_sampler={"scheduler": "ddim", "steps": 4, "guidance": 3.0},
        )
