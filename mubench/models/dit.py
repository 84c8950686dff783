"""``dit``: class-conditional DiT-XL/2 at 256² (diffusers ``DiTTransformer2DModel`` + ``AutoencoderKL``), local weights.

``weights=pretrained`` finds the diffusers folder with :func:`mubench.assets.require` (``model.path``, then
``$MUBENCH_HOME/assets/models/DiT-XL-2-256``, then the HF cache with ``local_files_only``) and loads its
``transformer/``; the VAE is DiT's FID-protocol VAE ``sd-vae-ft-ema`` (``model.vae=ema``, asset ``sd-vae-ft-ema``) or the
folder's own ``vae/`` (``model.vae=bundled``). Anything missing raises AssetError; nothing is downloaded.

``weights=random`` builds the denoiser from its config with seeded random weights (``model.arch=xl``: DiT-XL/2 256,
675M parameters — on the ``meta`` device it costs nothing, which is how ``mubench inspect`` reads its layer sets;
``model.arch=tiny``: a 4-block, 16-wide DiT for tests) with a tiny 8× VAE stand-in.

Sampling follows DiT's ``sample_ddp.py`` (protocols.md §4.1): the diffusion is DiT's (linear betas 1e-4…0.02, 1000
steps, ε-prediction with a learned-range variance), the default sampler is DDPM with 250 steps spaced as DiT's
``space_timesteps`` (``timestep_spacing=linspace``) using the model's learned variance, and classifier-free guidance
with scale 1.5 applied to the first ``cfg_channels`` latent channels only (3, as the official code "for exact
reproducibility"; 4 = diffusers' DiTPipeline). Class labels are ints 0…999; the null class is 1000. Label dropout
inside the model is switched off (:func:`~mubench.models.classes.disable_label_dropout`): training losses drop labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from ..config import stable_hash
from ..errors import AssetError, UsageError
from .base import LoadContext, Model, ModelBundle
from .classes import ClassConditioner, disable_label_dropout
from .codecs import VaeCodec
from .params import DiTParams

DIT_XL_2_256_CONFIG: dict[str, Any] = dict(
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28, dropout=0.0,
    norm_num_groups=32, attention_bias=True, sample_size=32, patch_size=2, activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000, upcast_attention=False, norm_type="ada_norm_zero", norm_elementwise_affine=False,
    norm_eps=1e-5,
)
TINY_DIT_CONFIG: dict[str, Any] = dict(DIT_XL_2_256_CONFIG, num_attention_heads=2, attention_head_dim=8,
                                       num_layers=4, sample_size=8, num_embeds_ada_norm=10)
ARCHS = {"xl": DIT_XL_2_256_CONFIG, "tiny": TINY_DIT_CONFIG}

# DiT's diffusion (create_diffusion: linear schedule, learn_sigma -> LEARNED_RANGE, no clipping) as a diffusers
# scheduler config; "linspace" spacing reproduces space_timesteps(1000, "250") exactly (round(i * 999 / 249)).
DIT_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "prediction_type": "epsilon", "variance_type": "learned_range", "clip_sample": False,
    "timestep_spacing": "linspace", "set_alpha_to_one": True, "steps_offset": 0,
}
DIT_SAMPLER: dict[str, Any] = {"scheduler": "ddpm", "steps": 250, "guidance": 1.5}
def tiny_vae(resolution: int, levels: int):
    """A random ``AutoencoderKL`` stand-in with 4 latent channels and ``2**(levels-1)`` downsampling."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16,) * levels,
                         down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels, layers_per_block=1, norm_num_groups=8,
                         sample_size=resolution)


