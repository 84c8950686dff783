"""The side-by-side gallery and the "where they differ" lists, as plain data for the page.

Gallery: one row per (prompt, image index) of a suite, one column per run, each cell the image (from an
:class:`ImageFolder`) with its per-image scores and the pass/fail of the suite's rule score (a boolean per-image
field such as ``oracle.correct``). Differ: for ``baseline=A``, each other run's paired differences
(:mod:`.differ`), the largest wins and losses with both images.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ..errors import UsageError
from .differ import category, check_metric, differences, score_leaves, shared_metrics, wins_and_losses
from .images import ImageFolder
from .runs import RunView

RULE_PREFERRED = ("oracle.correct", "geneval.correct", "correct")


def rule_field(views: Sequence[RunView]) -> Optional[str]:
    """The boolean per-image field the pass/fail filter uses (``oracle.correct`` when present)."""
    found: list[str] = []
    for v in views:
        for s in v.samples[:50]:
            for scorer, res in (s.get("scores") or {}).items():
                for k, val in (res.items() if isinstance(res, dict) else ()):
                    if isinstance(val, bool) and f"{scorer}.{k}" not in found:
                        found.append(f"{scorer}.{k}")
    for name in RULE_PREFERRED:
        if name in found:
            return name
    return found[0] if found else None


def _score_items(sample: dict[str, Any]) -> list[list[str]]:
    out = []
    for name, value in score_leaves(sample).items():
        raw = sample["scores"][name.split(".", 1)[0]][name.split(".", 1)[1]]
        out.append([name, ("✓" if raw else "✗") if isinstance(raw, bool) else f"{value:.3f}"])
    return out


def _reason(sample: dict[str, Any]) -> str:
    return "; ".join(str(res[k]) for res in (sample.get("scores") or {}).values() if isinstance(res, dict)
                     for k in ("reason", "binding_reason") if res.get(k))


def _cell(sample: Optional[dict[str, Any]], images: ImageFolder, rule: Optional[str]) -> dict[str, Any]:
    if sample is None:
        return {"img": None, "missing": "not in this run", "scores": [], "pass": None, "reason": ""}
    img = images.add(sample.get("path"), sample.get("sha256"))
    passed = None
    if rule:
        scorer, _, fld = rule.partition(".")
        val = (sample.get("scores") or {}).get(scorer, {}).get(fld)
        passed = bool(val) if isinstance(val, bool) else None
    return {"img": img, "missing": "" if img else "image file not found", "scores": _score_items(sample),
            "pass": passed, "reason": _reason(sample)}


def gallery_rows(views: Sequence[RunView], images: ImageFolder, rule: Optional[str]) -> list[dict[str, Any]]:
    """One dict per (prompt_id, image_index) over all runs: prompt, category, seed, one cell per run."""
    index = [{(str(s["prompt_id"]), int(s["image_index"])): s for s in v.samples} for v in views]
    keys = sorted({k for idx in index for k in idx})
    rows = []
    for pid, j in keys:
        first = next(idx[(pid, j)] for idx in index if (pid, j) in idx)
        seeds = {str(idx[(pid, j)].get("seed")) for idx in index if (pid, j) in idx}
        rows.append({"id": pid, "index": j, "prompt": str(first.get("prompt", "")), "category": category(pid),
                     "seed": "/".join(sorted(seeds)),
                     "cells": [_cell(idx.get((pid, j)), images, rule) for idx in index]})
    return rows


def differ_sections(views: Sequence[RunView], baseline: str, metric: Optional[str], images: ImageFolder,
                    top: int) -> tuple[str, list[dict[str, Any]]]:
    """The chosen per-image metric and, per other run, the summary and the largest wins and losses."""
    base = [v for v in views if v.method == baseline]
    if not base:
        raise UsageError(f"baseline={baseline!r} has no run in this report; methods: "
                         f"{', '.join(sorted({v.method for v in views}))}")
    a = base[0]
    others = [v for v in views if v is not a and v.samples]
    if not a.samples or not others:
        return metric or "", []
    available = sorted(set.intersection(*[set(shared_metrics(a.samples, o.samples)) for o in others]))
    chosen = check_metric(metric, available, "report --html")
    sections = []
    for o in others:
        diffs = differences(a.samples, o.samples, chosen)
        wins, losses = wins_and_losses(diffs, top)

        def item(d):
            return {"id": d.prompt_id, "index": d.image_index, "prompt": d.prompt, "category": d.category,
                    "seed": d.baseline.get("seed"), "a": d.baseline_value, "b": d.other_value,
                    "diff": d.difference, "img_a": images.add(d.baseline.get("path"), d.baseline.get("sha256")),
                    "img_b": images.add(d.other.get("path"), d.other.get("sha256"))}
        n = len(diffs)
        sections.append({"label": o.label, "baseline": a.label, "n": n,
                         "n_wins": sum(d.difference > 0 for d in diffs), "n_losses": sum(d.difference < 0 for d in diffs),
                         "mean": (sum(d.difference for d in diffs) / n) if n else None,
                         "wins": [item(d) for d in wins], "losses": [item(d) for d in losses]})
    return chosen, sections
