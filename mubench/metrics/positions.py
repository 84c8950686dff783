"""GenEval's relative-position rule on two boxes, shared by the GenEval suite and the micro world's oracle.

Reference: djghosh13/geneval ``evaluation/evaluate_images.py`` (``relative_position``): the offset between the box
centres, shrunk on each axis by ``threshold`` times the sum of the two boxes' sizes on that axis, is normalised by the
unshrunk offset's length; a component beyond ±0.5 names a relation.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

Box = Sequence[float]  # (x0, y0, x1, y1), pixels, y down


def box_relations(a: Box, b: Box, threshold: float = 0.1) -> set[str]:
    """Relations of box ``a`` to box ``b`` ("left of", "right of", "above", "below"; a set, possibly empty)."""
    boxes = np.array([a, b], dtype=np.float64).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=1)
    dim_a, dim_b = np.abs(boxes[:, 1] - boxes[:, 0])
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - threshold * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    names = ((dx < -0.5, "left of"), (dx > 0.5, "right of"), (dy < -0.5, "above"), (dy > 0.5, "below"))
    return {name for hit, name in names if hit}