def class_bundle(name: str, transformer: torch.nn.Module, vae, num_classes: int, resolution: int, fingerprint: str,
                 scheduler_config: dict[str, Any], default_sampler: dict[str, Any], cfg_channels: Optional[int],
                 extras: Optional[dict[str, Any]] = None, names: Optional[list[str]] = None,
                 codec=None) -> ModelBundle:
    """A frozen class-conditional :class:`ModelBundle` around a DiT-style transformer."""
    disable_label_dropout(transformer)
    transformer.eval().requires_grad_(False)
    if vae is not None:
        vae.eval().requires_grad_(False)
    device = next(transformer.parameters()).device
    more: dict[str, Any] = {"num_classes": num_classes}
    if cfg_channels is not None:
        more["guidance_channels"] = int(cfg_channels)
    more.update(extras or {})
    return ModelBundle(
        name=name, denoiser=transformer, conditioner=ClassConditioner(num_classes, device, names),
        codec=codec if codec is not None else VaeCodec(vae), scheduler_config=dict(scheduler_config),
        resolution=resolution, fingerprint=fingerprint, conditioning_kind="class",
        default_sampler=dict(default_sampler), extras=more,
    )


class DiT(Model):
    Params = DiTParams

    @classmethod
    def load(cls, params: DiTParams, ctx: LoadContext) -> ModelBundle:
        if ctx.weights == "random":
            return cls._random(params, ctx)
        return cls._pretrained(params, ctx)

    @classmethod
    def _pretrained(cls, params: DiTParams, ctx: LoadContext) -> ModelBundle:
        from diffusers import AutoencoderKL, DiTTransformer2DModel

        from ..assets import file_sha256, require
        from .sd15 import _weights_file

        folder = require("dit-xl-2-256", params.path)
        vae_folder = require("sd-vae-ft-ema", params.vae_path) if params.vae == "ema" else folder / "vae"
        kw = dict(local_files_only=True, torch_dtype=ctx.dtype)
        try:
            transformer = DiTTransformer2DModel.from_pretrained(folder, subfolder="transformer", **kw)
            vae = AutoencoderKL.from_pretrained(vae_folder, **kw)
        except (OSError, ValueError, RuntimeError) as err:
            raise AssetError(f"cannot load DiT-XL/2 from {folder} (VAE {vae_folder}): {err}") from None
        digests = {"transformer": file_sha256(_weights_file(folder, "transformer")),
                   "vae": file_sha256(_vae_weights(Path(vae_folder)))}
        transformer.to(ctx.device)
        vae.to(ctx.device)
        return class_bundle("dit", transformer, vae, int(transformer.config.num_embeds_ada_norm), params.resolution,
                            "dit:" + stable_hash(digests), DIT_SCHEDULER_CONFIG, DIT_SAMPLER,
                            params.cfg_channels, {"path": str(folder), "vae_path": str(vae_folder),
                                                  "weights_sha256": digests})

    @classmethod
    def _random(cls, params: DiTParams, ctx: LoadContext) -> ModelBundle:
        from diffusers import DiTTransformer2DModel

        config = ARCHS[params.arch]
        latent = int(config["sample_size"])
        levels = max(1, (params.resolution // latent).bit_length())  # 2**(levels-1) = resolution / latent side
        if latent * 2 ** (levels - 1) != params.resolution:
            raise UsageError(f"model.resolution={params.resolution} is not {latent} x a power of 2 "
                             f"(arch {params.arch} has {latent}² latents)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed)
            with torch.device(ctx.device):
                transformer = DiTTransformer2DModel(**config)
                vae = tiny_vae(params.resolution, levels)
        if ctx.dtype != torch.float32:
            transformer.to(dtype=ctx.dtype)
            vae.to(dtype=ctx.dtype)
        return class_bundle("dit", transformer, vae, int(config["num_embeds_ada_norm"]), params.resolution,
                            "dit-random:" + stable_hash({"seed": params.seed, "config": config}),
                            DIT_SCHEDULER_CONFIG, DIT_SAMPLER, params.cfg_channels,
                            {"weights": f"random (transformer: {params.arch} config; VAE: tiny stand-in)"})


def _vae_weights(folder: Path) -> Path:
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise AssetError(f"VAE folder {folder} has no diffusion_pytorch_model.safetensors / .bin")
