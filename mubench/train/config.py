"""The trainer's typed configuration."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from ..errors import UsageError

OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("auto", "no", "fp16", "bf16")


@dataclass
class TrainConfig:
    """One training run of "whatever parameters require grad" of a module.

    ``steps`` optimizer steps of ``batch_size`` examples each; the learning rate warms up linearly
    over ``warmup`` steps and then stays constant (``lr_schedule="constant"``) or follows a cosine
    decay to ``min_lr_ratio * lr`` (``"cosine"``). ``grad_clip`` clips the global gradient norm of
    the trainable parameters (None or 0 = off). ``ema_decay`` keeps an exponential moving average of
    the trainable parameters (with the usual ``(1 + s) / (10 + s)`` warm-up; None = off).
    ``checkpoint_every`` writes a resumable checkpoint every N steps (0 = never).
    ``mixed_precision``: ``auto`` = fp32 on CPU, bf16 (or fp16) autocast on a GPU.
    """

    steps: int = 1000
    lr: float = 1e-4
    batch_size: int = 32
    warmup: int = 0
    weight_decay: float = 0.0
    grad_clip: Optional[float] = 1.0
    ema_decay: Optional[float] = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    seed: int = 0
    log_every: int = 50
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.1
    mixed_precision: str = "auto"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if self.steps < 0:
            raise UsageError(f"train.steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            raise UsageError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise UsageError(f"train.lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"train.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.mixed_precision not in PRECISIONS:
            raise UsageError(f"train.mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise UsageError(f"train.lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise UsageError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")

    def lr_factor(self, step: int) -> float:
        """Multiplier of ``lr`` for the optimizer step with index ``step`` (0-based)."""
        import math

        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        if self.lr_schedule == "cosine" and self.steps > self.warmup:
            progress = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d
