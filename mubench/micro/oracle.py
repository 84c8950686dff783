"""The micro world's oracle: recover the objects of a 32×32 image with classical image analysis.

:func:`detect` finds every object of an image — its colour, shape, fill, centre, box and area —
using only numpy / scipy / scikit-image:

1. the background is the per-channel median of the border pixels;
2. each pixel is fitted as a blend ``background + alpha * (colour - background)`` of every palette
   colour; it takes the colour that fits best and is foreground when that ``alpha >= min_alpha``
   (pixels far from every such blend are ignored), so soft or blurred edges keep their colour;
3. per colour, the mask is closed vertically by 3 px (this bridges the 2-px gaps of striped
   fills but not the ≥ 3-px gaps between objects) and split into 8-connected components; a
   component's silhouette is the component with its holes filled; specks below ``min_area`` drop;
4. fill: the fraction of the silhouette's interior (eroded by 1 px) painted in the colour —
   about 1 for solid fills, about 0.5 for stripes;
5. shape: the best soft IoU between the silhouette's box crop, resized to 16×16, and each shape's
   template drawn by the generator's own rasteriser.

:func:`evaluate` then applies GenEval's correctness rules with shapes as the object classes
(include / exclude clauses, the top-``count`` objects by area judged for colour, fill and
position; GenEval's relative-position rule), and :func:`bindings` gives, per noun phrase,
whether an object with all its named attributes is present (the T2I-CompBench-style binding
score).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from ..metrics.positions import box_relations
from .scene import COLORS, SHAPES, MicroObject, Phrase, object_mask

TEMPLATE_SIZE = 16


@dataclass
class OracleParams:
    min_alpha: float = 0.5  # a pixel is foreground when it is at least this far from the background towards a colour
    max_color_distance: float = 80.0  # ... and within this RGB distance of that background-colour blend
    min_area: int = 10  # smallest silhouette (pixels) that counts as an object
    solid_threshold: float = 0.8  # interior coverage at or above which a fill is "solid"
    position_threshold: float = 0.1  # GenEval's relative-position margin (fraction of the two box sizes)


@dataclass
class Detection:
    """One recovered object. ``bbox`` is (x0, y0, x1, y1) in pixel edges; (x, y) its centre (as the
    generator's object centre and GenEval's box centre)."""

    shape: str
    color: str
    fill: str
    x: float
    y: float
    bbox: tuple[int, int, int, int]
    area: int
    shape_score: float  # soft IoU with the chosen shape's template
    coverage: float  # fraction of the interior painted (the fill evidence)

    def as_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "color": self.color, "fill": self.fill, "x": round(self.x, 2),
                "y": round(self.y, 2), "bbox": list(self.bbox), "area": self.area,
                "shape_score": round(self.shape_score, 3), "coverage": round(self.coverage, 3)}


def _templates() -> dict[str, np.ndarray]:
    """Each shape rasterised large by the generator, cropped to its box, resized to 16×16."""
    out = {}
    for shape in SHAPES:
        mask = object_mask(MicroObject(shape, "red", "solid", 120, 64.0, 64.0), size=128)
        out[shape] = _normalise(mask)
    return out


def _normalise(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].astype(np.float64)
    return resize(crop, (TEMPLATE_SIZE, TEMPLATE_SIZE), order=1, mode="edge", anti_aliasing=True)


def _soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-9))


def to_uint8(image: Any) -> np.ndarray:
    """uint8 HWC from uint8 HWC, or float CHW / HWC in [0, 1] (numpy or torch)."""
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return arr


class Oracle:
    """Object recovery + GenEval-style rules. Stateless apart from its params and shape templates."""

    def __init__(self, params: Optional[OracleParams] = None) -> None:
        self.params = params or OracleParams()
        self.templates = _templates()
        self._names = list(COLORS)
        self._palette = np.array([COLORS[c] for c in self._names], dtype=np.float64)

    # ---- detection ---------------------------------------------------------------------------
    def background(self, img: np.ndarray) -> np.ndarray:
        border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]]).astype(np.float64)
        return np.median(border, axis=0)

    def detect(self, image: Any) -> list[Detection]:
        """All objects of one image, largest first."""
        p = self.params
        img = to_uint8(image).astype(np.float64)
        bg = self.background(img)
        # each pixel as a blend bg + alpha * (colour - bg): the best-fitting palette colour, its alpha
        # and the distance left over (so anti-aliased or blurred edges keep their object's colour)
        w = (img - bg)[:, :, None, :]  # [H, W, 1, 3]
        v = (self._palette - bg)[None, None]  # [1, 1, C, 3]
        alpha = np.clip((w * v).sum(-1) / np.maximum((v * v).sum(-1), 1e-9), 0.0, 1.0)  # [H, W, C]
        resid = np.linalg.norm(w - alpha[..., None] * v, axis=-1)
        label = resid.argmin(-1)
        best_alpha = np.take_along_axis(alpha, label[..., None], -1)[..., 0]
        fg = (best_alpha >= p.min_alpha) & (resid.min(-1) <= p.max_color_distance)
        found: list[Detection] = []
        for ci, color in enumerate(self._names):
            mask = fg & (label == ci)
            if mask.sum() < p.min_area:
                continue
            closed = mask | ndimage.binary_closing(mask, structure=np.ones((3, 1), bool))
            comps, n = ndimage.label(closed, structure=np.ones((3, 3), bool))
            for k in range(1, n + 1):
                sil = ndimage.binary_fill_holes(comps == k)
                area = int(sil.sum())
                if area < p.min_area:
                    continue
                found.append(self._describe(sil, mask, color, area))
        found.sort(key=lambda d: (-d.area, d.y, d.x))
        return found

    def _describe(self, sil: np.ndarray, painted: np.ndarray, color: str, area: int) -> Detection:
        ys, xs = np.nonzero(sil)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        crop = _normalise(sil)
        scores = {s: _soft_iou(crop, t) for s, t in self.templates.items()}
        shape = max(scores, key=scores.get)  # type: ignore[arg-type]
        interior = ndimage.binary_erosion(sil, structure=np.ones((3, 3), bool))
        if interior.sum() < 4:  # too thin to tell: judge the whole silhouette
            interior = sil
        coverage = float((painted & interior).sum() / interior.sum())
        fill = "solid" if coverage >= self.params.solid_threshold else "striped"
        return Detection(shape, color, fill, (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2, bbox, area,
                         scores[shape], coverage)

    # ---- rules -------------------------------------------------------------------------------
    def relations(self, a: Detection, b: Detection) -> set[str]:
        """GenEval's relative position of ``a`` with respect to ``b`` (a set; may be empty)."""
        return box_relations(a.bbox, b.bbox, self.params.position_threshold)

    def evaluate(self, detections: list[Detection], phrases: tuple[Phrase, ...] | list[Phrase],
                 relation: Optional[str] = None) -> tuple[bool, str]:
        """GenEval's rules with shapes as classes: (correct, reason — "" when correct).

        Each phrase is an include clause (its shape, at least ``count`` objects; the top-``count``
        by area must carry its named colour and fill); a plural phrase adds an exclude clause
        (fewer than ``count + 1`` of that shape); ``relation`` requires every kept object of
        phrase 0 to stand in that relation to every kept object of phrase 1. GenEval's prompts
        never name one class twice; when phrases share a shape ("a red circle and a blue circle")
        each phrase keeps, among the objects of that shape not kept by an earlier phrase, those
        with its named attributes first, then the largest.
        """
        by_shape: dict[str, list[Detection]] = {}
        for det in detections:  # already largest first
            by_shape.setdefault(det.shape, []).append(det)
        shared = {ph.shape for i, ph in enumerate(phrases) if any(q.shape == ph.shape for q in phrases[:i])}
        claimed: set[int] = set()
        reasons: list[str] = []
        kept: list[Optional[list[Detection]]] = []
        for ph in phrases:
            objs = [o for o in by_shape.get(ph.shape, []) if id(o) not in claimed]
            if ph.shape in shared:
                objs.sort(key=lambda o: not ((ph.color is None or o.color == ph.color)
                                             and (ph.fill is None or o.fill == ph.fill)))  # stable: then by area
            objs = objs[: ph.count]
            claimed.update(id(o) for o in objs)
            missing = _include_reasons(ph, objs)
            reasons += missing
            kept.append(None if missing else objs)
        if relation is not None and len(phrases) == 2 and kept[0] is not None and kept[1] is not None:
            reasons += self._relation_reasons(phrases, kept[0], kept[1], relation)
        for ph in phrases:
            if ph.count > 1 and len(by_shape.get(ph.shape, [])) >= ph.count + 1:
                reasons.append(f"expected {ph.shape}<{ph.count + 1}, found {len(by_shape[ph.shape])}")
        return not reasons, "; ".join(reasons)

    def _relation_reasons(self, phrases, first: list[Detection], second: list[Detection], relation: str) -> list[str]:
        """The first pair (kept object of phrase 0, of phrase 1) not in ``relation``, as a reason; none if all are."""
        for a in first:
            for b in second:
                rel = self.relations(a, b)
                if relation not in rel:
                    return [f"expected {phrases[0].shape} {relation} {phrases[1].shape}, found "
                            f"{', '.join(sorted(rel)) or 'no clear relation'}"]
        return []

    def bindings(self, detections: list[Detection], phrases: tuple[Phrase, ...] | list[Phrase]) -> list[bool]:
        """Per phrase: is there an object whose shape and named colour and fill all match?"""
        out = []
        for ph in phrases:
            hits = [d for d in detections if d.shape == ph.shape and (ph.color is None or d.color == ph.color)
                    and (ph.fill is None or d.fill == ph.fill)]
            out.append(len(hits) >= ph.count)
        return out


    def binding(self, detections: list[Detection], phrase: Phrase, by: str, judged: str) -> tuple[bool, str]:
        """T2I-CompBench-style attribute binding: the largest object whose ``by`` attribute is the
        phrase's (e.g. its shape) must carry the phrase's ``judged`` attribute (e.g. its colour)."""
        key, want = getattr(phrase, by), getattr(phrase, judged)
        if key is None or want is None:
            raise ValueError(f"phrase {phrase.text()!r} names no {by if key is None else judged}")
        objs = [d for d in detections if getattr(d, by) == key]  # largest first
        if not objs:
            return False, f"no {key} object"
        got = getattr(objs[0], judged)
        return got == want, "" if got == want else f"the {key} object is {got}, expected {want}"


