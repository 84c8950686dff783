"""``micro-dit``: a tiny class-conditional DiT over the micro world's (colour, shape) classes, and its zoo build.

The model is diffusers' ``DiTTransformer2DModel`` — the class DiT-XL/2 uses, with adaLN-Zero over the timestep +
class embedding — at micro size (:func:`dit_config`), on the micro model's space-to-depth "latents" (12×16×16,
:class:`~mubench.micro.model.SpaceToDepthCodec`) in 2×2 patches (64 tokens), with the micro model's diffusion
(1000-step cosine schedule, v-prediction; no learned variance). Its classes are the 15 (colour, shape) pairs of
:mod:`mubench.micro.classes`; prompts are class indices or class names (``"a red circle"``), the null class
(index 15, or ``""``) serves classifier-free guidance. So masking methods meet the same transformer code paths as on
DiT-XL/2 (``maskunet``'s per-block generators see the class through adaLN's ``t_emb + y_emb``).

``model=micro-dit`` loads ``zoo/micro-dit/dit.safetensors`` after checking its sha256 against
``zoo/micro-dit/manifest.json``; ``weights=random`` builds the architecture with seeded random weights.

``mubench zoo build micro-dit`` (:func:`build_micro_dit`) trains it with mubench's trainer on the class stream of the
``train`` split (v-prediction, min-SNR weighting, 10 % label dropout to the null class, EMA; seeded, resumable,
optionally time-boxed), then checks it: oracle class accuracy of samples of every class with the shared sampler, the
same with 50 % of the decoder attention weights zeroed and with random weights, and a Fréchet distance in micro-CLIP
feature space (the ``zoo/micro`` micro-CLIP) against held-out real renders.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..config import stable_hash
from ..errors import AssetError, UsageError
from ..models.base import LoadContext, Model, ModelBundle
from ..models.dit import class_bundle
from ..models.params import MicroDiTParams
from . import classes as C
from .assets import load_manifest, verified_path, zoo_dir
from .build_common import (CodecDiffusionLoss, StageTimes, alphas_cumprod, build_recipe, check_build_recipe, clip_fid,
                           evaluate_bundle, file_entries, keeps_thread_count, manifest_head, pair_counts,
                           real_reference_images, save_safetensors, start_build, train_config, train_in_chunks,
                           versions, write_manifest)
from .model import CODEC_CONFIG, IMAGE_SIZE, SCHEDULER_CONFIG, _load_safetensors, build_codec

DIT_FILE = "dit.safetensors"
MANIFEST_FORMAT = "mubench-zoo-micro-dit/1"
DEFAULT_SAMPLER: dict[str, Any] = {"scheduler": "ddim", "steps": 20, "guidance": 3.0}


def dit_config(width: int = 96, heads: int = 4, layers: int = 6, patch: int = 2) -> dict[str, Any]:
    """``DiTTransformer2DModel`` kwargs of the micro DiT (no learned variance: out_channels = in_channels)."""
    channels = 3 * CODEC_CONFIG["factor"] ** 2
    if width % heads:
        raise UsageError(f"micro-dit width {width} is not divisible by {heads} heads")
    return dict(num_attention_heads=heads, attention_head_dim=width // heads, in_channels=channels,
                out_channels=channels, num_layers=layers, sample_size=IMAGE_SIZE // CODEC_CONFIG["factor"],
                patch_size=patch, num_embeds_ada_norm=C.NUM_CLASSES, norm_type="ada_norm_zero",
                activation_fn="gelu-approximate", attention_bias=True, norm_elementwise_affine=False, norm_eps=1e-5)


def default_configs() -> dict[str, Any]:
    return {"transformer": dit_config(), "codec": dict(CODEC_CONFIG), "scheduler": dict(SCHEDULER_CONFIG),
            "classes": C.class_names()}


def random_transformer(config: dict[str, Any], seed: int) -> nn.Module:
    from diffusers import DiTTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return DiTTransformer2DModel(**config)


def assemble(transformer: nn.Module, configs: dict[str, Any], ctx: LoadContext, fingerprint: str,
             default_sampler: Optional[dict[str, Any]] = None, extras: Optional[dict[str, Any]] = None) -> ModelBundle:
    """A frozen class-conditional bundle on ctx's device and dtype."""
    transformer.to(ctx.device)
    if ctx.dtype != torch.float32:
        transformer.to(dtype=ctx.dtype)
    names = list(configs.get("classes") or C.class_names())
    return class_bundle("micro-dit", transformer, None, len(names), IMAGE_SIZE, fingerprint,
                        configs.get("scheduler", SCHEDULER_CONFIG), default_sampler or DEFAULT_SAMPLER, None,
                        {"configs": configs, "class_names": names, **(extras or {})}, names=names,
                        codec=build_codec(configs.get("codec", CODEC_CONFIG)))


