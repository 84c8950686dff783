"""``toy``: a handful of fixed prompts scored by pixel statistics. Exercises the whole run flow on tiny models."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..metrics.core import Metric, bootstrap_mean
from .base import PromptItem, SampleRecord, SamplerParams, ScorerUse, Suite

TOY_PROMPTS = (
    "a red circle", "a blue square", "a green triangle", "two yellow stars", "a purple cat",
    "an orange house at night", "a photo of a dog", "a striped square",
)


@dataclass
class ToyParams:
    images_per_prompt: int = 2
    prompts: list[str] = field(default_factory=lambda: list(TOY_PROMPTS))
    sampler: SamplerParams = field(default_factory=SamplerParams)


class ToySuite(Suite):
    Params = ToyParams

    def items(self) -> list[PromptItem]:
        return [PromptItem(id=f"toy-{i:03d}", prompt=p) for i, p in enumerate(self.params.prompts)]

    def scorers(self) -> dict[str, ScorerUse]:
        return {"pixels": ScorerUse("pixel-stats")}

    def units(self, records: list[SampleRecord]) -> dict:
        from ..stats.build import mean_units

        if not records:
            return {}
        per = [r.scores["pixels"] for r in records]
        return {k: mean_units(records, [p[k] for p in per]) for k in ("brightness", "contrast", "redness")}

    def aggregate(self, records: list[SampleRecord]) -> dict[str, Metric]:
        groups = [r.item.id for r in records]
        per = [r.scores["pixels"] for r in records]
        feats = np.stack([p["features"] for p in per]) if per else np.zeros((0, 3))
        spread = float(np.linalg.norm(feats - feats.mean(0), axis=1).mean()) if len(per) else float("nan")
        return {
            "brightness": bootstrap_mean([p["brightness"] for p in per], True, groups=groups),
            "contrast": bootstrap_mean([p["contrast"] for p in per], True, groups=groups),
            "redness": bootstrap_mean([p["redness"] for p in per], True, groups=groups),
            "colour_spread": Metric(spread, None, None, len(per), True),
        }

    def protocol(self) -> dict:
        return {"prompts": "built-in toy list"}