@dataclass
class Match:
    """A ground-truth object and the detection matched to it (None when missed)."""

    truth: MicroObject
    found: Optional[Detection] = field(default=None)


def match_objects(truth: tuple[MicroObject, ...] | list[MicroObject], found: list[Detection],
                  max_distance: float = 3.0) -> list[Match]:
    """Greedy nearest-centre matching of detections to ground-truth objects (for validation)."""
    pairs = sorted((np.hypot(o.x - d.x, o.y - d.y), i, j) for i, o in enumerate(truth) for j, d in enumerate(found))
    used_t: set[int] = set()
    used_f: set[int] = set()
    out = [Match(o) for o in truth]
    for dist, i, j in pairs:
        if dist > max_distance or i in used_t or j in used_f:
            continue
        out[i].found = found[j]
        used_t.add(i)
        used_f.add(j)
    return out


def _include_reasons(ph: Phrase, objs: list[Detection]) -> list[str]:
    """Why a phrase's include clause fails on its kept objects: too few, or too few with its named colour / fill."""
    if len(objs) < ph.count:
        return [f"expected {ph.shape}>={ph.count}, found {len(objs)}"]
    reasons = []
    for attr in ("color", "fill"):
        want = getattr(ph, attr)
        if want is None:
            continue
        got = [getattr(o, attr) for o in objs]
        if got.count(want) < ph.count:
            reasons.append(f"expected {want} {ph.shape}>={ph.count}, found "
                           f"{got.count(want)} {want}; and {', '.join(g for g in got if g != want)}")
    return reasons
