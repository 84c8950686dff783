"""The power of the paired test, simulated from stored per-unit data of an A/A pair (same method, two seeds).

For a sample size n and an effect δ, each simulation draws n prompts (with replacement) from the pair's units,
injects the effect into side B (binary scores: a random share of B's failures become passes so that B's
expected mean rises by δ; other scores: + δ), and runs the paired permutation test; the power is the share of
simulations with p < alpha. Each drawn pair's sides are swapped at random, so that without an injected effect
the simulation is an exact null (the pair's own observed difference is noise). The A/A pair supplies the realistic part: how much two images of one prompt
differ when nothing but the noise changed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .paired import align, compare_units
from .units import UnitData


@dataclass
class PowerPoint:
    n: int
    effect: float
    power: float
    false_positive_rate: float  # the same simulations with no injected effect
    sims: int


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0.0) | (x == 1.0)))


def power_table(a: UnitData, b: UnitData, ns: Sequence[int], effects: Sequence[float], *, sims: int = 200,
                permutations: int = 500, alpha: float = 0.05, seed: int = 0) -> list[PowerPoint]:
    """Power (and the A/A false-positive rate) of the paired test for each (n, effect)."""
    if a.kind != "mean" or b.kind != "mean":
        raise ValueError("power_table needs per-image mean unit data")
    a, b, _ = align(a, b)
    if a.n < 2:
        raise ValueError("the A/A pair shares fewer than 2 units")
    rng = np.random.default_rng(seed)
    binary = _is_binary(a.values) and _is_binary(b.values)
    out = []
    for n in ns:
        null_p = []
        picks = [(rng.integers(0, a.n, size=n), rng.random(n) < 0.5) for _ in range(sims)]
        for s, (idx, flip) in enumerate(picks):
            pa, pb = _draw(a, b, idx, flip)
            null_p.append(compare_units("m", pa, pb, resamples=0, permutations=permutations, seed=s).p)
        fpr = float(np.mean(np.array(null_p) < alpha))
        for effect in effects:
            ps = []
            for s, (idx, flip) in enumerate(picks):
                pa, pb = _draw(a, b, idx, flip)
                pb.values = _inject(pb.values, effect, binary, rng)
                ps.append(compare_units("m", pa, pb, resamples=0, permutations=permutations, seed=s).p)
            out.append(PowerPoint(n, effect, float(np.mean(np.array(ps) < alpha)), fpr, sims))
    return out


def _draw(a: UnitData, b: UnitData, idx: np.ndarray, flip: np.ndarray) -> tuple[UnitData, UnitData]:
    """The pairs at ``idx``, each pair's sides swapped where ``flip``: an exact null whatever the pair's own
    observed difference (which is noise, not an effect)."""
    pa, pb = _sample(a, idx), _sample(b, idx)
    va, vb = pa.values.copy(), pb.values.copy()
    pa.values, pb.values = np.where(flip, vb, va), np.where(flip, va, vb)
    return pa, pb


def _sample(u: UnitData, idx: np.ndarray) -> UnitData:
    """The units at ``idx``, renamed so that a prompt drawn twice counts as two clusters."""
    t = u.take(idx)
    t.prompt_ids = np.array([f"s{k}" for k in range(len(idx))])
    t.image_index = np.zeros(len(idx), dtype=np.int64)
    t.replicate = np.zeros(len(idx), dtype=np.int64)
    return t


def _inject(x: np.ndarray, effect: float, binary: bool, rng: np.random.Generator) -> np.ndarray:
    if not binary:
        return x + effect
    zeros = x == 0.0
    share = zeros.mean()
    if share == 0:
        return x
    flip = zeros & (rng.random(x.shape) < min(1.0, effect / share))
    return np.where(flip, 1.0, x)


__all__ = ["power_table", "PowerPoint"]
