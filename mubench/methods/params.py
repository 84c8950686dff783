"""The built-in methods' parameters (``method.KEY=VALUE``): plain dataclasses and the names their options take.

They live apart from the methods, which import torch, so that a configuration is resolved and checked before torch
is imported (a mistyped ``method.ratio=`` is told in a fraction of a second). Each method class points at its
dataclass (``Params``) and the registry entry names it too (:meth:`mubench.registry.Registry.params`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .train_recipe import MethodTrainConfig

#: the layer sets a masking method may name; which apply depends on the denoiser (a UNet: the first three;
#: a transformer: :data:`TRANSFORMER_LAYER_SETS`, see :mod:`.transformer_layers`)
UNET_LAYER_SETS = ("decoder-attn", "decoder-attn+conv", "all")
TRANSFORMER_LAYER_SETS = ("decoder-attn", "decoder-self-attn", "decoder-cross-attn", "decoder-attn+ff",
                          "encoder-attn", "all-attn", "all")
LAYER_SETS = UNET_LAYER_SETS + tuple(s for s in TRANSFORMER_LAYER_SETS if s not in UNET_LAYER_SETS)
MODES = ("conditional", "faithful")
MASK_SCOPES = ("row", "image")
NOISES = ("stream", "counter")
KERNELS = ("torch", "triton")
RESAMPLE = ("step", "image")
INITS = ("gaussian", "default")
DROPOUT_SITES = ("resnet", "attention", "feedforward")


@dataclass
class SDParams:
    pass

@dataclass
class RandomMaskParams:
    ratio: float = 0.5  # fraction of the masked layers' weights zeroed (each independently)
    resample: str = "step"  # step: new masks every denoising step | image: one mask per image for all steps
    layers: str = "decoder-attn"  # decoder-attn | decoder-attn+conv | all

    def validate(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {self.ratio}")
        if self.resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLE)}, got {self.resample!r}")
        if self.layers not in LAYER_SETS:
            raise ValueError(f"layers must be one of {', '.join(LAYER_SETS)}, got {self.layers!r}")

@dataclass
class MaskUNetParams:
    mode: str = "conditional"  # conditional (the generator learns) | faithful (the released code)
    layers: str = "decoder-attn"  # decoder-attn | decoder-attn+conv | all
    factor: int = 4  # grid = (out_ch / factor) x (in_ch / factor)
    hidden: int = 64  # generator hidden width
    adapter_bias: float = 5.0  # initial logit of every weight
    init_std: float = 1e-3  # conditional mode: std of the last generator conv's initial weights
    tau: float = 1.0  # Gumbel-sigmoid temperature (shapes the straight-through gradient only)
    deterministic: bool = False  # sampling: mask = logit > 0 instead of a Gumbel draw (inference only)
    # sampling: row = every denoiser row its own mask (released) | image = both CFG rows of an image use the mask of
    # its conditional row (ours: half the mask work; inference only)
    mask_scope: str = "row"
    # sampling: stream = each image's noise drawn from a generator seeded from its stream (the masks of every number
    # so far) | counter = Philox keyed by (image stream and call, layer, weight index, row slot): the same masks on
    # any device and tiling, drawn inside a fused kernel (mubench/kernels; inference only)
    noise: str = "stream"
    # sampling: torch = tensor operations | triton = the fused masked-weights kernel (CUDA, or TRITON_INTERPRET=1;
    # needs noise=counter unless deterministic; inference only)
    kernel: str = "torch"
    train: MethodTrainConfig = field(default_factory=MethodTrainConfig)  # the training recipe

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.layers not in LAYER_SETS:
            raise ValueError(f"layers must be one of {', '.join(LAYER_SETS)}, got {self.layers!r}")
        if self.factor < 1 or self.hidden < 1:
            raise ValueError("factor and hidden must be >= 1")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.mask_scope not in MASK_SCOPES:
            raise ValueError(f"mask_scope must be one of {', '.join(MASK_SCOPES)}, got {self.mask_scope!r}")
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {', '.join(NOISES)}, got {self.noise!r}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {self.kernel!r}")
        if self.kernel == "triton" and self.noise != "counter" and not self.deterministic:
            raise ValueError("kernel=triton draws the mask noise inside the kernel: it needs noise=counter "
                             "(or deterministic=true)")

    def training_spec(self) -> dict:
        """What decides the trained weights (inference-only options left out)."""
        spec = asdict(self)
        spec.pop("deterministic")
        for key in ("mask_scope", "noise", "kernel"):
            spec.pop(key)
        return spec

@dataclass
class LoRAParams:
    r: int = 256  # rank
    alpha: float = 512.0  # scale = alpha / r
    dropout: float = 0.0  # LoRA dropout (training only)
    init: str = "gaussian"  # gaussian (paper) | default (peft's kaiming-uniform A)
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    merge: bool = True  # sampling: fold B·A·scale into the weights once per run (false: separate factor matmuls)
    train: MethodTrainConfig = field(default_factory=MethodTrainConfig)  # the training recipe

    def validate(self) -> None:
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if not self.targets:
            raise ValueError("targets must name at least one module")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def training_spec(self) -> dict:
        spec = asdict(self)
        spec.pop("merge")  # inference only: merged and unmerged runs share one trained artifact
        return spec

@dataclass
class FullFTParams:
    dropout: float = 0.0  # dropout probability at ``dropout_at`` during training (0: plain full fine-tuning)
    dropout_at: list[str] = field(default_factory=lambda: ["resnet", "attention"])
    train: MethodTrainConfig = field(default_factory=MethodTrainConfig)  # the training recipe

    def validate(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        bad = [s for s in self.dropout_at if s not in DROPOUT_SITES]
        if bad:
            raise ValueError(f"dropout_at: unknown site {bad[0]!r}; expected some of {', '.join(DROPOUT_SITES)}")

    def training_spec(self) -> dict:
        spec = asdict(self)
        if not self.dropout:  # where dropout would go does not matter when there is none
            spec.pop("dropout_at")
        return spec

@dataclass
class RewardTerm:
    """One term of the loss: ``weight · h(target − reward)``, ``h`` = ReLU when ``hinge`` else the identity."""

    scorer: str = "hpsv2"  # a registered reward scorer
    weight: float = 1.0
    target: float = 1.0
    hinge: bool = False
    params: dict[str, Any] = field(default_factory=dict)  # the scorer's parameters (e.g. checkpoint: PATH)

def _paper_rewards() -> list[RewardTerm]:
    return [RewardTerm("imagereward", 1.0, 2.0, True), RewardTerm("hpsv2", 5.0, 1.0, False)]

@dataclass
class FreeSamplerParams:
    """The method's own sampling protocol (None: the suite's setting)."""

    scheduler: Optional[str] = "dpmsolver++1"
    steps: Optional[int] = 15

@dataclass
class MaskUNetFreeParams:
    layers: str = "decoder-attn"  # decoder-attn | decoder-attn+conv | all
    init_logit: float = 1.0  # logits start here at every step (P(keep) = 1 − exp(−e) ≈ 0.934)
    lr: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    early_steps: int = 7  # steps with ``early_updates`` updates (the first 7 of 15)
    early_updates: int = 1
    late_updates: int = 10
    final_update: bool = True  # take the K-th update too (released; it only moves AdamW's moments)
    reuse_unmasked: bool = True  # replay the denoiser's unmasked front across a step's inner updates (same outputs)
    tau: float = 1.0  # Gumbel-sigmoid temperature (straight-through gradient)
    rewards: list[RewardTerm] = field(default_factory=_paper_rewards)
    sampler: FreeSamplerParams = field(default_factory=FreeSamplerParams)

    def validate(self) -> None:
        if self.layers not in LAYER_SETS:
            raise ValueError(f"layers must be one of {', '.join(LAYER_SETS)}, got {self.layers!r}")
        if self.early_updates < 1 or self.late_updates < 1:
            raise ValueError("early_updates and late_updates must be >= 1")
        if self.early_steps < 0:
            raise ValueError(f"early_steps must be >= 0, got {self.early_steps}")
        if self.lr <= 0 or self.tau <= 0:
            raise ValueError("lr and tau must be > 0")
        if not self.rewards:
            raise ValueError("rewards must name at least one reward scorer")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