class MicroDiTModel(Model):
    """``model=micro-dit``: the micro world's class-conditional DiT (``zoo/micro-dit``)."""

    Params = MicroDiTParams

    @classmethod
    def image_side(cls, params: Any) -> Optional[int]:
        return IMAGE_SIZE

    @classmethod
    def load(cls, params: MicroDiTParams, ctx: LoadContext) -> ModelBundle:
        if ctx.weights == "random":
            configs = default_configs()
            transformer = random_transformer(configs["transformer"], params.seed)
            fp = "micro-dit-random:" + stable_hash({"configs": configs, "seed": params.seed})
            return assemble(transformer, configs, ctx, fp)
        folder = zoo_dir("micro-dit", params.path)
        if not (folder / "manifest.json").is_file():
            raise AssetError(f"no micro-dit weights in {folder} (missing manifest.json); build them with "
                             f"`mubench zoo build micro-dit`, or use weights=random")
        manifest = load_manifest(folder)
        configs = manifest.get("configs")
        if not isinstance(configs, dict) or "transformer" not in configs:
            raise AssetError(f"{folder / 'manifest.json'} lacks the transformer config")
        path = verified_path(folder, DIT_FILE, manifest)
        transformer = random_transformer(configs["transformer"], 0)
        _load_safetensors(transformer, path, "micro-dit transformer")
        fp = "micro-dit:" + manifest["files"][DIT_FILE]["sha256"][:16]
        return assemble(transformer, configs, ctx, fp, manifest.get("sampler"),
                        {"zoo_dir": str(folder), "manifest": manifest})


# --------------------------------------------------------------------------- training


