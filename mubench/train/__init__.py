"""mubench's trainer core (see :mod:`mubench.train.loop`) and the diffusion loss."""
from __future__ import annotations

from .config import TrainConfig
from .diffusion import diffusion_loss, min_snr_weight
from .ema import EMA
from .loop import BatchSource, IteratorSource, TrainResult, list_checkpoints, train

__all__ = ["TrainConfig", "train", "TrainResult", "BatchSource", "IteratorSource", "EMA", "diffusion_loss",
           "min_snr_weight", "list_checkpoints"]
