"""The diffusion fine-tuning loss every trainable method trains with (:class:`DiffusionFinetuneLoss`)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.base import ModelBundle
from .train_recipe import MethodTrainConfig


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


__all__ = ["DiffusionFinetuneLoss"]
