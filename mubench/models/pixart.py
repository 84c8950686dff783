"""``pixart``: PixArt-α XL-2 at 512² (diffusers ``PixArtTransformer2DModel``, T5 text encoder, VAE), local weights.

``weights=pretrained`` finds the diffusers folder of ``PixArt-alpha/PixArt-XL-2-512x512`` with
:func:`mubench.assets.require` (``model.path``, ``$MUBENCH_HOME/assets/models/PixArt-XL-2-512x512``, the HF cache with
``local_files_only``) and loads ``transformer/``, ``vae/``, ``text_encoder/`` (T5-v1.1-XXL encoder) and ``tokenizer/``
(T5's sentencepiece tokenizer: needs the ``sentencepiece`` package unless the folder has a ``tokenizer.json``).
Anything missing raises AssetError; nothing is downloaded.

Conditioning follows diffusers' ``PixArtAlphaPipeline.encode_prompt``: T5 tokens padded to 120 with their attention
mask, which is also passed to the transformer's cross-attention; the null prompt is ``""``. The pipeline's optional
caption cleaning (``clean_caption``, needs bs4 + ftfy) is not applied: prompts are encoded as given (the pipeline's
own behaviour when bs4 is absent). Sampling defaults are the pipeline's: DPM-Solver++ (2nd order), 20 steps,
guidance 4.5; the learned-sigma half of the output is dropped, as the pipeline does.

``weights=random`` builds the transformer from its config (``model.arch=alpha-512``: PixArt-α XL-2 512, 28 blocks of
width 1152 — on the ``meta`` device for ``mubench inspect``; ``model.arch=tiny``: 4 blocks, 16 wide, for tests) with a
tiny random T5 encoder (the real caption width, 4096, for ``alpha-512``) over a byte-level stand-in tokenizer and a
tiny VAE: the denoiser is exact, the rest only has the right shapes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import stable_hash
from ..errors import AssetError, UsageError
from .base import Conditioner, Conditioning, LoadContext, Model, ModelBundle
from .codecs import VaeCodec
from .dit import tiny_vae
from .params import PixArtParams

PIXART_ALPHA_512_CONFIG: dict[str, Any] = dict(
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28, dropout=0.0,
    norm_num_groups=32, cross_attention_dim=1152, attention_bias=True, sample_size=64, patch_size=2,
    activation_fn="gelu-approximate", num_embeds_ada_norm=1000, upcast_attention=False, norm_type="ada_norm_single",
    norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None, use_additional_conditions=False,
    caption_channels=4096, attention_type="default",
)
TINY_PIXART_CONFIG: dict[str, Any] = dict(PIXART_ALPHA_512_CONFIG, num_attention_heads=2, attention_head_dim=8,
                                          num_layers=4, cross_attention_dim=16, sample_size=8, caption_channels=32)
ARCHS = {"alpha-512": PIXART_ALPHA_512_CONFIG, "tiny": TINY_PIXART_CONFIG}
# PixArt-α's scheduler_config.json (DPMSolverMultistepScheduler over DiT's linear schedule)
PIXART_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0,
    "timestep_spacing": "linspace", "lower_order_final": True,
}
PIXART_SAMPLER: dict[str, Any] = {"scheduler": "dpmsolver++", "steps": 20, "guidance": 4.5}


class T5Conditioner(Conditioner):
    """Tokenize to ``max_length`` (padding + attention mask), run the T5 encoder; "" is the null prompt."""

    def __init__(self, tokenizer: Any, text_encoder: torch.nn.Module, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.max_length = max_length

    @torch.no_grad()
    def encode(self, prompts: list[Any]) -> Conditioning:
        batch = self.tokenizer([str(p) for p in prompts], padding="max_length", max_length=self.max_length,
                               truncation=True, add_special_tokens=True, return_tensors="pt")
        param = next(self.text_encoder.parameters())
        device = param.device if param.device.type != "meta" else torch.device("cpu")
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        hidden = self.text_encoder(ids, attention_mask=mask)[0]
        return Conditioning(hidden_states=hidden, attention_mask=mask)

    def unconditional(self, n: int) -> Conditioning:
        return self.encode([""] * n)


def pixart_forward(denoiser: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """One PixArt call as the pipeline makes it (its forward takes the text before the timestep); returns the ε half
    of the learned-sigma output."""
    timesteps = t.expand(x.shape[0]) if t.ndim == 0 else t
    out = denoiser(x, encoder_hidden_states=cond.hidden_states, timestep=timesteps,
                   encoder_attention_mask=cond.attention_mask,
                   added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    return out[:, : x.shape[1]] if out.shape[1] != x.shape[1] else out


def _bundle(transformer, vae, text_encoder, tokenizer, params: PixArtParams, scheduler: dict[str, Any],
            fingerprint: str, extras: dict[str, Any]) -> ModelBundle:
    for m in (transformer, vae, text_encoder):
        m.eval().requires_grad_(False)
    return ModelBundle(
        name="pixart", denoiser=transformer, conditioner=T5Conditioner(tokenizer, text_encoder, params.max_length),
        codec=VaeCodec(vae), scheduler_config=scheduler, resolution=params.resolution, fingerprint=fingerprint,
        conditioning_kind="text", default_sampler=dict(PIXART_SAMPLER), extras={"forward": pixart_forward, **extras},
    )


class PixArt(Model):
    Params = PixArtParams

    @classmethod
    def load(cls, params: PixArtParams, ctx: LoadContext) -> ModelBundle:
        if ctx.weights == "random":
            return cls._random(params, ctx)
        return cls._pretrained(params, ctx)

    @classmethod
    def _pretrained(cls, params: PixArtParams, ctx: LoadContext) -> ModelBundle:
        from diffusers import AutoencoderKL, PixArtTransformer2DModel
        from transformers import AutoTokenizer, T5EncoderModel

        from ..assets import file_sha256, require
        from .sd15 import _weights_file

        folder = require("pixart-alpha-512", params.path)
        for part in ("text_encoder/config.json", "vae/config.json", "scheduler/scheduler_config.json", "tokenizer"):
            if not (folder / part).exists():
                raise AssetError(f"PixArt-α folder {folder} has no {part} (the full diffusers layout of "
                                 "PixArt-alpha/PixArt-XL-2-512x512 is expected); nothing is downloaded")
        kw = dict(local_files_only=True, torch_dtype=ctx.dtype)
        try:
            transformer = PixArtTransformer2DModel.from_pretrained(folder, subfolder="transformer", **kw)
            vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)
            # transformers re-initialises what it cannot load and only logs it: refuse that instead
            text, info = T5EncoderModel.from_pretrained(folder, subfolder="text_encoder", output_loading_info=True,
                                                        **kw)
        except (OSError, ValueError, RuntimeError) as err:
            raise AssetError(f"cannot load PixArt-α from {folder}: {err}") from None
        bad = {k: list(v)[:3] for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
        if bad:
            raise AssetError(f"PixArt-α's T5 encoder in {folder / 'text_encoder'} does not match its config: {bad}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
        except (OSError, ValueError, ImportError) as err:
            raise AssetError(f"cannot load PixArt-α's T5 tokenizer from {folder / 'tokenizer'} ({err}); a "
                             "sentencepiece tokenizer needs `pip install sentencepiece`") from None
        scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        for m in (transformer, vae, text):
            m.to(ctx.device)
        digests = {"transformer": file_sha256(_weights_file(folder, "transformer")),
                   "vae": file_sha256(_weights_file(folder, "vae")),
                   # the T5 encoder (often sharded) and the tokenizer decide the conditioning: every file, hashed
                   # once per file version (assets' hash cache)
                   "text_encoder": _files_digest(folder / "text_encoder"),
                   "tokenizer": _files_digest(folder / "tokenizer")}
        configs = {"scheduler": scheduler, **{part: json.loads((folder / part / "config.json").read_text())
                                              for part in ("transformer", "vae", "text_encoder")}}
        return _bundle(transformer, vae, text, tokenizer, params, scheduler,
                       "pixart:" + stable_hash({**digests, "configs": configs, "len": params.max_length}),
                       {"path": str(folder), "weights_sha256": digests})

    @classmethod
    def _random(cls, params: PixArtParams, ctx: LoadContext) -> ModelBundle:
        from diffusers import PixArtTransformer2DModel
        from transformers import T5Config, T5EncoderModel

        from .text import byte_level_clip_tokenizer

        config = ARCHS[params.arch]
        latent = int(config["sample_size"])
        levels = max(1, (params.resolution // latent).bit_length())
        if latent * 2 ** (levels - 1) != params.resolution:
            raise UsageError(f"model.resolution={params.resolution} is not {latent} x a power of 2 "
                             f"(arch {params.arch} has {latent}² latents)")
        t5 = T5Config(vocab_size=514, d_model=int(config["caption_channels"]), d_kv=8, d_ff=32, num_layers=1,
                      num_heads=2, pad_token_id=513, eos_token_id=513, decoder_start_token_id=0,
                      is_encoder_decoder=False, use_cache=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed)
            with torch.device(ctx.device):
                transformer = PixArtTransformer2DModel(**config)
                vae = tiny_vae(params.resolution, levels)
                text = T5EncoderModel(t5)
        if ctx.dtype != torch.float32:
            for m in (transformer, vae, text):
                m.to(dtype=ctx.dtype)
        return _bundle(transformer, vae, text, byte_level_clip_tokenizer(params.max_length), params,
                       dict(PIXART_SCHEDULER_CONFIG),
                       "pixart-random:" + stable_hash({"seed": params.seed, "config": config, "len": params.max_length}),
                       {"weights": f"random (transformer: {params.arch} config; T5 encoder, tokenizer and VAE: tiny "
                                   "stand-ins)"})


def _files_digest(folder: Path) -> str:
    """One hash over every file of a model part's folder (names and sha256), in name order."""
    from ..assets import file_sha256

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return stable_hash({str(p.relative_to(folder)): file_sha256(p) for p in files})
