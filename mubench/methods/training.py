"""Training a method's artifact: the one place every trainable method (full-ft, dropout, lora, maskunet) goes through.

:class:`TrainableMethod` gives a method kind ``prepare`` / ``artifact_location`` / ``save`` on top of its ``build``:

- ``prepare(bundle, ctx)`` looks for the content-addressed artifact and, by ``ctx.train``: ``auto`` trains it on
  demand when it is missing (resuming an interrupted training from its latest checkpoint), ``never`` fails with a
  message saying how to train it, ``force`` retrains it from scratch. Then it loads the artifact.
- The artifact's address hashes the method kind, its training-relevant parameters (the ``train`` recipe included,
  with its ``seed``), a content fingerprint of the training data and the base model's weight fingerprint, plus the
  base's dtype where it is not float32 and, on a CPU, the thread count (:meth:`TrainableMethod.keyed_spec`).
- :func:`train_artifact` runs the recipe (``method.params.train``, a :class:`MethodTrainConfig`) with mubench's one
  trainer loop (:func:`mubench.train.train`): only what is trainable differs between methods
  (``prepared.trainable_parameters()``). The loss is the diffusion MSE with the model's prediction type (epsilon for
  SD 1.5 as in the paper, v-prediction for the micro model); trainable parameters are kept in fp32 (mixed precision
  on a GPU autocasts the frozen rest); checkpoints go to ``<artifact>/train/checkpoints`` and are removed once the
  artifact is written (``train.log`` stays).
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
from torch import nn

from ..cache import cpu_threads
from ..config import to_plain
from ..errors import UsageError
from ..models.base import ModelBundle
from ..train.config import TrainConfig
from .artifacts import (artifact_dir, artifact_key, base_dtype, has_artifact, load_artifact, missing_artifact_error,
                        save_artifact, train_command)
from .base import Method, MethodContext, Prepared

if TYPE_CHECKING:  # pragma: no cover
    from ..train.data import TrainingData

TRAIN_DIR = "train"
# recipe fields that do not change the trained weights (left out of the artifact key)
NOT_IN_KEY = ("checkpoint_every", "keep_checkpoints", "log_every", "gradient_checkpointing")


@dataclass
class MethodTrainConfig(TrainConfig):
    """A method's training recipe: the trainer settings plus data and diffusion-loss settings.

    ``data``: a registered training-data name (``micro``, ``micro-class``: ``mubench list datasets``) | a folder of
    images + captions | a ``.parquet`` file (see :func:`open_data`);
    None means none is set (training then stops with a message). ``resolution``: training image side (None: the
    model's). ``p_uncond``: probability of replacing a caption by the null prompt "" (caption dropout).
    ``latents``: ``sample`` draws an image's latents from the VAE posterior with the trainer's generator (the
    released scripts' ``latent_dist.sample()``), ``mean`` takes the posterior mean; no difference (and not in the
    artifact key) for codecs without a posterior (pixels, the micro world's space-to-depth).
    ``prediction_type``: the loss target (None: the model's, from its scheduler config).
    """

    data: Optional[str] = None
    resolution: Optional[int] = None
    center_crop: bool = True
    random_flip: bool = True
    p_uncond: float = 0.0
    prediction_type: Optional[str] = None
    min_snr_gamma: Optional[float] = None
    gradient_checkpointing: bool = False
    latents: str = "sample"  # sample | mean: how a VAE encodes the training images
    image_column: Optional[str] = None  # parquet data: the image column (default: image, img, jpg, png, file)
    caption_column: Optional[str] = None  # parquet data: the caption column (default: text, caption, prompt)

    def __post_init__(self) -> None:
        if str(self.mixed_precision) in ("False", "false"):  # YAML reads a bare `no` (or off) as false, and the
            self.mixed_precision = "no"                        # typed config makes that the string 'False'
        super().__post_init__()
        if not 0.0 <= self.p_uncond < 1.0:
            raise UsageError(f"train.p_uncond must be in [0, 1), got {self.p_uncond}")
        if self.latents not in ("sample", "mean"):
            raise UsageError(f"train.latents must be sample or mean, got {self.latents!r}")
        if self.prediction_type not in (None, "epsilon", "v_prediction", "sample"):
            raise UsageError(f"train.prediction_type must be epsilon, v_prediction or sample, "
                             f"got {self.prediction_type!r}")


# --------------------------------------------------------------------------- the loss


class DiffusionFinetuneLoss:
    """Loss callable for the trainer: batch = (float images [B,3,R,R] in [0,1], captions).

    Captions go through the bundle's (frozen) conditioner, images through its codec, both without gradients; the
    denoiser being trained is called exactly as the sampler calls it (:func:`mubench.sampler.call_denoiser`).
    """

    def __init__(self, bundle: ModelBundle, cfg: MethodTrainConfig) -> None:
        from diffusers import DDPMScheduler

        self.bundle = bundle
        self.cfg = cfg
        self.prediction_type = cfg.prediction_type or bundle.scheduler_config.get("prediction_type", "epsilon")
        self.alphas_cumprod = DDPMScheduler.from_config(bundle.scheduler_config).alphas_cumprod.clone()

    def __call__(self, module: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        from ..sampler import call_denoiser
        from ..train.diffusion import diffusion_loss

        images, captions = batch
        captions = [str(c) for c in captions]
        if self.cfg.p_uncond > 0:
            drop = torch.rand(len(captions), generator=generator) < self.cfg.p_uncond
            captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        inner = module.module if hasattr(module, "module") else module  # DDP wrapper
        param = next(inner.parameters())
        with torch.no_grad():
            cond = self.bundle.conditioner.encode(captions)
            pixels, codec = images.to(param.device), self.bundle.codec
            x0 = codec.encode_sample(pixels, generator) if self.cfg.latents == "sample" else codec.encode(pixels)
            x0 = x0.float()

        def model_fn(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return call_denoiser(self.bundle, module, xt, t, cond)

        return diffusion_loss(model_fn, x0, self.alphas_cumprod, generator, prediction_type=self.prediction_type,
                              min_snr_gamma=self.cfg.min_snr_gamma)


# --------------------------------------------------------------------------- training data


def _data_sources():
    from ..registry import load_registries

    return load_registries().datasets


def data_fingerprint(spec: Optional[str], *, image_column: Optional[str] = None,
                     caption_column: Optional[str] = None) -> str:
    """Content fingerprint of a data spec: a registered source's, else a folder's or parquet file's
    (:func:`mubench.train.data.data_fingerprint`); "none" when no data is set."""
    from ..train.data import data_fingerprint as file_fingerprint

    sources = _data_sources()
    if spec is not None and str(spec) in sources:
        return sources.get(str(spec)).fingerprint()
    return file_fingerprint(spec, image_column=image_column, caption_column=caption_column, names=sources.names())


def check_source_options(cfg: "MethodTrainConfig") -> None:
    """A registered source makes its own images (its size, no crop or flip, no columns): the file options given with
    one would be ignored (and still change the artifact key), so they are refused."""
    if cfg.data is None or str(cfg.data) not in _data_sources():
        return
    given = [f"{k}={v}" for k, v, default in (("center_crop", cfg.center_crop, True),
                                              ("random_flip", cfg.random_flip, True),
                                              ("image_column", cfg.image_column, None),
                                              ("caption_column", cfg.caption_column, None)) if v != default]
    if given:
        raise UsageError(f"train.data={cfg.data} is a registered source, which makes its own images: "
                         f"{', '.join(f'train.{g}' for g in given)} would be ignored; these options apply to a "
                         "folder or .parquet file")


def open_data(spec: Optional[str], *, batch_size: int, seed: int, resolution: int, center_crop: bool = True,
              random_flip: bool = True, image_column: Optional[str] = None,
              caption_column: Optional[str] = None) -> "TrainingData":
    """The training data of a spec: a registered source (``Registries.datasets``) opened with (batch size, seed,
    resolution), else a folder or parquet file (:func:`mubench.train.data.open_training_data`)."""
    from ..train.data import open_training_data

    sources = _data_sources()
    if spec is not None and str(spec) in sources:
        return sources.get(str(spec)).open(batch_size, seed, resolution)
    return open_training_data(spec, batch_size=batch_size, seed=seed, resolution=resolution, center_crop=center_crop,
                              random_flip=random_flip, image_column=image_column, caption_column=caption_column,
                              names=sources.names())


# --------------------------------------------------------------------------- trainable methods


class TrainableMethod(Method):
    """A method whose change is a trained artifact. Subclasses implement ``build`` (returning a Prepared with
    ``trainable_parameters()``, ``artifact_state()`` and ``load_artifact_state()``) and set ``artifact_kind``."""

    trainable = True
    artifact_kind: ClassVar[str] = ""
    # the released code's effective gradient clipping (None: none), to record deviations from it
    released_grad_clip: ClassVar[Optional[float]] = None

    # ---- the artifact's address
    def training_spec(self) -> dict[str, Any]:
        """The method's parameters that decide the trained weights (default: all of them)."""
        spec = getattr(self.params, "training_spec", None)
        return spec() if callable(spec) else asdict(self.params)

    def keyed_spec(self, bundle: ModelBundle, device: torch.device) -> dict[str, Any]:
        """:meth:`training_spec` with the data spec replaced by the data's content fingerprint, without what
        changes nothing on ``bundle`` (``latents`` where its codec has no posterior), and ``mixed_precision: auto``
        resolved where it trains in low precision on ``device`` (a GPU's bf16 artifact is not a CPU's fp32 one; fp32
        keeps the spec's value, so the keys made before stay valid). What else decides the weights joins it only
        where it differs from what the first keys assumed: the base model's dtype where it is not float32, and on a
        CPU the thread count (its kernels split their sums by thread; GPU keys of float32 bases are unchanged)."""
        from ..train.loop import resolve_precision

        spec = dict(to_plain(self.training_spec()))
        train = dict(spec.get("train") or {})
        cfg = self.recipe()
        device = torch.device(device)
        precision = resolve_precision(cfg, device)
        if precision != "no":
            train["mixed_precision"] = precision
        dtype = base_dtype(bundle)
        if dtype != "float32":
            train["dtype"] = dtype
        threads = cpu_threads(device.type)
        if threads is not None:
            train["threads"] = threads
        check_source_options(cfg)
        train["data"] = data_fingerprint(cfg.data, image_column=cfg.image_column, caption_column=cfg.caption_column)
        for key in NOT_IN_KEY + (() if bundle.codec.stochastic else ("latents",)):
            train.pop(key, None)
        spec["train"] = train
        return spec

    def recipe(self) -> MethodTrainConfig:
        cfg = getattr(self.params, "train", None)
        if not isinstance(cfg, MethodTrainConfig):
            raise UsageError(f"method {self.name}: its parameters have no training recipe (train:)")
        return cfg

    def artifact_location(self, bundle: ModelBundle, ctx: MethodContext) -> tuple[str, Path]:
        key = artifact_key(self.artifact_kind, self.keyed_spec(bundle, ctx.device), bundle.fingerprint)
        return key, artifact_dir(ctx.artifacts_dir, self.artifact_kind, key)

    def save(self, prepared: Prepared, bundle: ModelBundle, ctx: MethodContext, **meta) -> str:
        """Write ``prepared``'s trained weights as this spec's artifact; returns its sha256."""
        key, directory = self.artifact_location(bundle, ctx)
        manifest = {"kind": self.artifact_kind, "method": self.name, "key": key, "base": bundle.fingerprint,
                    "spec": self.keyed_spec(bundle, ctx.device), **meta}
        return save_artifact(directory, prepared.artifact_state(), manifest)

    # ---- prepare: load, or train on demand
    def prepare(self, bundle: ModelBundle, ctx: MethodContext) -> Prepared:
        key, directory = self.artifact_location(bundle, ctx)
        trained: Optional[dict[str, Any]] = None
        if ctx.train == "force" or not has_artifact(directory):
            command = train_command(self.name, ctx.model_name, self.recipe().data, bundle, ctx.device)
            if ctx.train == "never":
                raise missing_artifact_error(self.name, directory, command)
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every process would train the same artifact
                raise UsageError(f"{self.name}: its artifact is missing ({directory}); train it once with `{command}` "
                                 "(plus the same method.KEY=VALUE overrides) before a multi-process run (on-demand "
                                 "training runs in single-process runs only)")
            trained = train_artifact(self, bundle, ctx, fresh=ctx.train == "force")
        prepared = self.build(bundle, ctx)
        tensors, meta, digest = load_artifact(directory)
        prepared.load_artifact_state(tensors)
        prepared.artifact = digest
        prepared.info["artifact_key"] = key
        prepared.info["training"] = {k: meta.get(k) for k in ("steps", "data", "deviations", "device", "precision",
                                                              "dtype", "threads") if k in meta}
        if trained is not None:
            prepared.info["training"]["trained_now_s"] = trained["wall_s"]
        return prepared


# --------------------------------------------------------------------------- training


def deviations(method: TrainableMethod, cfg: MethodTrainConfig) -> list[str]:
    """How this recipe departs from what the released code did (recorded with the artifact)."""
    out = []
    if method.released_grad_clip is None and cfg.grad_clip:
        out.append(f"grad_clip={cfg.grad_clip}: the released script's clipping clipped nothing (exhausted "
                   "parameter iterator, method.md §8.16)")
    if method.released_grad_clip is not None and not cfg.grad_clip:
        out.append(f"grad_clip off: the released script clipped at {method.released_grad_clip}")
    if cfg.latents == "mean":
        out.append("latents=mean: VAE posterior means (the released scripts train on posterior samples)")
    if cfg.optimizer == "adamw":
        out.append("torch AdamW (the released scripts: bitsandbytes AdamW8bit)")
    return out


def train_artifact(method: TrainableMethod, bundle: ModelBundle, ctx: MethodContext, *, fresh: bool = False,
                   stop_at: Optional[int] = None) -> dict[str, Any]:
    """Train ``method``'s artifact with its recipe and save it; returns what happened.

    ``fresh`` discards an existing artifact and checkpoints first (``train=force``); otherwise an interrupted
    training resumes from its latest checkpoint. ``stop_at`` ends after that step as if killed there (nothing is
    saved but the checkpoints; tests).
    """
    from ..train.loop import resolve_precision, train

    cfg = method.recipe()
    key, directory = method.artifact_location(bundle, ctx)
    work = directory / TRAIN_DIR
    if fresh:
        for name in ("meta.json", "weights.safetensors"):
            (directory / name).unlink(missing_ok=True)
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
    if cfg.data is None:
        raise UsageError(f"{method.name} needs training data to train its artifact: set method.train.data=PATH "
                         "(a folder of images + captions or a .parquet file; the paper used fantasyfish/laion-art) "
                         "or method.train.data=micro / micro-art in the micro world (`mubench train` also takes "
                         "data=... for short); the same method.train.data= is then needed in `mubench run` and "
                         "`mubench masks`, as it is part of the artifact's address")
    resolution = int(cfg.resolution or bundle.resolution)
    if resolution != bundle.resolution:
        warnings.warn(f"{method.name} trains at {resolution}² but {bundle.name} samples at {bundle.resolution}² "
                      f"(method.train.resolution={resolution}); method.train.resolution=null trains at the model's own",
                      stacklevel=2)
    data = open_data(cfg.data, batch_size=cfg.batch_size, seed=cfg.seed, resolution=resolution,
                     center_crop=cfg.center_crop, random_flip=cfg.random_flip, image_column=cfg.image_column,
                     caption_column=cfg.caption_column)
    prepared = method.build(bundle, ctx)
    module = prepared.denoiser
    params = list(prepared.trainable_parameters())
    dtypes = [p.dtype for p in params]
    with torch.no_grad():  # the optimizer works on fp32 weights; autocast runs the frozen rest in low precision
        for p in params:
            if p.dtype in (torch.float16, torch.bfloat16):
                p.data = p.data.float()
    if cfg.gradient_checkpointing:
        if not hasattr(module, "enable_gradient_checkpointing"):
            raise UsageError(f"{method.name}: this denoiser has no gradient checkpointing")
        module.enable_gradient_checkpointing()
    progress = ctx.progress  # the run's progress bars: training gets a "train:<method>" bar among them
    on_step = None
    if progress is not None:
        stage = f"train:{method.name}"
        started: list[int] = []

        def on_step(done: int) -> None:
            if not started:  # the first step after a resume tells how many are left
                progress.start(stage, cfg.steps - done + 1)
                started.append(done)
            progress.advance(stage, 1)

    loss_fn = DiffusionFinetuneLoss(bundle, cfg)
    t0 = time.time()
    result = train(module, loss_fn, data.source, cfg, out_dir=work, resume=True,
                   show_progress=ctx.show_progress and progress is None, stop_at=stop_at, device=ctx.device,
                   description=f"train {method.name}", on_step=on_step)
    if cfg.gradient_checkpointing:
        module.disable_gradient_checkpointing()
    module.eval()
    outcome = {"method": method.name, "key": key, "directory": str(directory), "steps": result.step,
               "target_steps": cfg.steps, "resumed_from": result.resumed_from, "final_loss": result.final_loss(),
               "wall_s": round(time.time() - t0, 1), "saved": False}
    if result.step < cfg.steps:
        return outcome
    if result.ema is not None:
        result.ema.copy_to(params)
    with torch.no_grad():
        for p, dt in zip(params, dtypes):
            p.data = p.data.to(dt)
    precision = resolve_precision(cfg, torch.device(ctx.device))
    meta = {"steps": result.step, "data": data.describe(), "losses": result.losses, "final_loss": result.final_loss(),
            "wall_s": outcome["wall_s"], "resumed_from": result.resumed_from, "device": str(ctx.device),
            "precision": precision, "dtype": base_dtype(bundle), "threads": cpu_threads(torch.device(ctx.device).type),
            "prediction_type": loss_fn.prediction_type,
            "deviations": deviations(method, cfg), "trainable_params": result.trainable_params,
            "weights": "ema" if result.ema is not None else "raw"}
    outcome["sha256"] = method.save(prepared, bundle, ctx, **meta)
    outcome["saved"] = True
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    return outcome


__all__ = ["MethodTrainConfig", "TrainableMethod", "DiffusionFinetuneLoss", "train_artifact", "deviations",
           "missing_artifact_error", "train_command", "data_fingerprint", "open_data", "base_dtype"]
