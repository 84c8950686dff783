"""Timing: a named clock, device synchronisation, interleaved repeated runs and robust summaries.

Variants are timed in *rounds*: every round runs each variant once, in an order shuffled afresh (seeded) each round,
after ``warmup`` untimed rounds. Slow drift and other processes' load then hit every variant alike, and a ratio is
taken from runs made side by side. Summaries are medians with percentile-bootstrap 95% CIs; a ratio's CI resamples
whole rounds (paired), so it reflects the spread of the side-by-side comparison.

Clocks: ``wall`` (``time.perf_counter``, with ``torch.cuda.synchronize`` before and after on a GPU) and ``cpu``
(``time.process_time``: CPU time of this process, all its threads; with one intra-op thread it equals the wall time of
an idle machine and leaves out time the process waited for a core held by another program). ``auto`` = ``wall`` on a
GPU or with several CPU threads, ``cpu`` on a CPU with one thread.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..errors import UsageError

CLOCKS = ("auto", "wall", "cpu")


def resolve_clock(name: str, device: torch.device) -> str:
    """``auto`` → ``wall`` or ``cpu`` (see module docstring); ``cpu`` on a GPU is refused."""
    if name not in CLOCKS:
        raise UsageError(f"clock must be one of {', '.join(CLOCKS)}, got {name!r}")
    if name == "auto":
        if device.type != "cpu" or torch.get_num_threads() > 1:
            return "wall"
        return "cpu"
    if name == "cpu" and device.type != "cpu":
        raise UsageError("clock=cpu cannot time work on a GPU (it runs asynchronously); use clock=wall")
    return name


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Timing:
    """One timed call: wall seconds and this process's CPU seconds."""

    wall_s: float
    cpu_s: float

    def get(self, clock: str) -> float:
        return self.wall_s if clock == "wall" else self.cpu_s


def time_call(fn: Callable[[], object], device: torch.device) -> Timing:
    synchronize(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return Timing(time.perf_counter() - w0, time.process_time() - c0)


def interleaved(variants: dict[str, Callable[[], object]], device: torch.device, *, warmup: int, repeats: int,
                seed: int = 0, on_call: Optional[Callable[[str, bool], None]] = None) -> dict[str, list[Timing]]:
    """Time every variant ``repeats`` times in shuffled interleaved rounds after ``warmup`` untimed rounds.

    Returns ``{name: [Timing per round]}``; ``times[name][r]`` was measured in round ``r`` next to the other
    variants' ``[r]``. ``on_call(name, timed)`` is called after each call (progress).
    """
    if repeats < 1 or warmup < 0:
        raise UsageError(f"repeats must be >= 1 and warmup >= 0, got {repeats} / {warmup}")
    rng = random.Random(seed)
    names = list(variants)
    out: dict[str, list[Timing]] = {name: [] for name in names}
    for r in range(warmup + repeats):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            t = time_call(variants[name], device)
            if r >= warmup:
                out[name].append(t)
            if on_call is not None:
                on_call(name, r >= warmup)
    return out


def median_ci(values: Sequence[float], resamples: int = 2000, seed: int = 0) -> tuple[float, Optional[float],
                                                                                          Optional[float]]:
    """Median and a percentile-bootstrap 95% CI of the median (no CI from fewer than 3 values)."""
    x = np.asarray(values, dtype=np.float64)
    med = float(np.median(x))
    if x.size < 3:
        return med, None, None
    rng = np.random.default_rng(seed)
    meds = np.median(x[rng.integers(0, x.size, size=(resamples, x.size))], axis=1)
    lo, hi = np.percentile(meds, [2.5, 97.5])
    return med, float(lo), float(hi)


def ratio_ci(numer: Sequence[float], denom: Sequence[float], resamples: int = 2000,
             seed: int = 0) -> tuple[float, Optional[float], Optional[float]]:
    """median(numer) / median(denom), with a paired bootstrap CI that resamples whole rounds."""
    a = np.asarray(numer, dtype=np.float64)
    b = np.asarray(denom, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("a paired ratio needs one value of each side per round")
    value = float(np.median(a) / np.median(b))
    if a.size < 3:
        return value, None, None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(resamples, a.size))
    ratios = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return value, float(lo), float(hi)
