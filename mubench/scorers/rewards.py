"""Reward scorers: scorers whose per-image score is a *differentiable* reward (for training-free mask optimisation).

A reward scorer implements ``reward(images, prompts) -> Tensor[B]`` on float images ``[B, 3, H, W]`` in [0, 1]
that may require grad; its weights are frozen and its own preprocessing is differentiable, so gradients flow back
to the images (and through the decoder to whatever produced them). As a plain scorer it reports that reward per
image under ``reward`` (computed without gradients).

Registered reward scorers: ``hpsv2`` (:mod:`.hpsv2`), ``imagereward`` (:mod:`.image_reward`) and, in the micro
world, ``micro-clip`` (its ``reward`` is the raw image–caption cosine).
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F

from ..suites.base import PromptItem
from .base import Scorer

# OpenAI CLIP normalisation (HPSv2 and ImageReward both use it)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PRECISIONS = ("auto", "float32", "float16", "bfloat16")


def clip_preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """Differentiable Resize(size, bicubic, shorter side) → CenterCrop(size) → Normalize(CLIP mean/std).

    This is what the released training-free code applies to the decoded predicted x0 before both rewards
    (method.md §4.3); antialiasing as torchvision's tensor ``Resize`` does by default.
    """
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = images
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=scale < 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class RewardScorer(Scorer):
    """A scorer with a differentiable ``reward``; ``score`` reports it per image as ``reward``."""

    @abstractmethod
    def reward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Rewards ``[B]`` (float32) of ``images`` (float [B,3,H,W] in [0,1], may require grad) for ``prompts``."""

    def score(self, images: torch.Tensor, items: list[PromptItem]) -> list[dict[str, Any]]:
        with torch.no_grad():
            r = self.reward(images, [str(it.prompt) for it in items])
        return [{"reward": float(v)} for v in r.float().cpu()]
