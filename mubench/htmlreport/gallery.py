"""The side-by-side gallery and the "where they differ" lists, as plain data for the page.

Gallery: one row per (prompt, image index) of a suite, one column per run, each cell the image (from an
:class:`ImageFolder`) with its per-image scores and the pass/fail of the suite's rule score (a boolean per-image
field such as ``oracle.correct``). Differ: for ``baseline=A``, each other run's paired differences
(:mod:`.differ`) with the baseline's run on the same model, the largest wins and losses with both images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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


def run_model(view: RunView) -> str:
    return str(view.results.get("model", ""))


def column_counts(views: Sequence[RunView]) -> list[int]:
    """Images (records, one per prompt and image index) of each gallery column."""
    return [len({(str(s["prompt_id"]), int(s["image_index"])) for s in v.samples}) for v in views]


@dataclass
class DifferPlan:
    """Which run is compared with which and on which metric: every check that can fail, before any file is written.

    ``pairs``: (baseline run, other run) on the same model; ``skipped``: runs on a model without a baseline run.
    """

    metric: str
    pairs: list[tuple[RunView, RunView]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def differ_plan(views: Sequence[RunView], baseline: str, metric: Optional[str]) -> DifferPlan:
    """Pair each run with the baseline method's run on the same model (``results["model"]``), as the text
    report's marks compare each row with the baseline row of its own model; the per-image metric is checked."""
    if not any(v.method == baseline for v in views):
        raise UsageError(f"baseline={baseline!r} has no run in this report; methods: "
                         f"{', '.join(sorted({v.method for v in views}))}")
    pairs: list[tuple[RunView, RunView]] = []
    skipped: list[str] = []
    for model in dict.fromkeys(run_model(v) for v in views):
        of_model = [v for v in views if run_model(v) == model and v.samples]
        base = [v for v in of_model if v.method == baseline]
        if not base:
            skipped.extend(v.label for v in of_model)
            continue
        pairs.extend((base[0], o) for o in of_model if o is not base[0])
    if not pairs:
        return DifferPlan(metric or "", [], skipped)
    available = sorted(set.intersection(*[set(shared_metrics(a.samples, o.samples)) for a, o in pairs]))
    return DifferPlan(check_metric(metric, available, "report --html"), pairs, skipped)


def differ_sections(plan: DifferPlan, images: ImageFolder, top: int) -> list[dict[str, Any]]:
    """Per pair of :func:`differ_plan`: the summary and the largest wins and losses, with both images."""
    sections = []
    for a, o in plan.pairs:
        diffs = differences(a.samples, o.samples, plan.metric)
        wins, losses = wins_and_losses(diffs, top)

        def item(d):
            return {"id": d.prompt_id, "index": d.image_index, "prompt": d.prompt, "category": d.category,
                    "seed": d.baseline.get("seed"), "a": d.baseline_value, "b": d.other_value,
                    "diff": d.difference, "img_a": images.add(d.baseline.get("path"), d.baseline.get("sha256")),
                    "img_b": images.add(d.other.get("path"), d.other.get("sha256"))}
        n = len(diffs)
        sections.append({"label": o.label, "baseline": a.label, "model": run_model(a), "n": n,
                         "n_wins": sum(d.difference > 0 for d in diffs),
                         "n_losses": sum(d.difference < 0 for d in diffs),
                         "mean": (sum(d.difference for d in diffs) / n) if n else None,
                         "wins": [item(d) for d in wins], "losses": [item(d) for d in losses]})
    return sections
