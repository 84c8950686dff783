"""``sd15``: Stable Diffusion 1.5 from a local diffusers folder (or the Hugging Face cache), never downloaded.

``weights=pretrained`` finds the folder with :func:`mubench.assets.require` (``model.path``, then
``$MUBENCH_HOME/assets/models/stable-diffusion-v1-5``, then the HF cache with ``local_files_only``) and loads the UNet,
VAE, CLIP text encoder, tokenizer and scheduler config from it; anything missing raises AssetError naming it.
``weights=random`` builds the SD 1.5 UNet from its known config (859.5M parameters; on the ``meta`` device it costs
nothing, which is how ``mubench inspect`` looks at the architecture) with a tiny random text encoder (768-wide, so
cross-attention shapes are SD 1.5's) and a tiny 8× VAE: the denoiser is exact, the rest only has the right shapes.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import stable_hash
from ..errors import AssetError
from .base import LoadContext, Model, ModelBundle
from .codecs import VaeCodec
from .text import TextEncoderConditioner, byte_level_clip_tokenizer
from .params import SD15Params

SD15_UNET_CONFIG = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8,
)

# SD 1.5's scheduler_config.json (PNDM in the release; the sampler builds DDIM / DPM-Solver++ / DDPM from it)
SD15_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
    "skip_prk_steps": True, "trained_betas": None,
}

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "diffusion_pytorch_model.bin", "model.safetensors", "model.fp16.safetensors", "pytorch_model.bin")
MAX_LENGTH = 77


def _weights_file(folder: Path, part: str) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / part / name).is_file():
            return folder / part / name
    raise AssetError(f"SD 1.5 folder {folder} has no weights for {part}/ (looked for {', '.join(WEIGHT_NAMES)}); "
                     "nothing is downloaded")


class SD15(Model):
    Params = SD15Params

    @classmethod
    def load(cls, params: SD15Params, ctx: LoadContext) -> ModelBundle:
        if ctx.weights == "random":
            return cls._random(params, ctx)
        return cls._pretrained(params, ctx)

    @classmethod
    def _pretrained(cls, params: SD15Params, ctx: LoadContext) -> ModelBundle:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        from ..assets import file_sha256, require

        folder = require("sd15", params.path)
        files = {part: _weights_file(folder, part) for part in ("unet", "vae", "text_encoder")}
        kw = dict(local_files_only=True, torch_dtype=ctx.dtype)
        try:
            unet, unet_info = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", output_loading_info=True,
                                                                   **kw)
            vae, vae_info = AutoencoderKL.from_pretrained(folder, subfolder="vae", output_loading_info=True, **kw)
            text, text_info = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder",
                                                            output_loading_info=True, **kw)
            tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
        except (OSError, ValueError) as err:
            raise AssetError(f"cannot load SD 1.5 from {folder}: {err}") from None
        for part, info in (("unet", unet_info), ("vae", vae_info), ("text_encoder", text_info)):
            _refuse_missing_weights(folder, part, files[part], info)
        scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        for m in (unet, vae, text):
            m.eval().requires_grad_(False).to(ctx.device)
        digests = {part: file_sha256(path) for part, path in files.items()}
        # what decides pixels besides the weights: the scheduler's and each part's config
        configs = {"scheduler": scheduler, **{part: json.loads((folder / part / "config.json").read_text())
                                              for part in ("unet", "vae", "text_encoder")}}
        return ModelBundle(
            name="sd15", denoiser=unet, conditioner=TextEncoderConditioner(tokenizer, text, MAX_LENGTH),
            codec=VaeCodec(vae), scheduler_config=scheduler, resolution=params.resolution,
            fingerprint="sd15:" + stable_hash({**digests, "configs": configs}),
            default_sampler={"scheduler": "ddim", "steps": 50, "guidance": 7.5},
            extras={"path": str(folder), "weights_sha256": digests},
        )

    @classmethod
    def _random(cls, params: SD15Params, ctx: LoadContext) -> ModelBundle:
        from diffusers import UNet2DConditionModel

        from .standins import tiny_text_encoder, tiny_vae

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed)
            with torch.device(ctx.device):
                unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
                vae = tiny_vae(params.resolution)
                text = tiny_text_encoder(768, MAX_LENGTH)
        for m in (unet, vae, text):
            m.eval().requires_grad_(False).to(dtype=ctx.dtype)
        return ModelBundle(
            name="sd15", denoiser=unet,
            conditioner=TextEncoderConditioner(byte_level_clip_tokenizer(MAX_LENGTH), text, MAX_LENGTH),
            codec=VaeCodec(vae, scaling_factor=0.18215), scheduler_config=dict(SD15_SCHEDULER_CONFIG),
            resolution=params.resolution,
            fingerprint="sd15-random:" + stable_hash({"seed": params.seed, "unet": SD15_UNET_CONFIG}),
            default_sampler={"scheduler": "ddim", "steps": 50, "guidance": 7.5},
            extras={"weights": "random (UNet: SD 1.5 config; text encoder and VAE: tiny stand-ins)"},
        )


def _refuse_missing_weights(folder: Path, part: str, path: Path, info: dict) -> None:
    """transformers and diffusers fill weights missing from a checkpoint with fresh random values and only log it;
    a benchmark must not score a half-random model, so any missing tensor is an AssetError naming them."""
    missing = [k for k in info.get("missing_keys") or [] if not k.endswith("position_ids")]  # a buffer, not a weight
    if missing:
        shown = ", ".join(sorted(missing)[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise AssetError(f"SD 1.5 at {folder}: {path} lacks {len(missing)} tensor(s) of the {part} ({shown}); "
                         "loading it would fill them with random values")
