"""Unit data from a suite's sample records, and a metric (value, 95% CI, n) from unit data."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..metrics.core import Metric
from .paired import unit_ci
from .units import UnitData


def _keys(records: Sequence[Any]) -> tuple[list[str], list[int], list[int]]:
    return ([str(r.item.id) for r in records], [int(r.image_index) for r in records],
            [-1 if r.seed is None else int(r.seed) for r in records])


def mean_units(records: Sequence[Any], values: Sequence[float], higher_is_better: bool = True,
               strata: Optional[Sequence[str]] = None) -> UnitData:
    """A per-image mean metric over ``records`` (one value per record); ``strata`` makes it a mean of
    per-stratum means (GenEval's ``overall``: the mean of the task means)."""
    pids, idx, seeds = _keys(records)
    return UnitData(kind="mean" if strata is None else "strata_mean", higher_is_better=higher_is_better,
                    prompt_ids=np.array(pids, dtype=str), image_index=np.array(idx), seeds=np.array(seeds),
                    values=np.asarray(values, dtype=np.float64),
                    strata=None if strata is None else np.array(list(strata), dtype=str))


def fid_units(records: Sequence[Any], features: np.ndarray, ref: Optional[np.ndarray] = None,
              ref_mu: Optional[np.ndarray] = None, ref_sigma: Optional[np.ndarray] = None,
              note: str = "") -> UnitData:
    """FID over ``records``' features against per-unit reference features or a fixed reference Gaussian; with
    fewer images than feature dimensions the unit data carries a note saying its values are biased."""
    pids, idx, seeds = _keys(records)
    n, d = np.shape(features)
    if not note and n < d:
        note = f"fid at n={n} < {d} feature dimensions: values are biased, compare only at equal n"
    return UnitData(kind="fid", higher_is_better=False, prompt_ids=np.array(pids, dtype=str),
                    image_index=np.array(idx), seeds=np.array(seeds), values=np.asarray(features, np.float64),
                    ref=ref, ref_mu=ref_mu, ref_sigma=ref_sigma, note=note)


def metric_from_units(units: UnitData, resamples: int = 2000, value: Optional[float] = None) -> Metric:
    """The metric's value (``value`` when the suite computed it its own way, e.g. FID by scipy's sqrtm),
    its 95% cluster-bootstrap CI and n."""
    v = units.value() if value is None else float(value)
    lo, hi = unit_ci(units, resamples=resamples) if resamples > 0 else (None, None)
    return Metric(v, lo, hi, units.n, units.higher_is_better)


__all__ = ["mean_units", "fid_units", "metric_from_units"]
