"""The micro diffusion model: a tiny SD-1.5-shaped text-to-image model for 32×32 images.

Parts (each built from a plain config dict, stored in the zoo manifest):

- **text encoder**: a transformers ``CLIPTextModel`` (hidden 64, 2 layers) over the micro
  word-level tokenizer (:mod:`mubench.micro.text`). It is trained jointly with the UNet from scratch
  during ``zoo build`` and frozen afterwards: the shipped model, like SD 1.5, conditions a UNet on a
  frozen text encoder's last hidden states (with the padding mask passed to cross-attention).
- **codec**: space-to-depth. ``pixel_unshuffle(2)`` turns a 32×32×3 image into a 12×16×16
  "latent", so the UNet's attention runs at 16×16 and 8×8 as SD's does on 64×64 latents. Pixels are
  mapped to ``2·x − 1 − shift`` with ``shift`` = 0.85 so the light background sits near 0 (a measured
  need: with the background at +0.7 the model learned nothing; ../shared/micro-feasibility.md).
- **UNet**: diffusers ``UNet2DConditionModel`` with SD 1.5's block types (down: CrossAttnDown,
  CrossAttnDown, Down; up: Up, CrossAttnUp, CrossAttnUp; cross-attention mid block), so the decoder
  attention q/k/v/o linears sit where MaskUNet expects them.
- **schedule**: 1000-step cosine (``squaredcos_cap_v2``) DDPM, v-prediction.

The registered model ``micro`` loads ``zoo/micro/*.safetensors`` after checking their sha256
against ``zoo/micro/manifest.json``, or with ``weights=random`` builds the same architecture with
seeded random weights.
"""
from __future__ import annotations

import hashlib
from typing import Any, Optional

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from ..config import stable_hash
from ..errors import AssetError
from ..models.base import Conditioning, LatentCodec, LoadContext, Model, ModelBundle
from ..models.params import MicroParams
from ..models.text import TextEncoderConditioner
from . import text as micro_text
from .assets import load_manifest, verified_path, zoo_dir

UNET_FILE = "unet.safetensors"
TEXT_ENCODER_FILE = "text_encoder.safetensors"
IMAGE_SIZE = 32

SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction",
    "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0, "timestep_spacing": "leading",
}
DEFAULT_SAMPLER: dict[str, Any] = {"scheduler": "ddim", "steps": 20, "guidance": 4.0}
CODEC_CONFIG: dict[str, Any] = {"kind": "space-to-depth", "factor": 2, "shift": 0.85}


def text_encoder_config(hidden_size: int = 64, num_hidden_layers: int = 2, num_attention_heads: int = 2,
                        intermediate_size: int = 128) -> dict[str, Any]:
    """``CLIPTextConfig`` kwargs of the micro text encoder (vocabulary from the micro tokenizer)."""
    return {
        "vocab_size": len(micro_text.vocabulary()), "hidden_size": hidden_size,
        "intermediate_size": intermediate_size, "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads, "max_position_embeddings": micro_text.MAX_LENGTH,
        "pad_token_id": micro_text.PAD_ID, "bos_token_id": micro_text.BOS_ID, "eos_token_id": micro_text.EOS_ID,
        "projection_dim": hidden_size,
    }


def unet_config(block_out_channels: tuple[int, ...] = (32, 64, 64), layers_per_block: int = 1,
                cross_attention_dim: int = 64, attention_head_dim: int = 8, norm_num_groups: int = 8,
                channels: int = 12, sample_size: int = 16) -> dict[str, Any]:
    """``UNet2DConditionModel`` kwargs: SD 1.5's block order at micro size."""
    return {
        "sample_size": sample_size, "in_channels": channels, "out_channels": channels,
        "block_out_channels": list(block_out_channels), "layers_per_block": layers_per_block,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": cross_attention_dim, "attention_head_dim": attention_head_dim,
        "norm_num_groups": norm_num_groups,
    }


def default_configs() -> dict[str, Any]:
    """The shipped architecture: what ``weights=random`` builds and what ``zoo build`` trains."""
    return {"unet": unet_config(), "text_encoder": text_encoder_config(), "codec": dict(CODEC_CONFIG),
            "scheduler": dict(SCHEDULER_CONFIG)}


def build_unet(config: dict[str, Any]) -> UNet2DConditionModel:
    return UNet2DConditionModel(**config)


def build_text_encoder(config: dict[str, Any]) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(**config))


