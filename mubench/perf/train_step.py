"""One optimiser step of a method's training, and of a full fine-tune on the same batch, as timed callables.

A step is what mubench's trainer does per batch: the diffusion loss (uniform timestep, Gaussian noise, the model's
prediction type; :func:`mubench.train.diffusion.diffusion_loss`) through the denoiser exactly as the sampler calls it,
backward, and an AdamW step on the trainable parameters. Both sides use the same precomputed batch (latents and text
conditioning) and redraw the same timesteps and noise on every call. On a GPU with a half-precision run, trainable
parameters are kept in fp32 and the forward runs under autocast, as in the trainer.

The full fine-tune reference is a deep copy of the base denoiser with every parameter trainable (the base model is
never touched); its optimizer state is allocated at the first (warm-up) step.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..models.base import Conditioning, ModelBundle


@dataclass
class TrainBatch:
    x0: torch.Tensor  # [B, C, h, w] clean latents
    cond: Conditioning  # text (or class) conditioning of the batch
    seed: int


def make_batch(bundle: ModelBundle, prompts: list[Any], resolution: int, seed: int) -> TrainBatch:
    """A fixed batch: seeded random latents of the model's latent shape and the prompts' conditioning."""
    param = next(bundle.denoiser.parameters())
    gen = torch.Generator().manual_seed(seed)
    shape = bundle.codec.latent_shape(resolution, resolution)
    x0 = torch.randn((len(prompts), *shape), generator=gen).to(param.device, param.dtype)
    with torch.no_grad():
        cond = bundle.conditioner.encode(prompts)
    return TrainBatch(x0, cond, seed)


def step_fn(bundle: ModelBundle, module: nn.Module, params: list[nn.Parameter], batch: TrainBatch,
            lr: float = 1e-5) -> Callable[[], float]:
    """A callable doing one training step of ``module`` on ``batch`` (returns the loss)."""
    from diffusers import DDPMScheduler

    from ..sampler import call_denoiser
    from ..train.diffusion import diffusion_loss

    if not params:
        raise ValueError("no trainable parameters")
    device = batch.x0.device
    half = batch.x0.dtype in (torch.float16, torch.bfloat16)
    with torch.no_grad():
        for p in params:  # fp32 master weights, as the trainer keeps them
            if p.dtype != torch.float32:
                p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=lr)
    alphas = DDPMScheduler.from_config(bundle.scheduler_config).alphas_cumprod.clone()
    prediction_type = bundle.scheduler_config.get("prediction_type", "epsilon")
    gen = torch.Generator()

    def step() -> float:
        gen.manual_seed(batch.seed)
        module.train()
        with torch.autocast(device.type, dtype=batch.x0.dtype, enabled=half and device.type == "cuda"):
            loss = diffusion_loss(lambda xt, t: call_denoiser(bundle, module, xt, t, batch.cond), batch.x0, alphas,
                                  gen, prediction_type=prediction_type)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        module.eval()
        return float(loss.detach())

    return step


def full_finetune_copy(bundle: ModelBundle) -> tuple[nn.Module, list[nn.Parameter]]:
    """A deep copy of the base denoiser with every parameter trainable (the full fine-tune reference)."""
    module = copy.deepcopy(bundle.denoiser)
    module.requires_grad_(True)
    return module, list(module.parameters())
