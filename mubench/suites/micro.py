"""Suite kind ``micro``: the micro world's analogues of the real suites, with the same metric names.

Prompt sets (fixed ids ``<task>/<k:04d>``, drawn from seeded streams of the ``test`` split; the
binding tasks may use the ``compositional`` split, whose colour–shape pairs training never saw):

* COCO analogue — ``coco``: captions of test-split scenes (the training mix of kinds).
  ``fid``: Fréchet distance in micro-CLIP's penultimate feature space between the generated images
  and held-out real renders of the same captions (one per generated image); ``clip``: mean raw
  cosine between image and caption in micro-CLIP space.
* T2I-CompBench analogue — ``color``, ``shape``, ``texture``: two objects with bound attributes
  ("a red circle and a blue square"; texture: "a striped circle and a solid square"). Per image,
  the fraction of its noun phrases whose binding the oracle finds right: colour — the largest
  object of the phrase's shape has its colour; shape — the largest object of the phrase's colour
  has its shape; texture — the largest object of the phrase's shape has its fill.
* GenEval analogue — ``single_object`` ("a circle"), ``two_object`` ("a circle and a square"),
  ``counting`` ("three triangles"), ``colors`` ("a red circle"), ``position`` ("a circle to the
  left of a square"), ``color_attr`` ("a red circle and a blue square"): per image correct /
  incorrect with a reason (GenEval's rules, shapes as classes); ``overall`` = mean of the six task
  means (its CI from a bootstrap stratified by task, resampling prompts).

Every metric, ``fid`` and ``overall`` included, carries a 95% bootstrap CI resampling prompts, and its per-unit
data (:meth:`MicroSuite.units`) is stored for paired comparisons. ``limit=N`` keeps the first
N prompts of an order that interleaves the tasks proportionally, so a small run still has every task.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError
from ..metrics.core import Metric
from ..stats.build import fid_units, mean_units, metric_from_units
from ..stats.units import UnitData
from ..micro import data as D
from ..micro import scene as S
from .base import PromptItem, SampleRecord, SamplerParams, ScorerUse, Suite, SuiteParams

COCO_TASKS = ("coco",)
BINDING_TASKS = {"color": ("shape", "color"), "shape": ("color", "shape"), "texture": ("shape", "fill")}
GENEVAL_TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
TASKS = COCO_TASKS + tuple(BINDING_TASKS) + GENEVAL_TASKS
PROMPT_SEED = 7  # stream seed the suite's prompts are drawn from (scene_rng(split, k, seed))


@dataclass
class MicroFidParams:
    force: bool = False  # compute FID even with fewer images than feature dimensions (label it!)


@dataclass
class MicroSuiteParams(SuiteParams):
    """Prompt counts per task (0 drops a task), the binding tasks' split, FID and bootstrap settings."""

    images_per_prompt: int = 1
    sampler: SamplerParams = field(default_factory=lambda: SamplerParams(scheduler="ddim", steps=20, guidance=4.0))
    coco: int = 240  # 700 prompts in all: one method's run fits 5 minutes on a 2-core CPU (docs/micro-world.md)
    color: int = 60
    shape: int = 60
    texture: int = 60
    single_object: int = 40
    two_object: int = 50
    counting: int = 40
    colors: int = 50
    position: int = 50
    color_attr: int = 50
    binding_split: str = "test"  # test | compositional: split of the colour/shape/texture prompts
    fid: MicroFidParams = field(default_factory=MicroFidParams)
    bootstrap_resamples: int = 2000