class SpaceToDepthCodec(LatentCodec):
    """Images [B,3,H,W] in [0,1] ↔ ``pixel_unshuffle(2x − 1 − shift, factor)`` [B, 3·f², H/f, W/f]."""

    def __init__(self, factor: int = 2, shift: float = 0.85) -> None:
        self.factor = int(factor)
        self.shift = float(shift)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        f = self.factor
        if height % f or width % f:
            raise ValueError(f"image size {height}x{width} is not divisible by the codec factor {f}")
        return (3 * f * f, height // f, width // f)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(images.float() * 2 - 1 - self.shift, self.factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(latents.float(), self.factor)
        return ((x + 1 + self.shift) / 2).clamp(0, 1)

    def encode_uint8(self, images: Any) -> torch.Tensor:
        """uint8 [N,H,W,3] (numpy or torch) → latents."""
        t = torch.as_tensor(images)
        return self.encode(t.permute(0, 3, 1, 2).float() / 255.0)


def build_codec(config: dict[str, Any]) -> SpaceToDepthCodec:
    if config.get("kind", "space-to-depth") != "space-to-depth":
        raise AssetError(f"unknown micro codec kind {config.get('kind')!r}")
    return SpaceToDepthCodec(int(config.get("factor", 2)), float(config.get("shift", 0.85)))


class MicroConditioner(TextEncoderConditioner):
    """Micro tokenizer + frozen text encoder → last hidden states and the padding mask ("" = null prompt)."""

    def __init__(self, text_encoder: CLIPTextModel, tokenizer: Any = None) -> None:
        super().__init__(tokenizer or micro_text.build_tokenizer(), text_encoder, micro_text.MAX_LENGTH,
                         use_attention_mask=True)

    def tokens(self, prompts: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return micro_text.encode(self.tokenizer, [str(p) for p in prompts])

    @torch.no_grad()
    def encode(self, prompts: list[Any]) -> Conditioning:
        return encode_text(self.text_encoder, self.tokenizer, prompts)


def encode_text(text_encoder: torch.nn.Module, tokenizer: Any, prompts: list[Any]) -> Conditioning:
    """Differentiable text encoding (the build trains through it; the conditioner wraps it in no_grad)."""
    ids, mask = micro_text.encode(tokenizer, [str(p) for p in prompts])
    device = next(text_encoder.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    hidden = text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return Conditioning(hidden_states=hidden, attention_mask=mask)


def _load_safetensors(module: torch.nn.Module, path, what: str) -> None:
    from safetensors.torch import load_file

    state = load_file(str(path))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AssetError(f"{path} does not fit the {what} config of the manifest "
                         f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")


def assemble(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, configs: dict[str, Any],
             ctx: LoadContext, fingerprint: str, default_sampler: Optional[dict[str, Any]] = None,
             extras: Optional[dict[str, Any]] = None) -> ModelBundle:
    """A :class:`ModelBundle` from built parts (frozen, eval mode, on ctx's device and dtype)."""
    for m in (unet, text_encoder):
        m.eval().requires_grad_(False).to(ctx.device, ctx.dtype)
    tokenizer = micro_text.build_tokenizer()
    return ModelBundle(
        name="micro", denoiser=unet, conditioner=MicroConditioner(text_encoder, tokenizer),
        codec=build_codec(configs.get("codec", CODEC_CONFIG)),
        scheduler_config=dict(configs.get("scheduler", SCHEDULER_CONFIG)), resolution=IMAGE_SIZE,
        fingerprint=fingerprint, conditioning_kind="text",
        default_sampler=dict(default_sampler or DEFAULT_SAMPLER),
        extras={"text_encoder": text_encoder, "tokenizer": tokenizer, "configs": configs, **(extras or {})},
    )


def random_parts(configs: dict[str, Any], seed: int) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """The architecture with seeded random weights (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        unet = build_unet(configs["unet"])
        text_encoder = build_text_encoder(configs["text_encoder"])
    return unet, text_encoder


class MicroModel(Model):
    """``model=micro``: the embedded micro world's text-to-image model (``zoo/micro``)."""

    Params = MicroParams

    @classmethod
    def image_side(cls, params: Any) -> Optional[int]:
        return IMAGE_SIZE

    @classmethod
    def load(cls, params: MicroParams, ctx: LoadContext) -> ModelBundle:
        if ctx.weights == "random":
            configs = default_configs()
            unet, te = random_parts(configs, params.seed)
            fp = "micro-random:" + stable_hash({"configs": configs, "seed": params.seed})
            return assemble(unet, te, configs, ctx, fp)
        folder = zoo_dir("micro", params.path)
        manifest = load_manifest(folder)
        configs = manifest.get("configs")
        if not isinstance(configs, dict) or "unet" not in configs or "text_encoder" not in configs:
            raise AssetError(f"{folder / 'manifest.json'} lacks the unet / text_encoder configs")
        unet_path = verified_path(folder, UNET_FILE, manifest)
        te_path = verified_path(folder, TEXT_ENCODER_FILE, manifest)
        unet, te = random_parts(configs, 0)
        _load_safetensors(unet, unet_path, "unet")
        _load_safetensors(te, te_path, "text_encoder")
        digest = hashlib.sha256()
        for name in (UNET_FILE, TEXT_ENCODER_FILE):
            digest.update(manifest["files"][name]["sha256"].encode())
        digest.update(stable_hash(configs).encode())  # the scheduler and codec decide pixels as much as the weights
        return assemble(unet, te, configs, ctx, "micro:" + digest.hexdigest()[:16],
                        default_sampler=manifest.get("sampler"), extras={"zoo_dir": str(folder),
                                                                         "manifest": manifest})
