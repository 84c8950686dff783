"""GenEval's correctness rules, re-implemented over a detector-agnostic interface.

Reference: djghosh13/geneval ``evaluation/evaluate_images.py`` and ``summary_scores.py``. An image is
judged against its prompt's metadata (``tag``, ``include`` clauses, ``exclude`` clauses):

* **kept detections** (:func:`keep_detections`): per class, detections sorted by score, those with score
  > ``threshold`` (0.3; ``counting_threshold`` 0.9 for every class when the tag is ``counting``), at most
  ``max_objects`` (16), then greedy NMS with IoU ≥ ``max_overlap`` removed (1.0 = off, the default;
  IoU uses the +1-pixel box convention). Kept objects stay in confidence order.
* **include** clause ``{class, count[, color][, position]}``: the top-``count`` kept objects of the
  class; fewer than ``count`` → incorrect. With ``color``: each of those objects is colour-classified
  and fewer than ``count`` of the required colour → incorrect. With ``position: [relation, i]`` (and
  the clause still matched): every one of those objects must stand in ``relation`` to every object
  matched by include clause ``i`` (:func:`relative_position`); if clause ``i`` failed → incorrect.
* **exclude** clause ``{class, count}``: ``count`` or more kept objects of the class → incorrect.
* **summary**: task score = mean of ``correct`` over that tag's images; ``overall`` = unweighted mean
  of the task scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..metrics.positions import box_relations

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

# GenEval's object_names.txt: the 80 COCO classes in the detector's label order, with GenEval's names
OBJECT_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)


@dataclass
class Detection:
    """One detected instance: box (x1, y1, x2, y2) in pixels, confidence, optional boolean mask [H, W]."""

    box: tuple[float, float, float, float]
    score: float
    mask: Optional[np.ndarray] = None


@dataclass
class RuleParams:
    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0  # NMS IoU threshold; 1.0 disables NMS
    position_threshold: float = 0.1


def compute_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU with GenEval's inclusive-pixel convention (width = x2 − x1 + 1)."""
    def area(box):
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def keep_detections(detections: dict[str, list[Detection]], tag: str,
                    params: RuleParams = RuleParams()) -> dict[str, list[Detection]]:
    """Threshold, cap and (optionally) NMS each class's detections; classes left empty are dropped."""
    thr = params.counting_threshold if tag == "counting" else params.threshold
    kept: dict[str, list[Detection]] = {}
    for cls, dets in detections.items():
        order = sorted(dets, key=lambda d: -d.score)
        order = [d for d in order if d.score > thr][:params.max_objects]
        out: list[Detection] = []
        while order:
            best = order.pop(0)
            out.append(best)
            if params.max_overlap < 1:
                order = [d for d in order if compute_iou(best.box, d.box) < params.max_overlap]
        if out:
            kept[cls] = out
    return kept


def relative_position(a: Detection, b: Detection, threshold: float = 0.1) -> set[str]:
    """Relations of A to B ("left of", "right of", "above", "below"), allowing for the boxes' sizes."""
    return box_relations(a.box, b.box, threshold)


ColorFn = Callable[[list[Detection], str], list[str]]  # (objects, classname) -> one colour name per object


@dataclass
class Judgement:
    correct: bool
    reason: str
    kept: dict[str, list[Detection]] = field(default_factory=dict)


def evaluate(metadata: dict[str, Any], kept: dict[str, list[Detection]], color_fn: Optional[ColorFn] = None,
             params: RuleParams = RuleParams()) -> Judgement:
    """GenEval's verdict for one image from its kept detections (see the module docstring)."""
    correct = True
    reasons: list[str] = []
    matched_groups: list[Optional[list[Detection]]] = []
    for req in metadata.get("include", []):
        cls, count = req["class"], int(req["count"])
        matched = True
        found = kept.get(cls, [])[:count]
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {cls}>={count}, found {len(found)}")
        else:
            if "color" in req:
                if color_fn is None:
                    raise ValueError("a colour clause needs a colour classifier")
                colors = list(color_fn(found, cls))
                want = req["color"]
                if colors.count(want) < count:
                    correct = matched = False
                    seen = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                    reasons.append(f"expected {want} {cls}>={count}, found {colors.count(want)} {want}; and {seen}")
            if "position" in req and matched:
                relation, target = req["position"][0], int(req["position"][1])
                if matched_groups[target] is None:
                    correct = matched = False
                    reasons.append(f"no target for {cls} to be {relation}")
                else:
                    for obj in found:
                        for tgt in matched_groups[target]:
                            rels = relative_position(obj, tgt, params.position_threshold)
                            if relation not in rels:
                                correct = matched = False
                                reasons.append(f"expected {cls} {relation} target, found {' and '.join(sorted(rels))} target")
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        cls, count = req["class"], int(req["count"])
        if len(kept.get(cls, [])) >= count:
            correct = False
            reasons.append(f"expected {cls}<{count}, found {len(kept[cls])}")
    return Judgement(correct, "\n".join(reasons), kept)


def judge(metadata: dict[str, Any], detections: dict[str, list[Detection]], color_fn: Optional[ColorFn] = None,
          params: RuleParams = RuleParams()) -> Judgement:
    """Raw detections → kept detections → verdict."""
    return evaluate(metadata, keep_detections(detections, metadata["tag"], params), color_fn, params)


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per-task mean of ``correct`` and ``overall`` = unweighted mean of the task means present."""
    by_task: dict[str, list[float]] = {}
    for row in rows:
        by_task.setdefault(str(row["tag"]), []).append(float(bool(row["correct"])))
    out = {t: float(np.mean(v)) for t, v in by_task.items()}
    tasks = [t for t in TASKS if t in out] + sorted(t for t in out if t not in TASKS)
    out = {t: out[t] for t in tasks}
    if out:
        out["overall"] = float(np.mean([out[t] for t in tasks]))
    return out
