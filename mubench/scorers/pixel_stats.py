"""``pixel-stats``: per-image mean colour and contrast. Needs no weights; used by the ``toy`` suite in tests."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..suites.base import PromptItem
from .base import Scorer


@dataclass
class PixelStatsParams:
    pass


class PixelStats(Scorer):
    Params = PixelStatsParams
    version = "1"

    def score(self, images: torch.Tensor, items: list[PromptItem]) -> list[dict[str, Any]]:
        out = []
        for img in images:
            x = img.double()
            out.append({
                "brightness": float(x.mean()),
                "contrast": float(x.std()),
                "redness": float(x[0].mean() - x[1:].mean()),
                "features": x.mean(dim=(1, 2)).numpy().astype(np.float64),
            })
        return out
