"""Training a method's artifact: the one place every trainable method (full-ft, dropout, lora, maskunet) goes through.

:class:`TrainableMethod` gives a method kind ``prepare`` / ``artifact_location`` / ``save`` on top of its ``build``:

- ``prepare(bundle, ctx)`` looks for the content-addressed artifact and, by ``ctx.train``: ``auto`` trains it on
  demand when it is missing (resuming an interrupted training from its latest checkpoint), ``never`` fails with a
  message saying how to train it, ``force`` retrains it from scratch. Then it loads the artifact.
- The artifact's address hashes the method kind, its training-relevant parameters (the ``train`` recipe included,
  with its ``seed``), a content fingerprint of the training data and the base model's weight fingerprint, plus the
  base's dtype where it is not float32 and, on a CPU, the thread count (:meth:`TrainableMethod.keyed_spec`).
- :func:`train_artifact` runs the recipe (``method.params.train``, a :class:`MethodTrainConfig`) with mubench's one
  trainer loop (:func:`mubench.train.loop.train`): only what is trainable differs between methods
  (``prepared.trainable_parameters()``). The loss is the diffusion MSE with the model's prediction type (epsilon for
  SD 1.5 as in the paper, v-prediction for the micro model); trainable parameters are kept in fp32 (mixed precision
  on a GPU autocasts the frozen rest); checkpoints go to ``<artifact>/train/checkpoints`` and are removed once the
  artifact is written (``train.log`` stays).

The recipe and its data live in :mod:`.train_recipe`, the loss in :mod:`.finetune_loss`.
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import torch

from ..cache import cpu_threads
from ..config import to_plain
from ..errors import UsageError
from ..models.base import ModelBundle
from .artifacts import (artifact_dir, artifact_key, base_dtype, has_artifact, load_artifact, missing_artifact_error,
                        save_artifact, train_command)
from .base import Method, MethodContext, Prepared
from .finetune_loss import DiffusionFinetuneLoss
from .train_recipe import MethodTrainConfig, check_source_options, data_fingerprint, open_data

TRAIN_DIR = "train"
# recipe fields that do not change the trained weights (left out of the artifact key)
NOT_IN_KEY = ("checkpoint_every", "keep_checkpoints", "log_every", "gradient_checkpointing")


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
        _discard_artifact(directory)
    data = _open_recipe_data(method, cfg, bundle)
    prepared = method.build(bundle, ctx)
    module = prepared.denoiser
    params = list(prepared.trainable_parameters())
    dtypes = _params_to_fp32(params)
    if cfg.gradient_checkpointing:
        if not hasattr(module, "enable_gradient_checkpointing"):
            raise UsageError(f"{method.name}: this denoiser has no gradient checkpointing")
        module.enable_gradient_checkpointing()
    loss_fn = DiffusionFinetuneLoss(bundle, cfg)
    t0 = time.time()
    result = train(module, loss_fn, data.source, cfg, out_dir=work, resume=True,
                   show_progress=ctx.show_progress and ctx.progress is None, stop_at=stop_at, device=ctx.device,
                   description=f"train {method.name}", on_step=_progress_callback(ctx, method.name, cfg.steps))
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
    meta = {"steps": result.step, "data": data.describe(), "losses": result.losses, "final_loss": result.final_loss(),
            "wall_s": outcome["wall_s"], "resumed_from": result.resumed_from, "device": str(ctx.device),
            "precision": resolve_precision(cfg, torch.device(ctx.device)), "dtype": base_dtype(bundle),
            "threads": cpu_threads(torch.device(ctx.device).type), "prediction_type": loss_fn.prediction_type,
            "deviations": deviations(method, cfg), "trainable_params": result.trainable_params,
            "weights": "ema" if result.ema is not None else "raw"}
    outcome["sha256"] = method.save(prepared, bundle, ctx, **meta)
    outcome["saved"] = True
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    return outcome


def _discard_artifact(directory: Path) -> None:
    """``train=force``: the artifact and the checkpoints of an earlier training go first."""
    for name in ("meta.json", "weights.safetensors"):
        (directory / name).unlink(missing_ok=True)
    shutil.rmtree(directory / TRAIN_DIR / "checkpoints", ignore_errors=True)


def _open_recipe_data(method: TrainableMethod, cfg: MethodTrainConfig, bundle: ModelBundle):
    """The recipe's training data at its resolution; a clear error where none is set, a warning where the
    resolution is not the model's."""
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
                      stacklevel=3)
    return open_data(cfg.data, batch_size=cfg.batch_size, seed=cfg.seed, resolution=resolution,
                     center_crop=cfg.center_crop, random_flip=cfg.random_flip, image_column=cfg.image_column,
                     caption_column=cfg.caption_column)


def _params_to_fp32(params: list[torch.nn.Parameter]) -> list[torch.dtype]:
    """The optimizer works on fp32 weights (autocast runs the frozen rest in low precision): half-precision
    trainable parameters become fp32; returns their dtypes to go back to."""
    dtypes = [p.dtype for p in params]
    with torch.no_grad():
        for p in params:
            if p.dtype in (torch.float16, torch.bfloat16):
                p.data = p.data.float()
    return dtypes


def _progress_callback(ctx: MethodContext, name: str, steps: int) -> Optional[Callable[[int], None]]:
    """The run's progress bars (``ctx.progress``) get a ``train:<method>`` bar; None where there are none."""
    progress = ctx.progress
    if progress is None:
        return None
    stage = f"train:{name}"
    started: list[int] = []

    def on_step(done: int) -> None:
        if not started:  # the first step after a resume tells how many are left
            progress.start(stage, steps - done + 1)
            started.append(done)
        progress.advance(stage, 1)

    return on_step


__all__ = ["TrainableMethod", "train_artifact", "deviations"]
