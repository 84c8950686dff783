"""Diffusion training loss: uniform timesteps, epsilon or v-prediction targets, optional min-SNR weights."""
from __future__ import annotations

from typing import Callable, Optional

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def snr(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) at integer timesteps ``t``."""
    a = alphas_cumprod.to(t.device)[t].float()
    return a / (1.0 - a)


def min_snr_weight(snr_t: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-γ weights (Hang et al. 2023) for the MSE on the chosen target.

    For an epsilon target the x0-space weight min(SNR, γ) becomes min(SNR, γ) / SNR; for a v target
    it becomes min(SNR, γ) / (SNR + 1); for an x0 target it is min(SNR, γ).
    """
    clipped = torch.clamp(snr_t, max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr_t.clamp(min=1e-8)
    if prediction_type == "v_prediction":
        return clipped / (snr_t + 1.0)
    return clipped


def diffusion_loss(model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                   alphas_cumprod: torch.Tensor, generator: torch.Generator, *,
                   prediction_type: str = "epsilon", min_snr_gamma: Optional[float] = None,
                   timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean (optionally min-SNR weighted) MSE between ``model_fn(x_t, t)`` and the target.

    Timesteps are uniform over ``[0, T)`` and noise is standard normal, both drawn on the CPU from
    ``generator`` (so the loss does not depend on the device), unless ``timesteps`` is given.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    n = x0.shape[0]
    num_t = alphas_cumprod.shape[0]
    if timesteps is None:
        timesteps = torch.randint(0, num_t, (n,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
    t = timesteps.to(x0.device)
    a = alphas_cumprod.to(x0.device)[t].float().view(n, *([1] * (x0.ndim - 1)))
    sa, sb = a.sqrt().to(x0.dtype), (1 - a).sqrt().to(x0.dtype)
    xt = sa * x0 + sb * noise
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = sa * noise - sb * x0
    else:
        target = x0
    pred = model_fn(xt, t).float()
    per_example = ((pred - target.float()) ** 2).mean(dim=tuple(range(1, x0.ndim)))
    if min_snr_gamma is not None:
        per_example = per_example * min_snr_weight(snr(alphas_cumprod, t), min_snr_gamma, prediction_type)
    return per_example.mean()
