"""Where they differ": pair two runs' per-image records and order prompts by the paired difference.

A run's per-image records (``Store.samples(run_id)`` or a run folder's ``samples.jsonl``) carry ``scores``:
``{scorer: {field: value}}``. Every numeric (or boolean) field is a per-image metric, named
``SCORER.FIELD`` (``clip.clip``, ``oracle.correct``, ``oracle.binding_score``). Two runs are paired by
``(prompt_id, image_index)``: with per-image seed streams the same pair saw the same initial noise, so the
difference isolates the method. ``difference = other - baseline``: positive is a win of the other method
(every per-image metric mubench stores is higher-is-better; ``higher_is_better=False`` flips the sign).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from ..errors import UsageError, close_matches, did_you_mean

#: The per-image metric ``differ_by`` falls back to: the first of these both runs have, else the first shared one.
PREFERRED = ("oracle.correct", "oracle.binding_score", "blip-vqa.score", "geneval.correct", "clip.clip",
             "micro-clip.cos", "clip.score")
#: Count-like fields that are facts about an image, not a quality score.
NOT_METRICS = ("n_objects",)


def score_leaves(sample: dict[str, Any]) -> dict[str, float]:
    """``{"SCORER.FIELD": value}`` for every numeric or boolean per-image score field (bool → 0/1)."""
    out: dict[str, float] = {}
    for scorer, result in sorted((sample.get("scores") or {}).items()):
        if not isinstance(result, dict):
            continue
        for field, value in sorted(result.items()):
            if field in NOT_METRICS or isinstance(value, (str, list, dict)) or value is None:
                continue
            if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
                out[f"{scorer}.{field}"] = float(value)
    return out


def category(prompt_id: str) -> str:
    """The task / category of a prompt: the part of its id before the first ``/`` (``color/0003`` → ``color``)."""
    return prompt_id.split("/", 1)[0] if "/" in prompt_id else "all"


def pair_samples(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """Records of ``a`` and ``b`` with the same ``(prompt_id, image_index)``, in ``a``'s order."""
    index = {(str(s["prompt_id"]), int(s["image_index"])): s for s in b}
    pairs = []
    for s in a:
        other = index.get((str(s["prompt_id"]), int(s["image_index"])))
        if other is not None:
            pairs.append((s, other))
    return pairs


def shared_metrics(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> list[str]:
    """Per-image metrics present in at least one record of both runs, sorted."""
    def names(samples: Iterable[dict[str, Any]]) -> set[str]:
        found: set[str] = set()
        for s in samples:
            found.update(score_leaves(s))
        return found
    return sorted(names(a) & names(b))


def default_metric(available: Sequence[str]) -> Optional[str]:
    for name in PREFERRED:
        if name in available:
            return name
    return available[0] if available else None


@dataclass
class Difference:
    """One paired image: the baseline's and the other method's value and ``other - baseline``."""

    prompt_id: str
    image_index: int
    prompt: str
    baseline: dict[str, Any]
    other: dict[str, Any]
    baseline_value: float
    other_value: float
    difference: float

    @property
    def category(self) -> str:
        return category(self.prompt_id)


def differences(baseline: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]], metric: str,
                higher_is_better: bool = True) -> list[Difference]:
    """Paired differences on ``metric``, largest win of ``other`` first, largest loss last.

    Pairs where either record lacks the metric are left out; ties keep (prompt_id, image_index) order.
    """
    out = []
    for a, b in pair_samples(baseline, other):
        va, vb = score_leaves(a).get(metric), score_leaves(b).get(metric)
        if va is None or vb is None:
            continue
        diff = (vb - va) if higher_is_better else (va - vb)
        out.append(Difference(str(a["prompt_id"]), int(a["image_index"]), str(a.get("prompt", "")), a, b,
                              va, vb, diff))
    out.sort(key=lambda d: (d.prompt_id, d.image_index))
    out.sort(key=lambda d: -d.difference)  # stable: ties stay in id order
    return out


def wins_and_losses(diffs: Sequence[Difference], k: int) -> tuple[list[Difference], list[Difference]]:
    """The ``k`` largest wins (difference > 0, largest first) and losses (< 0, most negative first)."""
    wins = [d for d in diffs if d.difference > 0][:k]
    losses = sorted((d for d in diffs if d.difference < 0), key=lambda d: d.difference)[:k]
    return wins, losses


def check_metric(metric: Optional[str], available: Sequence[str], where: str) -> str:
    """``metric`` if both runs have it (else the default); a clear UsageError when it is unknown."""
    if metric is None:
        chosen = default_metric(available)
        if chosen is None:
            raise UsageError(f"{where}: the runs share no per-image numeric score to compare")
        return chosen
    if metric not in available:
        msg = (f"{where}: differ_by={metric!r} is not a per-image score of both runs"
               f"{did_you_mean(close_matches(metric, list(available)))}")
        raise UsageError(msg + f"\n  per-image scores: {', '.join(available) or '(none)'}")
    return metric