def _pick(rng: np.random.Generator, seq: list[Any] | tuple[Any, ...]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def task_prompt(task: str, k: int, split: str = "test") -> tuple[tuple[S.Phrase, ...], str | None]:
    """The phrases and relation of prompt ``k`` of ``task`` (deterministic)."""
    rng = D.scene_rng(split, k, PROMPT_SEED + 1000 * TASKS.index(task))
    shapes = list(S.SHAPES)
    pairs = D.allowed_pairs("test")
    if task == "coco":
        scene = D.generate_scene(rng, _kind(rng), "test")
        return scene.phrases, scene.relation
    if task in BINDING_TASKS:
        if split == "compositional":  # one object of a held-out pair, the other of any pair
            first = _pick(rng, sorted(D.HELD_OUT))
            others = [(c, s) for c in S.COLORS for s in S.SHAPES if c != first[0] and s != first[1]]
        else:
            first = _pick(rng, pairs)
            others = [(c, s) for c, s in pairs if c != first[0] and s != first[1]]
        second = _pick(rng, others)
        objs = [first, second] if rng.random() < 0.5 else [second, first]
        if task == "texture":
            fills = list(S.FILLS) if rng.random() < 0.5 else list(S.FILLS)[::-1]
            return tuple(S.Phrase(s, None, f) for (c, s), f in zip(objs, fills)), None
        return tuple(S.Phrase(s, c) for c, s in objs), None
    if task == "single_object":
        return (S.Phrase(shapes[k % len(shapes)]),), None
    if task == "two_object":
        a, b = rng.choice(len(shapes), size=2, replace=False)
        return (S.Phrase(shapes[a]), S.Phrase(shapes[b])), None
    if task == "counting":
        return (S.Phrase(shapes[k % len(shapes)], count=2 + (k // len(shapes)) % 3),), None
    if task == "colors":
        c, s = pairs[k % len(pairs)]
        return (S.Phrase(s, c),), None
    if task == "position":
        a, b = rng.choice(len(shapes), size=2, replace=False)
        return (S.Phrase(shapes[a]), S.Phrase(shapes[b])), S.RELATIONS[k % len(S.RELATIONS)]
    if task == "color_attr":
        first = _pick(rng, pairs)
        second = _pick(rng, [(c, s) for c, s in pairs if c != first[0] and s != first[1]])
        return (S.Phrase(first[1], first[0]), S.Phrase(second[1], second[0])), None
    raise ValueError(f"unknown micro task {task!r}")


def _kind(rng: np.random.Generator) -> str:
    return S.draw_kind(rng, *S.check_mix(D.DEFAULT_MIX))


class MicroSuite(Suite):
    Params = MicroSuiteParams

    def __init__(self, params: MicroSuiteParams, name: str) -> None:
        super().__init__(params, name)
        if params.binding_split not in ("test", "compositional"):
            raise UsageError(f"suite.binding_split must be 'test' or 'compositional', got {params.binding_split!r}")
        for task in TASKS:
            if getattr(params, task) < 0:
                raise UsageError(f"suite.{task} must be >= 0, got {getattr(params, task)}")
        D.check_images_per_prompt(params.images_per_prompt)

    def items(self) -> list[PromptItem]:
        p = self.params
        per_task: list[tuple[float, int, PromptItem]] = []
        for t_index, task in enumerate(TASKS):
            n = getattr(p, task)
            split = p.binding_split if task in BINDING_TASKS else "test"
            for k in range(n):
                phrases, relation = task_prompt(task, k, split)
                meta: dict[str, Any] = {"task": task, "split": split, "key": k + 100_000 * t_index}
                if task in COCO_TASKS:
                    meta["references"] = p.images_per_prompt
                if task in BINDING_TASKS:
                    meta["bind"] = list(BINDING_TASKS[task])
                item = PromptItem(f"{task}/{k:04d}", S.caption_for(phrases, relation), meta)
                per_task.append(((k + 0.5) / n, t_index, item))
        per_task.sort(key=lambda x: (x[0], x[1]))  # proportional interleaving of the tasks
        return [item for _, _, item in per_task]

    def scorers(self) -> dict[str, ScorerUse]:
        return {"clip": ScorerUse("micro-clip"), "oracle": ScorerUse("micro-oracle")}

    def check_size(self, items: list[PromptItem]) -> None:
        """FID needs more coco images than micro-CLIP feature dimensions: skip it (one line) or refuse, up front."""
        from ..micro.clip import MicroClipConfig

        self._warn_missing_tasks(items)
        dim = MicroClipConfig().feature_dim
        ipp = self.params.images_per_prompt
        n = sum(ipp for it in items if it.meta.get("task") in COCO_TASKS)
        if n == 0 or n >= dim:
            return
        if self.params.fid.force:
            if n < 2:
                raise UsageError(f"fid: this run has {n} coco image; FID needs at least 2 even with "
                                 "suite.fid.force=true (raise limit=)")
            return
        need, seen = None, 0
        for k, it in enumerate(self.items(), 1):
            seen += ipp if it.meta.get("task") in COCO_TASKS else 0
            if seen >= dim:
                need = k
                break
        works = f"limit={need} or more" if need else f"suite.coco={-(-dim // ipp)} or more"
        warnings.warn(f"fid skipped: this run has {n} coco images, FID needs at least {dim} (the micro-CLIP "
                      f"feature dimensions); use {works}, or suite.fid.force=true for a biased number")

    def _warn_missing_tasks(self, items: list[PromptItem]) -> None:
        """A limit that leaves whole tasks out says so (their rows would just be missing from the table)."""
        every, seen, need = [], set(), None
        for k, it in enumerate(self.items(), 1):
            if it.meta.get("task") not in seen:
                seen.add(it.meta.get("task"))
                every.append(it.meta.get("task"))
                need = k
        missing = [t for t in every if t not in {it.meta.get("task") for it in items}]
        if missing:
            warnings.warn(f"this run's {len(items)} prompts hold no {', '.join(missing)} prompt, so those metrics "
                          f"are left out; limit={need} or more covers every task")

    def protocol(self) -> dict[str, Any]:
        return {"world": "micro", "prompt_seed": PROMPT_SEED, "binding_split": self.params.binding_split,
                "fid_features": "micro-clip penultimate image features",
                "fid_reference": "held-out real renders of the same captions, one per generated image",
                "clip_score": "raw cosine (micro-clip)",
                "geneval_rules": "GenEval correctness rules, shapes as classes (micro-oracle)",
                "binding_rule": "largest object with the phrase's key attribute carries the judged attribute"}

    def units(self, records: list[SampleRecord]) -> dict[str, UnitData]:
        """Per-unit data of every metric (what CIs, ``compare`` and pooled replicates resample). ``fid`` is
        there even where too few images make its value refused: a paired test at equal n stays valid."""
        by_task: dict[str, list[SampleRecord]] = {}
        for r in records:
            by_task.setdefault(r.item.meta.get("task", ""), []).append(r)
        out: dict[str, UnitData] = {}
        coco = by_task.get("coco", [])
        if coco:
            gen = np.stack([np.asarray(r.scores["clip"]["features"], np.float64) for r in coco])
            ref = np.stack([np.asarray(r.scores["clip"]["ref_features"], np.float64)[r.image_index] for r in coco])
            if len(coco) >= 2:
                out["fid"] = fid_units(coco, gen, ref=ref)
            out["clip"] = mean_units(coco, [r.scores["clip"]["clip"] for r in coco])
        for task in BINDING_TASKS:
            recs = by_task.get(task, [])
            if recs:
                out[task] = mean_units(recs, [float(r.scores["oracle"]["binding_score"]) for r in recs])
        present = [t for t in GENEVAL_TASKS if by_task.get(t)]
        for task in present:
            out[task] = mean_units(by_task[task], [float(bool(r.scores["oracle"]["correct"])) for r in by_task[task]])
        if present:
            recs = [r for t in present for r in by_task[t]]
            out["overall"] = mean_units(recs, [float(bool(r.scores["oracle"]["correct"])) for r in recs],
                                        strata=[r.item.meta["task"] for r in recs])
        return out

    def aggregate(self, records: list[SampleRecord]) -> dict[str, Metric]:
        """Metrics with 95% CIs from a bootstrap over prompts (stratified by task for ``overall``; for ``fid``
        the bias of resamples with repeated prompts is subtracted from the interval)."""
        rs = self.params.bootstrap_resamples
        metrics: dict[str, Metric] = {}
        for name, u in self.units(records).items():
            if name == "fid":
                value = self._fid(u)
                if value is not None:
                    metrics["fid"] = metric_from_units(u, rs, value=value)
            else:
                metrics[name] = metric_from_units(u, rs)
        order = [m for m in ("fid", "clip", *BINDING_TASKS, *GENEVAL_TASKS, "overall") if m in metrics]
        return {m: metrics[m] for m in order}

    def _fid(self, u: UnitData) -> float | None:
        from ..metrics.fid import fid_from_features

        n, dim = np.shape(u.values)[0], np.shape(u.values)[-1]
        if n < dim and not self.params.fid.force:
            return None  # check_size said so before generation
        try:
            return float(fid_from_features(u.values, u.ref, force=self.params.fid.force))
        except UsageError as err:
            if "refused" not in str(err):
                raise
            warnings.warn(f"micro suite: no fid metric: {err}", stacklevel=2)
            return None
