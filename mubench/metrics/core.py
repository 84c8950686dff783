"""Metric values as stored in results.json: value, 95% CI, n, direction."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np


@dataclass
class Metric:
    value: float
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    n: int = 0
    higher_is_better: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_mean(values: Sequence[float], higher_is_better: bool = True, *, resamples: int = 2000,
                   seed: int = 0, groups: Optional[Sequence[Any]] = None) -> Metric:
    """Mean with a percentile-bootstrap 95% CI (fixed seed, so the CI is reproducible).

    ``groups`` (e.g. prompt ids) resamples whole groups, the right unit when several images share a prompt.
    """
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Metric(float("nan"), None, None, 0, higher_is_better)
    value = float(x.mean())
    if n == 1:
        return Metric(value, None, None, 1, higher_is_better)
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, n, size=(resamples, n))
        means = x[idx].mean(axis=1)
    else:
        keys, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        sums = np.bincount(inverse, weights=x, minlength=len(keys))
        counts = np.bincount(inverse, minlength=len(keys)).astype(np.float64)
        pick = rng.integers(0, len(keys), size=(resamples, len(keys)))
        means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Metric(value, float(lo), float(hi), n, higher_is_better)
