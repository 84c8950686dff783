"""``mubench zoo build micro``: train the micro world's weights reproducibly and check their quality.

:func:`build_micro` runs, seeded and resumable:

1. the text encoder and the UNet, trained jointly from scratch by mubench's trainer
   (:func:`mubench.train.loop.train`) on the micro ``train`` split (v-prediction, min-SNR weighting,
   caption dropout for classifier-free guidance, EMA) → ``text_encoder.safetensors`` and
   ``unet.safetensors`` (the EMA weights). This is the part ``max_train_minutes`` may time-box;
   the learning rate is constant after warm-up, so a build stopped at step N equals one with
   ``steps=N`` (the manifest records both);
2. micro-CLIP (:func:`mubench.micro.clip.train_micro_clip`) → ``micro-clip.safetensors``;
3. its own quality check: single-object prompts of the ``test`` split's (colour, shape) pairs sampled
   with the shared sampler (:func:`mubench.sampler.sample_images`) and read by the oracle, for the
   built model, the same model with 50 % of its decoder attention weights zeroed, and random
   weights; plus a Fréchet distance in micro-CLIP feature space against real images;
4. ``manifest.json`` (configs, sha256 per file, data seeds, the training recipe, build metrics,
   timings) and ``build.log``.

Checkpoints go to ``<out>/.build/`` so a killed build resumes where it stopped, with the recipe that decided them
(``.build/recipe.json``: a build with another recipe refuses to resume them); micro-CLIP is cached there under a name
keyed by its own recipe.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..fsutil import atomic_write_bytes
from ..models.base import LoadContext
from ..train.config import TrainConfig
from ..train.loop import IteratorSource
from . import data as D
from .build_common import (BuildLog, CodecDiffusionLoss, Prompt, StageTimes, alphas_cumprod, build_recipe,
                           check_build_recipe, clip_fid, evaluate_bundle, file_entries, keeps_thread_count,
                           manifest_head, pair_counts, real_reference_images, save_safetensors, start_build,
                           train_config, train_in_chunks, versions, write_manifest)
from .model import (DEFAULT_SAMPLER, IMAGE_SIZE, TEXT_ENCODER_FILE, UNET_FILE, assemble, build_codec,
                    default_configs, encode_text, random_parts)

CLIP_FILE = "micro-clip.safetensors"
MANIFEST_FORMAT = "mubench-zoo-micro/1"
DECODER_ATTN_LINEARS = ("to_q", "to_k", "to_v", "to_out.0")
# BuildParams fields that do not decide the UNet + text encoder weights (``steps`` and the time box: a time-boxed
# build resumes with them changed; micro-CLIP's cache has its own key, :func:`clip_cache_name`)
NOT_UNET_RECIPE = ("steps", "max_train_minutes", "clip_steps", "checkpoint_every", "log_every", "eval_per_pair",
                   "eval_seed")


@dataclass
class BuildParams:
    """The build recipe (recorded in the manifest). See docs/micro-world.md for why these values."""

    seed: int = 0  # seeds weights, the data stream, noise and caption dropout
    steps: int = 3200  # UNet + text encoder optimizer steps (the shipped zoo's)
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    p_uncond: float = 0.1  # caption dropout (→ "") for classifier-free guidance
    prediction_type: str = "v_prediction"
    min_snr_gamma: Optional[float] = 5.0
    mix: dict[str, float] = field(default_factory=lambda: {"single": 0.85, "two": 0.05, "count": 0.05,
                                                           "relation": 0.05})
    data_seed: int = 0  # stream seed of the micro train split
    clip_steps: int = 800  # micro-CLIP steps (the shipped zoo's: clip.py's default)
    checkpoint_every: int = 200
    log_every: int = 50
    max_train_minutes: Optional[float] = None  # stop training early (recorded) when this wall time is spent
    eval_per_pair: int = 8  # images per (colour, shape) pair in the build's quality check
    eval_seed: int = 20251125
    threads: int = 1


# --------------------------------------------------------------------------- training


@dataclass
class MicroDiffusionLoss(CodecDiffusionLoss):
    """Loss callable for the trainer: batch = (uint8 images [B,32,32,3], captions); a dropped caption becomes ""."""

    tokenizer: Any = None

    def __call__(self, module: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        images, captions = batch
        drop = self.dropped(len(captions), generator)
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        inner = module.module if hasattr(module, "module") else module  # DDP wrapper
        device = next(inner.parameters()).device
        x0 = self.codec.encode_uint8(images).to(device)
        cond = encode_text(inner["text_encoder"], self.tokenizer, captions)

        def model_fn(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return inner["unet"](xt, t, encoder_hidden_states=cond.hidden_states,
                                 encoder_attention_mask=cond.attention_mask).sample

        return self.loss(model_fn, x0, generator)


def clip_cache_name(p: BuildParams) -> str:
    """``.build/``'s micro-CLIP file, named by what decides its weights: steps, seed, thread count, and clip.py's
    architecture and training defaults (so a changed recipe or architecture retrains it)."""
    from ..config import stable_hash
    from .clip import MicroClipConfig, MicroClipTrainParams

    key = {"steps": p.clip_steps, "seed": p.seed, "threads": torch.get_num_threads(),
           "train": asdict(MicroClipTrainParams()), "config": asdict(MicroClipConfig())}
    return f"micro-clip-{stable_hash(key, 16)}.safetensors"


# --------------------------------------------------------------------------- evaluation


def eval_pairs(split: str = "test") -> list[tuple[str, str]]:
    """The (colour, shape) pairs a split draws (the compositional split: the held-out ones)."""
    return D.allowed_pairs(split)


def single_object_prompts(per_pair: int, split: str = "test") -> list[Prompt]:
    """(caption, colour, shape) for every pair of ``split``, ``per_pair`` times."""
    out = []
    for c, s in eval_pairs(split):
        article = "an" if c[0] in "aeiou" else "a"
        out += [(f"{article} {c} {s}", c, s)] * per_pair
    return out


def random_decoder_attention_mask(unet: nn.Module, ratio: float, seed: int) -> tuple[nn.Module, int, int]:
    """A copy of ``unet`` with ``ratio`` of the up-block attention q/k/v/out weights zeroed
    (elementwise Bernoulli, seeded); returns (copy, zeroed, total)."""
    masked = copy.deepcopy(unet)
    g = torch.Generator().manual_seed(int(seed))
    zeroed = total = 0
    with torch.no_grad():
        for name, mod in masked.named_modules():
            if not name.startswith("up_blocks.") or not isinstance(mod, nn.Linear):
                continue
            if not any(name.endswith("." + k) for k in DECODER_ATTN_LINEARS):
                continue
            keep = (torch.rand(mod.weight.shape, generator=g) >= ratio).to(mod.weight.dtype)
            mod.weight.mul_(keep)
            zeroed += int((keep == 0).sum())
            total += keep.numel()
    return masked, zeroed, total


# --------------------------------------------------------------------------- the build


@keeps_thread_count
def build_micro(out_dir: Optional[Path] = None, params: Optional[BuildParams] = None, show_progress: bool = True,
                echo: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Build ``zoo/micro`` into ``out_dir`` (default: the repository's ``zoo/micro``); returns the manifest."""
    from .assets import default_zoo_root
    from .clip import evaluate_micro_clip

    name = "micro"
    p = params or BuildParams()
    out = Path(out_dir) if out_dir is not None else default_zoo_root() / name
    times = StageTimes()
    work, log = start_build(out, name, p, echo)

    with times.stage("unet_s"):  # 1. text encoder + UNet
        tr = _train_unet(p, work, log, show_progress)
    log(f"unet+text encoder trained to step {tr.steps_done} in {times.seconds['unet_s']}s "
        f"(final loss {tr.result.final_loss()})")

    with times.stage("clip_s"):  # 2. micro-CLIP (after the UNet: the UNet is the time-boxed part)
        clip_work, clip_model = _micro_clip(p, work, log)
        clip_quality = evaluate_micro_clip(clip_model)
        log(f"micro-CLIP quality {json.dumps(clip_quality)}")

    # 3. write weights
    meta = {"format": MANIFEST_FORMAT, "seed": str(p.seed), "steps": str(tr.steps_done), "weights": "ema"}
    save_safetensors(tr.unet, out / UNET_FILE, meta)
    save_safetensors(tr.text_encoder, out / TEXT_ENCODER_FILE, meta)
    atomic_write_bytes(out / CLIP_FILE, clip_work.read_bytes())
    sampler = dict(DEFAULT_SAMPLER)

    with times.stage("eval_s"):  # 4. quality
        quality = _quality(p, tr, clip_model, sampler, log) if evaluate else {}
        if quality:
            quality["micro_clip"] = clip_quality

    manifest = {
        **manifest_head(MANIFEST_FORMAT, name),
        "configs": tr.configs, "sampler": sampler, "image_size": IMAGE_SIZE,
        "files": file_entries(out, (UNET_FILE, TEXT_ENCODER_FILE, CLIP_FILE)),
        "data": {"train_split": "train", "data_seed": p.data_seed, "mix": p.mix,
                 "split_seeds": dict(D.SPLITS), "held_out_pairs": sorted(map(list, D.HELD_OUT))},
        "recipe": {**asdict(p), "steps_done": tr.steps_done, "stopped_early_at": tr.stopped_at,
                   "text_encoder": "trained jointly with the UNet from scratch, frozen in the shipped model",
                   "weights": "EMA", "trainer": "mubench.train.train", "train_config": tr.tcfg.as_dict()},
        "quality": quality, "timings": times.finish(), "versions": versions(),
        "losses": tr.result.losses,
    }
    write_manifest(out, manifest, log)
    return manifest