@dataclass
class ClassDiffusionLoss(CodecDiffusionLoss):
    """Loss for the trainer: batch = (uint8 images [B,32,32,3], int labels [B]); a dropped label becomes the null
    class (``num_classes``)."""

    num_classes: int = C.NUM_CLASSES

    def __call__(self, module: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        images, labels = batch
        labels = torch.as_tensor(labels, dtype=torch.long)
        drop = self.dropped(len(labels), generator)
        labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        device = next(module.parameters()).device
        x0 = self.codec.encode_uint8(images).to(device)
        labels = labels.to(device)

        def model_fn(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return module(xt, t, class_labels=labels).sample

        return self.loss(model_fn, x0, generator)


# DiTBuildParams fields that do not decide the checkpoints (the step count and time box a time-boxed build resumes
# with changed, and what only logs or evaluates)
NOT_DIT_RECIPE = ("steps", "max_train_minutes", "checkpoint_every", "log_every", "eval_per_class", "eval_seed")


@dataclass
class DiTBuildParams:
    """The micro-dit build recipe (recorded in the manifest)."""

    seed: int = 0  # seeds weights, the data stream, noise and label dropout
    steps: int = 3900  # the shipped build (trained in two time-boxed sessions; constant LR, so it equals one run)
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    p_uncond: float = 0.1  # label dropout (→ null class) for classifier-free guidance
    min_snr_gamma: Optional[float] = 5.0
    width: int = 96
    heads: int = 4
    layers: int = 6
    data_seed: int = 0  # stream seed of the class stream of the train split
    checkpoint_every: int = 100
    log_every: int = 50
    max_train_minutes: Optional[float] = None  # stop training early (recorded) when this wall time is spent
    eval_per_class: int = 16  # images per class in the build's quality check
    eval_seed: int = 20251125
    threads: int = 1


def random_attention_mask(transformer: nn.Module, ratio: float, seed: int) -> tuple[nn.Module, int, int]:
    """A copy with ``ratio`` of the decoder-attention weights (second half of the blocks, q/k/v/o) zeroed."""
    from ..methods.transformer_layers import select_transformer_layers

    masked = copy.deepcopy(transformer)
    g = torch.Generator().manual_seed(int(seed))
    zeroed = total = 0
    with torch.no_grad():
        for _, mod in select_transformer_layers(masked, "decoder-attn"):
            keep = (torch.rand(mod.weight.shape, generator=g) >= ratio).to(mod.weight.dtype)
            mod.weight.mul_(keep)
            zeroed += int((keep == 0).sum())
            total += keep.numel()
    return masked, zeroed, total


def class_prompts(per_class: int) -> list[tuple[str, str, str]]:
    """(class name, colour, shape) for every class, ``per_class`` times."""
    return [(name, c, s) for name, (c, s) in zip(C.class_names(), C.class_pairs()) for _ in range(per_class)]


@keeps_thread_count
def build_micro_dit(out_dir: Optional[Path] = None, params: Optional[DiTBuildParams] = None,
                    show_progress: bool = True, echo: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Build ``zoo/micro-dit`` (or ``out_dir``): train, write ``dit.safetensors`` + ``manifest.json``; returns it."""
    from ..train.loop import IteratorSource
    from .assets import default_zoo_root

    p = params or DiTBuildParams()
    out = Path(out_dir) if out_dir is not None else default_zoo_root() / "micro-dit"
    times = StageTimes()
    work, log = start_build(out, "micro-dit", p, echo)

    configs = default_configs()
    configs["transformer"] = dit_config(p.width, p.heads, p.layers)
    transformer = random_transformer(configs["transformer"], p.seed)
    from ..models.classes import disable_label_dropout

    disable_label_dropout(transformer)
    codec = build_codec(configs["codec"])
    loss_fn = ClassDiffusionLoss(codec, alphas_cumprod(configs["scheduler"]), p.p_uncond,
                                 configs["scheduler"]["prediction_type"], p.min_snr_gamma)
    batches = IteratorSource(lambda: C.iterate_class_batches("train", p.batch_size, p.data_seed))
    tcfg = train_config(p)
    check_build_recipe(work, build_recipe(p, NOT_DIT_RECIPE, configs, tcfg))
    with times.stage("train_s"):
        result, stopped_at = train_in_chunks(transformer, loss_fn, batches, tcfg, work, p, log, show_progress, "dit")
    steps_done = result.step
    log(f"micro-dit trained to step {steps_done} in {times.seconds['train_s']}s (final loss {result.final_loss()})")

    meta = {"format": MANIFEST_FORMAT, "seed": p.seed, "steps": steps_done,
            "weights": "ema" if result.ema is not None else "raw"}
    save_safetensors(transformer, out / DIT_FILE, meta)

    with times.stage("eval_s"):
        quality = evaluate_micro_dit(transformer, configs, p, log) if evaluate else {}
    manifest = {
        **manifest_head(MANIFEST_FORMAT, "micro-dit"),
        "configs": configs, "sampler": dict(DEFAULT_SAMPLER), "image_size": IMAGE_SIZE,
        "files": file_entries(out, (DIT_FILE,)),
        "data": {"split": "train", "data_seed": p.data_seed, "classes": C.class_names(),
                 "fingerprint": C.class_fingerprint("train"), "stream_offset": C.CLASS_STREAM_OFFSET},
        "recipe": {**asdict(p), "steps_done": steps_done, "stopped_early_at": stopped_at, "weights": "EMA",
                   "prediction_type": configs["scheduler"]["prediction_type"], "trainer": "mubench.train.train",
                   "train_config": tcfg.as_dict()},
        "quality": quality, "timings": times.finish(), "versions": versions(), "losses": result.losses,
    }
    write_manifest(out, manifest, log)
    return manifest


def evaluate_micro_dit(transformer: nn.Module, configs: dict[str, Any], p: DiTBuildParams, log) -> dict[str, Any]:
    """Oracle class accuracy (built / 50 % decoder-attention mask / random weights) and micro-CLIP FID."""
    from .clip import CLIP_FILENAME, load_micro_clip

    ctx = LoadContext(device=torch.device("cpu"), dtype=torch.float32)
    bundle = assemble(transformer, configs, ctx, "micro-dit:build")
    prompts = class_prompts(p.eval_per_class)
    half = [q for i, q in enumerate(prompts) if i % p.eval_per_class < max(1, p.eval_per_class // 2)]
    out: dict[str, Any] = {"sampler": dict(DEFAULT_SAMPLER), "per_class": p.eval_per_class, "seed": p.eval_seed}
    with torch.random.fork_rng(devices=[]):
        base, base_imgs = evaluate_bundle(bundle, prompts, p.eval_seed, DEFAULT_SAMPLER)
        log(f"quality base {json.dumps(base)}")
        masked_t, zeroed, total = random_attention_mask(transformer, 0.5, p.eval_seed)
        masked, masked_imgs = evaluate_bundle(bundle, half, p.eval_seed, DEFAULT_SAMPLER, denoiser=masked_t)
        masked.update(zeroed_weights=zeroed, masked_weights=total)
        log(f"quality random-mask-0.5 {json.dumps(masked)}")
        rand_bundle = assemble(random_transformer(configs["transformer"], p.seed + 1), configs, ctx, "micro-dit:rnd")
        rand, rand_imgs = evaluate_bundle(rand_bundle, half, p.eval_seed, DEFAULT_SAMPLER)
        log(f"quality random-weights {json.dumps(rand)}")
    out.update(base=base, random_mask_0_5=masked, random_weights=rand)
    clip_path = zoo_dir("micro") / CLIP_FILENAME
    if clip_path.is_file():
        clip_model = load_micro_clip(clip_path)
        real = real_reference_images(pair_counts(prompts), "test", seed=p.data_seed)
        real_half = real_reference_images(pair_counts(half), "test", seed=p.data_seed)
        idx = [i for i in range(len(prompts)) if i % p.eval_per_class < max(1, p.eval_per_class // 2)]
        out["clip_fid"] = {"n": len(prompts), "n_half": len(half), "base": clip_fid(clip_model, base_imgs, real),
                           "base_half": clip_fid(clip_model, base_imgs[idx], real_half),
                           "random_mask_0.5_half": clip_fid(clip_model, masked_imgs, real_half),
                           "random_weights_half": clip_fid(clip_model, rand_imgs, real_half),
                           "micro_clip_sha256": hashlib.sha256(clip_path.read_bytes()).hexdigest()}
        log(f"quality clip-fid {json.dumps(out['clip_fid'])}")
    else:
        out["clip_fid"] = f"skipped: no micro-CLIP at {clip_path} (build zoo/micro first)"
    return out


__all__ = ["MicroDiTModel", "build_micro_dit", "DiTBuildParams", "dit_config", "default_configs",
           "ClassDiffusionLoss"]
