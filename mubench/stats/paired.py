"""Paired comparison of one metric between two runs (or pooled replicate groups) on the units they share.

The difference is B − A. Its 95% CI comes from a paired bootstrap: the same resampled clusters (prompts) for
both sides, the metric recomputed on each side (for FID: on the resampled features, against the same
resampled references). The p-value comes from a paired permutation test: under the null the two sides of a
cluster are exchangeable, so whole clusters are swapped between A and B at random and the difference is
recomputed; for a per-image mean this is the sign-flip test. Identical runs give delta 0, CI [0, 0], p 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .resample import (ALPHA, DEFAULT_PERMUTATIONS, DEFAULT_RESAMPLES, Clusters, bootstrap_weights,
                       percentile_ci, permutation_p, swap_patterns)
from .units import UnitData


@dataclass
class PairedResult:
    """One metric compared: values, the difference B − A, its CI and p (``p_holm`` filled by the caller)."""

    metric: str
    higher_is_better: bool
    a: Optional[float]
    b: Optional[float]
    delta: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    p: Optional[float]
    units: int
    dropped: int
    shared_noise: bool
    exact: bool = False
    p_holm: Optional[float] = None
    significant: bool = False
    better: Optional[str] = None  # "a" | "b" | None
    note: str = ""
    min_p: Optional[float] = None  # the smallest p the test can give with these clusters (None: not tested)
    testable: bool = True  # False: min_p >= alpha, no difference could be significant (set by decide)

    def decide(self, alpha: float = ALPHA) -> None:
        """Set ``significant`` / ``better`` from ``p_holm`` (or ``p`` when no correction was applied).

        When even the most extreme outcome could not reach ``alpha`` (too few prompts: an exact sign-flip test over
        C prompts cannot go below 2 / 2^C), the metric is marked untestable and its CI dropped: a percentile bootstrap
        over so few prompts does not cover, and a CI that excludes 0 beside "not significant" would only confuse."""
        if self.p is not None and self.min_p is not None and self.min_p >= alpha:
            if self.testable:
                why = (f"too few prompts to test: the smallest p possible is {self.min_p:.3g} >= alpha {alpha:g}, "
                       "no CI")
                self.note = f"{self.note}; {why}" if self.note else why
            self.testable, self.ci_low, self.ci_high = False, None, None
        p = self.p_holm if self.p_holm is not None else self.p
        self.significant = bool(self.testable and p is not None and p < alpha and self.delta not in (None, 0.0))
        if not self.significant or self.delta is None:
            self.better = None
        else:
            b_up = self.delta > 0
            self.better = "b" if b_up == self.higher_is_better else "a"


def matched_replicates(a: UnitData, b: UnitData) -> tuple[dict[int, int], dict[int, int]]:
    """A common numbering of the two sides' replicate runs: runs made with the same seed (the same image seed for an
    image both have) get the same number first, the other runs are paired in order, and a run left without a partner
    gets a number of its own (its units are then dropped)."""
    def seeds_by_replicate(u: UnitData) -> dict[int, dict[tuple[str, int], int]]:
        out: dict[int, dict[tuple[str, int], int]] = {}
        for pid, idx, rep, seed in zip(u.prompt_ids.tolist(), u.image_index.tolist(), u.replicate.tolist(),
                                       u.seeds.tolist()):
            out.setdefault(int(rep), {})[(pid, int(idx))] = int(seed)
        return dict(sorted(out.items()))

    sa, sb = seeds_by_replicate(a), seeds_by_replicate(b)

    def same_seed(ra: int, rb: int) -> bool:
        key = next((k for k in sa[ra] if k in sb[rb]), None)
        return key is not None and sa[ra][key] >= 0 and sa[ra][key] == sb[rb][key]

    new_a: dict[int, int] = {}
    new_b: dict[int, int] = {}
    for ra in sa:
        rb = next((rb for rb in sb if rb not in new_b and same_seed(ra, rb)), None)
        if rb is not None:
            new_a[ra] = new_b[rb] = len(new_a)
    for ra, rb in zip([r for r in sa if r not in new_a], [r for r in sb if r not in new_b]):
        new_a[ra] = new_b[rb] = len(new_a)
    n = len(new_a)
    for new, side in ((new_a, sa), (new_b, sb)):
        for r in side:
            if r not in new:
                new[r], n = n, n + 1
    return new_a, new_b


def align(a: UnitData, b: UnitData) -> tuple[UnitData, UnitData, int]:
    """Both sides restricted to their shared units (prompt id, image index and replicate, the replicates numbered
    by :func:`matched_replicates`), in one order; and how many units were dropped."""
    new_a, new_b = matched_replicates(a, b)
    ka = {(p, i, new_a[r]): n for n, (p, i, r) in enumerate(a.keys())}
    kb = {(p, i, new_b[r]): n for n, (p, i, r) in enumerate(b.keys())}
    shared = sorted(set(ka) & set(kb))
    ia = np.array([ka[k] for k in shared], dtype=np.int64)
    ib = np.array([kb[k] for k in shared], dtype=np.int64)
    dropped = len(ka) + len(kb) - 2 * len(shared)
    a2, b2 = a.take(ia), b.take(ib)
    # the replicates left, numbered 0, 1, ... for the two-stage resampling
    _, rep = np.unique(np.array([k[2] for k in shared], dtype=np.int64), return_inverse=True)
    a2.replicate, b2.replicate = rep.astype(np.int64), rep.astype(np.int64)
    return a2, b2, dropped


def compare_units(metric: str, a: UnitData, b: UnitData, *, resamples: int = DEFAULT_RESAMPLES,
                  permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> PairedResult:
    """Paired bootstrap CI and permutation p of B − A for one metric (see the module docstring);
    ``resamples=0`` skips the CI (significance marks only need p)."""
    if a.kind != b.kind:
        raise ValueError(f"{metric}: cannot pair {a.kind} unit data with {b.kind}")
    a2, b2, dropped = align(a, b)
    n = a2.n
    shared_noise = bool(n and np.all(a2.seeds >= 0) and np.array_equal(a2.seeds, b2.seeds))
    note = "; ".join(x for x in sorted({a.note, b.note}) if x)
    base = dict(metric=metric, higher_is_better=a.higher_is_better, units=n, dropped=dropped,
                shared_noise=shared_noise, note=note)
    if n < 2:
        return PairedResult(a=None, b=None, delta=None, ci_low=None, ci_high=None, p=None,
                            **{**base, "note": (note + "; " if note else "") + "fewer than 2 shared units"})
    va, vb = a2.value(), b2.value()
    delta = vb - va
    if not np.isfinite(delta):  # a NaN or infinite value on a side: nothing to test (NaN would look "extreme")
        return PairedResult(a=va, b=vb, delta=None, ci_low=None, ci_high=None, p=None,
                            **{**base, "note": (note + "; " if note else "") + "a side's value is not finite"})
    clusters = Clusters.of(a2.prompt_ids, a2.replicate, a2.strata)
    lo = hi = None
    if resamples > 0:
        w = bootstrap_weights(clusters, resamples, seed)
        boot = b2.evaluate(b2.values, w) - a2.evaluate(a2.values, w)
        lo, hi = percentile_ci(boot, delta, shift=a2.kind == "fid")
        if delta == 0.0 and np.all(boot == 0.0):
            lo = hi = 0.0
    swaps, exact = swap_patterns(clusters, permutations, seed + 1)
    null = _swapped_deltas(a2, b2, swaps)
    # the exact test cannot go below 2 / 2^C (the observed labelling and its mirror); a random-relabelling estimate
    # is held to that floor too, so that "too few prompts to test" does not depend on permutations=
    floor = 2.0 ** (1 - clusters.count)  # (underflows to 0 for many prompts, never overflows)
    p = max(permutation_p(delta, null, exact), floor)
    min_p = floor if exact else max(floor, 1.0 / (len(null) + 1))
    return PairedResult(a=va, b=vb, delta=delta, ci_low=lo, ci_high=hi, p=p, exact=exact, min_p=min_p, **base)


def _swapped_deltas(a: UnitData, b: UnitData, swaps: np.ndarray, chunk: int = 500) -> np.ndarray:
    """B' − A' for each relabelling: swapped units take the other side's values (unit weights all 1)."""
    out = np.empty(swaps.shape[0])
    xa, xb = a.values, b.values
    for start in range(0, swaps.shape[0], chunk):
        s = swaps[start:start + chunk]
        mask = s.reshape(s.shape + (1,) * (xa.ndim - 1))
        mixed_a = np.where(mask, xb[None], xa[None])
        mixed_b = np.where(mask, xa[None], xb[None])
        ones = np.ones(s.shape)
        out[start:start + chunk] = b.evaluate(mixed_b, ones) - a.evaluate(mixed_a, ones)
    return out


def unit_ci(u: UnitData, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[Optional[float],
                                                                                         Optional[float]]:
    """The 95% bootstrap CI of one run's metric (clusters resampled; bias-shifted for FID)."""
    if u.n < 2:
        return None, None
    w = bootstrap_weights(Clusters.of(u.prompt_ids, u.replicate, u.strata), resamples, seed)
    return percentile_ci(u.evaluate(u.values, w), u.value(), shift=u.kind == "fid")


__all__ = ["PairedResult", "align", "compare_units", "matched_replicates", "unit_ci"]