@dataclass
class _TrainedUNet:
    unet: nn.Module
    text_encoder: nn.Module
    configs: dict[str, Any]
    tcfg: TrainConfig
    result: Any  # mubench.train.TrainResult
    steps_done: int
    stopped_at: Optional[int]  # the step a spent time budget stopped training at (None: it ran to ``steps``)


def _train_unet(p: BuildParams, work: Path, log: BuildLog, show_progress: bool) -> _TrainedUNet:
    """The text encoder and UNet trained jointly (time-boxed: :func:`.build_common.train_in_chunks`), the EMA weights
    copied into them."""
    from .text import build_tokenizer

    configs = default_configs()
    configs["scheduler"]["prediction_type"] = p.prediction_type
    unet, text_encoder = random_parts(configs, p.seed)
    module = nn.ModuleDict({"unet": unet, "text_encoder": text_encoder})
    codec = build_codec(configs["codec"])
    loss_fn = MicroDiffusionLoss(codec, alphas_cumprod(configs["scheduler"]), p.p_uncond, p.prediction_type,
                                 p.min_snr_gamma, tokenizer=build_tokenizer())
    batches = IteratorSource(lambda: D.iterate_batches("train", p.batch_size, p.data_seed, p.mix))
    tcfg = train_config(p)
    check_build_recipe(work, build_recipe(p, NOT_UNET_RECIPE, configs, tcfg))
    result, stopped_at = train_in_chunks(module, loss_fn, batches, tcfg, work, p, log, show_progress, "unet")
    return _TrainedUNet(unet, text_encoder, configs, tcfg, result, result.step, stopped_at)


