"""Suite kind ``micro-art``: the micro world's fine-tuning target domain (:mod:`mubench.micro.art`).

Prompts, tasks and metric names are those of suite ``micro`` (same caption grammar, so the same objects), but it asks
"did the method learn the target domain?":

* ``fid``: Fréchet distance in the base micro-CLIP's feature space (``zoo/micro``: it never saw a dark background,
  so its features keep the style apart) against held-out real **art-style** renders of the same captions, one per
  generated image. (The micro-art micro-CLIP's features were measured first and are nearly style-blind — it is
  trained to match captions in both styles — so a model that kept the base style scored *better* there.)
* ``clip``: raw cosine between image and caption in the micro-art micro-CLIP's space (``zoo/micro-art``, trained
  on both styles: the base micro-CLIP's cosine falls on dark images, so it would misread a method that learned the
  domain as having lost its text alignment);
* the oracle's binding and GenEval-style scores, which read both styles alike.

Suite ``micro`` on the same method is the other side: what fine-tuning cost on the base distribution (forgetting).
"""
from __future__ import annotations

from typing import Any

from ..micro import art as A
from ..stats.build import mean_units
from ..stats.units import UnitData
from .base import PromptItem, SampleRecord, ScorerUse
from .micro import MicroSuite, MicroSuiteParams


class MicroArtSuite(MicroSuite):
    Params = MicroSuiteParams

    def items(self) -> list[PromptItem]:
        return [PromptItem(it.id, it.prompt, {**it.meta, "style": "art"}) for it in super().items()]

    def scorers(self) -> dict[str, ScorerUse]:
        return {"clip": ScorerUse("micro-clip"), "art_clip": ScorerUse("micro-clip", {"world": "micro-art"}),
                "oracle": ScorerUse("micro-oracle")}

    def units(self, records: list[SampleRecord]) -> dict[str, UnitData]:
        """As suite ``micro``'s, with ``clip`` the micro-art micro-CLIP's cosine (``fid`` stays in base features)."""
        out = super().units(records)
        coco = [r for r in records if r.item.meta.get("task") == "coco"]
        if coco:
            out["clip"] = mean_units(coco, [r.scores["art_clip"]["clip"] for r in coco])
        return out

    def protocol(self) -> dict[str, Any]:
        return {**super().protocol(), "world": "micro-art", "style": "art",
                "art_background": {"level": list(A.BG_LEVEL), "tint": [list(t) for t in A.BG_TINT]},
                "fid_features": "micro-clip penultimate image features (zoo/micro, the base micro-CLIP)",
                "clip_score": "raw cosine (micro-art micro-clip)",
                "fid_reference": "held-out real art-style renders of the same captions, one per generated image"}
