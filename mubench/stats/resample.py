"""Resampling plans over units: cluster bootstrap weights, paired swap patterns, intervals, Holm.

Every plan is seeded, so a CI or a p-value is reproducible. Units belong to clusters (prompts); clusters may
belong to strata (tasks), in which case the bootstrap keeps each stratum's number of clusters fixed. With
replicate runs pooled, the bootstrap is two-stage: clusters are resampled, then the replicates within each
drawn cluster (one within-cluster draw per cluster and resample, a standard simplification).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_PERMUTATIONS = 2000
ALPHA = 0.05


@dataclass
class Clusters:
    """Which cluster (prompt) each unit belongs to, each cluster's stratum, each unit's replicate index."""

    of_unit: np.ndarray  # (n,) int cluster index of each unit
    strata: np.ndarray  # (C,) int stratum of each cluster
    replicate: np.ndarray  # (n,) int replicate index of each unit (0 when there is one run)

    @property
    def count(self) -> int:
        return int(self.strata.shape[0])

    @classmethod
    def of(cls, prompt_ids: np.ndarray, replicate: Optional[np.ndarray] = None,
           strata: Optional[np.ndarray] = None) -> "Clusters":
        keys, of_unit = np.unique(np.asarray(prompt_ids, dtype=str), return_inverse=True)
        c_strata = np.zeros(len(keys), dtype=np.int64)
        if strata is not None:
            labels, s_inv = np.unique(np.asarray(strata, dtype=str), return_inverse=True)
            c_strata[of_unit] = s_inv  # a prompt has one stratum (its task)
        rep = np.zeros(len(of_unit), np.int64) if replicate is None else np.asarray(replicate, np.int64)
        return cls(of_unit=of_unit, strata=c_strata, replicate=rep)


def bootstrap_weights(clusters: Clusters, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) unit weights: stratified cluster bootstrap, then replicates within clusters."""
    rng = np.random.default_rng(seed)
    c = clusters.count
    counts = np.zeros((resamples, c))
    rows = np.arange(resamples)[:, None]
    for s in np.unique(clusters.strata):
        members = np.flatnonzero(clusters.strata == s)
        draw = members[rng.integers(0, len(members), size=(resamples, len(members)))]
        np.add.at(counts, (np.broadcast_to(rows, draw.shape), draw), 1.0)
    weights = counts[:, clusters.of_unit]
    n_rep = int(clusters.replicate.max()) + 1 if clusters.replicate.size else 1
    if n_rep > 1:  # second stage: resample the replicate runs within each cluster
        draw = rng.integers(0, n_rep, size=(resamples, c, n_rep))
        rep_counts = np.zeros((resamples, c, n_rep))
        r_idx = np.broadcast_to(np.arange(resamples)[:, None, None], draw.shape)
        c_idx = np.broadcast_to(np.arange(c)[None, :, None], draw.shape)
        np.add.at(rep_counts, (r_idx, c_idx, draw), 1.0)
        weights = weights * rep_counts[:, clusters.of_unit, clusters.replicate]
    return weights


def swap_patterns(clusters: Clusters, permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """(P, n) booleans: which units swap sides in each random relabelling (whole clusters swap together).

    When 2**C is at most ``permutations`` every pattern is enumerated (an exact test) and the second value is
    True; otherwise patterns are drawn at random.
    """
    c = clusters.count
    if c <= 20 and 2 ** c <= permutations:
        codes = np.arange(2 ** c, dtype=np.int64)
        per_cluster = ((codes[:, None] >> np.arange(c)[None, :]) & 1).astype(bool)
        exact = True
    else:
        per_cluster = np.random.default_rng(seed).random((permutations, c)) < 0.5
        exact = False
    return per_cluster[:, clusters.of_unit], exact


def percentile_ci(draws: np.ndarray, estimate: float, shift: bool = False,
                  level: float = 0.95) -> tuple[Optional[float], Optional[float]]:
    """Percentile interval of bootstrap draws; ``shift`` re-centres them on ``estimate`` first (for set
    metrics like FID, whose resamples with duplicates are biased: the bias is subtracted, not the spread)."""
    d = np.asarray(draws, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return None, None
    if shift:
        d = d - (d.mean() - estimate)
    a = (1.0 - level) / 2.0
    lo, hi = np.percentile(d, [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


def permutation_p(observed: float, null: np.ndarray, exact: bool) -> float:
    """Two-sided p: share of relabellings at least as extreme as the observed statistic.

    Random patterns count the observed labelling once more (p >= 1/(P+1)); enumerated ones already hold it.
    A small tolerance treats float ties as ties.
    """
    null = np.asarray(null, dtype=np.float64)
    tol = 1e-12 * max(1.0, abs(observed))
    extreme = int(np.count_nonzero(np.abs(null) >= abs(observed) - tol))
    if exact:
        return extreme / len(null)
    return (extreme + 1) / (len(null) + 1)


def holm(pvalues: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm's step-down adjusted p-values (None stays None and is not counted in the family)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and np.isfinite(p)]
    m = len(idx)
    out: list[Optional[float]] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda k: pvalues[k])):
        adj = min(1.0, (m - rank) * float(pvalues[i]))
        running = max(running, adj)
        out[i] = running
    return out


__all__ = ["Clusters", "bootstrap_weights", "swap_patterns", "percentile_ci", "permutation_p", "holm",
           "DEFAULT_RESAMPLES", "DEFAULT_PERMUTATIONS", "ALPHA"]
