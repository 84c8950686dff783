"""What a model plug-in returns: the parts the shared sampler needs.

A model is registered under a name (``micro``, ``tiny-sd``, ``sd15``...) as a class with a
``Params`` dataclass and a ``load(params, ctx) -> ModelBundle`` classmethod. Loading never
downloads: real models read local folders (or the Hugging Face cache with ``local_files_only``)
and raise :class:`~mubench.errors.AssetError` naming what is missing.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch
from torch import nn


@dataclass
class LoadContext:
    device: torch.device
    dtype: torch.dtype
    weights: str = "pretrained"  # or "random": build from config with seeded random weights


@dataclass
class Conditioning:
    """Denoiser conditioning for a batch: text hidden states (+ mask) or class labels."""

    hidden_states: Optional[torch.Tensor] = None  # [B, L, D] for text-conditional denoisers
    attention_mask: Optional[torch.Tensor] = None  # [B, L] (1 = token, 0 = pad)
    class_labels: Optional[torch.Tensor] = None  # [B] for class-conditional denoisers

    @staticmethod
    def cat(a: "Conditioning", b: "Conditioning") -> "Conditioning":
        def c(x, y):
            return None if x is None else torch.cat([x, y], 0)

        return Conditioning(c(a.hidden_states, b.hidden_states), c(a.attention_mask, b.attention_mask),
                            c(a.class_labels, b.class_labels))


class Conditioner(ABC):
    """Turns prompts (text) or labels (class) into :class:`Conditioning`."""

    @abstractmethod
    def encode(self, prompts: list[Any]) -> Conditioning: ...

    @abstractmethod
    def unconditional(self, n: int) -> Conditioning: ...

    def check_prompts(self, prompts: list[Any]) -> None:
        """Raise UsageError for a prompt this conditioner cannot encode, before any work (text takes anything)."""


class LatentCodec(ABC):
    """Pixels [B,3,H,W] in [0,1] ↔ the denoiser's space. ``latent_shape(h, w)`` gives (C, h', w')."""

    #: True where an image has a distribution of latents (a VAE's posterior), not one: training then chooses
    #: between its mean (``encode``) and a draw (``encode_sample``)
    stochastic: bool = False

    def encode_sample(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One draw of the latents of ``images`` (noise from ``generator``); ``encode`` for deterministic codecs,
        which draw nothing."""
        return self.encode(images)

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]: ...

    def decode_differentiable(self, latents: torch.Tensor) -> torch.Tensor:
        """``decode`` with gradients flowing to ``latents`` (training-free methods optimise through it).
        Codecs whose ``decode`` runs without gradients override this."""
        return self.decode(latents)


@dataclass
class ModelBundle:
    """Everything the sampler, the methods and the trainer need from a base model."""

    name: str
    denoiser: nn.Module  # UNet2DConditionModel / DiT / PixArt transformer (frozen base weights)
    conditioner: Conditioner
    codec: LatentCodec
    scheduler_config: dict[str, Any]  # diffusers scheduler config (num_train_timesteps, betas, prediction_type...)
    resolution: int  # default image side in pixels
    fingerprint: str  # hash of the base weights (or of the config + seed for random weights)
    conditioning_kind: str = "text"  # text | class
    default_sampler: dict[str, Any] = field(default_factory=dict)  # per-model sampler defaults (steps, guidance...)
    extras: dict[str, Any] = field(default_factory=dict)


class Model(ABC):
    """A registered base model."""

    Params: ClassVar[type]

    @classmethod
    @abstractmethod
    def load(cls, params: Any, ctx: LoadContext) -> ModelBundle: ...

    @classmethod
    def image_side(cls, params: Any) -> Optional[int]:
        """The side of the images the model makes by default, known before it loads (the free-space estimate);
        None: not known."""
        side = getattr(params, "resolution", None)
        return int(side) if isinstance(side, int) else None
