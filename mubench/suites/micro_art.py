"""Suite kind ``micro-art``: the micro world's fine-tuning target domain (:mod:`mubench.micro.art`).

Prompts, tasks and metric names are those of suite ``micro`` (same caption grammar, so the same objects), but it asks
"did the method learn the target domain?":

* ``fid``: Fréchet distance in the feature space of the micro-art micro-CLIP (``zoo/micro-art``, trained on both
  styles) against held-out real **art-style** renders of the same captions, one per generated image;
* ``clip``: raw cosine between image and caption in that micro-CLIP's space (the base micro-CLIP never saw a dark
  background and would misread a method that learned the domain);
* the oracle's binding and GenEval-style scores, which read both styles alike.

Suite ``micro`` on the same method is the other side: what fine-tuning cost on the base distribution (forgetting).
"""
from __future__ import annotations

from typing import Any

from ..micro import art as A
from .base import PromptItem, ScorerUse
from .micro import MicroSuite, MicroSuiteParams


class MicroArtSuite(MicroSuite):
    Params = MicroSuiteParams

    def items(self) -> list[PromptItem]:
        return [PromptItem(it.id, it.prompt, {**it.meta, "style": "art"}) for it in super().items()]

    def scorers(self) -> dict[str, ScorerUse]:
        return {"clip": ScorerUse("micro-clip", {"world": "micro-art"}), "oracle": ScorerUse("micro-oracle")}

    def protocol(self) -> dict[str, Any]:
        return {**super().protocol(), "world": "micro-art", "style": "art",
                "art_background": {"level": list(A.BG_LEVEL), "tint": [list(t) for t in A.BG_TINT]},
                "fid_features": "micro-art micro-clip penultimate image features (zoo/micro-art)",
                "clip_score": "raw cosine (micro-art micro-clip)",
                "fid_reference": "held-out real art-style renders of the same captions, one per generated image"}
