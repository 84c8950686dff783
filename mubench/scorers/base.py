"""The scorer plug-in contract.

A scorer reads generated images (always decoded from the stored PNG, so a resumed run scores the
same pixels) and returns one dict per image: floats, strings, booleans or numpy feature arrays.
Per-image results are cached by (sample key, scorer name, version, weights hash); suites aggregate
them into metrics. Scorers never download: real weights come from local files.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..suites.base import PromptItem


@dataclass
class ScorerContext:
    device: torch.device
    dtype: torch.dtype = torch.float32
    weights: str = "pretrained"  # pretrained | random (tests)


class Scorer(ABC):
    Params: ClassVar[type]
    version: ClassVar[str] = "1"

    def __init__(self, params: Any, ctx: ScorerContext, name: str) -> None:
        self.params = params
        self.ctx = ctx
        self.name = name

    def weights_hash(self) -> str:
        """Hash of the weights this scorer uses ("" when it has none)."""
        return ""

    def describe(self) -> dict[str, Any]:
        """Protocol record: backbone, resolution, weights hash..."""
        return {"version": self.version, "weights_hash": self.weights_hash()}

    @abstractmethod
    def score(self, images: torch.Tensor, items: list[PromptItem]) -> list[dict[str, Any]]:
        """``images``: float [B,3,H,W] in [0,1] on the scorer's device; one ``items`` entry per image."""