def _micro_clip(p: BuildParams, work: Path, log: BuildLog) -> tuple[Path, Any]:
    """micro-CLIP from the build's cache (keyed by its own recipe), else trained and cached: (cache file, model)."""
    from .clip import load_micro_clip, save_micro_clip, train_micro_clip

    t0 = time.time()
    clip_work = work / clip_cache_name(p)
    if clip_work.is_file():
        log(f"micro-CLIP: reusing {clip_work}")
        return clip_work, load_micro_clip(clip_work)
    log(f"micro-CLIP: training {p.clip_steps} steps (seed {p.seed})")

    def clip_progress(step: int, total: int, info: dict[str, float]) -> None:
        if step % 100 == 0 or step == total:
            log(f"micro-CLIP step {step}/{total} loss={info['loss']:.4f} elapsed={time.time() - t0:.0f}s")

    with torch.random.fork_rng(devices=[]):
        clip_model = train_micro_clip(steps=p.clip_steps, seed=p.seed, progress=clip_progress)
    save_micro_clip(clip_model, clip_work)
    return clip_work, clip_model


def _quality(p: BuildParams, tr: _TrainedUNet, clip_model: Any, sampler: dict[str, Any],
             log: BuildLog) -> dict[str, Any]:
    """The build's quality check: the oracle on single-object prompts of the test split's pairs for the built model,
    the same with 50 % of its decoder attention zeroed, and random weights; micro-CLIP FIDs against real renders."""
    ctx = LoadContext(device=torch.device("cpu"), dtype=torch.float32)
    bundle = assemble(tr.unet, tr.text_encoder, tr.configs, ctx, "micro:build")
    prompts = single_object_prompts(p.eval_per_pair)
    few_idx = [i for i, _ in enumerate(prompts) if i % p.eval_per_pair < max(1, p.eval_per_pair // 2)]
    few = [prompts[i] for i in few_idx]
    with torch.random.fork_rng(devices=[]):
        base, base_imgs = evaluate_bundle(bundle, prompts, p.eval_seed, sampler)
        log(f"quality base {json.dumps(base)}")
        masked_unet, zeroed, total = random_decoder_attention_mask(tr.unet, 0.5, p.eval_seed)
        masked, masked_imgs = evaluate_bundle(bundle, few, p.eval_seed, sampler, denoiser=masked_unet)
        masked["zeroed_weights"], masked["masked_weights"] = zeroed, total
        log(f"quality random-mask-0.5 {json.dumps(masked)}")
        r_unet, r_te = random_parts(tr.configs, p.seed + 1)
        rbundle = assemble(r_unet, r_te, tr.configs, ctx, "micro:random")
        rand, rand_imgs = evaluate_bundle(rbundle, few, p.eval_seed, sampler)
        log(f"quality random-weights {json.dumps(rand)}")
    real = real_reference_images(pair_counts(prompts), "test", seed=p.data_seed)
    real_few = real_reference_images(pair_counts(few), "test", seed=p.data_seed)
    val_few = real_reference_images(pair_counts(few), "val", seed=p.data_seed)
    fids = {"n": len(prompts), "n_few": len(few), "base": clip_fid(clip_model, base_imgs, real),
            "base_few": clip_fid(clip_model, base_imgs[few_idx], real_few),
            "random_mask_0.5_few": clip_fid(clip_model, masked_imgs, real_few),
            "random_weights_few": clip_fid(clip_model, rand_imgs, real_few),
            "real_val_few": clip_fid(clip_model, torch.from_numpy(val_few).permute(0, 3, 1, 2).float() / 255,
                                     real_few)}
    log(f"quality clip-fid (micro-CLIP penultimate features; *_few on the comparison subset) {json.dumps(fids)}")
    return {"sampler": sampler, "prompts": "a <colour> <shape> over the test split's pairs",
            "per_pair": p.eval_per_pair, "seed": p.eval_seed, "base": base, "random_mask_0.5": masked,
            "random_weights": rand, "clip_fid": fids}
