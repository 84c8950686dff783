"""mubench.perf.timing: clock choice, device synchronisation, the interleaved rounds' warm-up, order and progress
calls, and the median / ratio CI arithmetic. Fast: fake clocks, fake devices, constructed samples whose bootstrap
distributions are known exactly."""
from __future__ import annotations

import random
import types
from math import comb

import pytest
import torch

from mubench.errors import UsageError
from mubench.perf import timing as timing_mod
from mubench.perf.timing import Timing, interleaved, median_ci, ratio_ci, resolve_clock

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


# ---- clocks


def test_auto_clock_is_cpu_only_on_a_single_threaded_cpu(monkeypatch):
    """auto = cpu on a CPU with one thread; wall with several threads (2 included) or on a GPU (even with one thread);
    cpu on a GPU and unknown names are refused; explicit names pass through."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert resolve_clock("auto", CPU) == "cpu"
    assert resolve_clock("auto", CUDA) == "wall"
    assert resolve_clock("cpu", CPU) == "cpu"
    assert resolve_clock("wall", CUDA) == "wall"
    with pytest.raises(UsageError, match="clock=cpu"):
        resolve_clock("cpu", CUDA)
    with pytest.raises(UsageError, match="clock must be"):
        resolve_clock("gpu", CPU)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert resolve_clock("auto", CPU) == "wall"


def test_synchronize_waits_for_cuda_only_on_cuda(monkeypatch):
    """synchronize(cuda) calls torch.cuda.synchronize with that device; on a CPU it does nothing."""
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    timing_mod.synchronize(CPU)
    assert calls == []
    timing_mod.synchronize(CUDA)
    assert calls == [CUDA]


def test_timing_get_picks_the_named_clock():
    """Timing.get('wall') is the wall time, get('cpu') the CPU time."""
    t = Timing(wall_s=3.0, cpu_s=5.0)
    assert t.get("wall") == 3.0 and t.get("cpu") == 5.0


def test_time_call_reads_both_clocks_and_includes_the_wait_for_queued_work(monkeypatch):
    """time_call: wall from perf_counter, CPU from process_time, and the wall time includes the synchronisation after
    the call (work the call queued on the device), not the one before it (work queued earlier)."""
    clock = {"wall": 100.0, "cpu": 50.0, "queued": 7.0}  # 7 s queued before the call: not this call's

    def sync(device):
        clock["wall"] += clock["queued"]
        clock["queued"] = 0.0

    def fn():
        clock["wall"] += 2.0
        clock["cpu"] += 0.5
        clock["queued"] += 3.0  # asynchronous work this call launched

    monkeypatch.setattr(timing_mod, "synchronize", sync)
    monkeypatch.setattr(timing_mod, "time", types.SimpleNamespace(perf_counter=lambda: clock["wall"],
                                                                 process_time=lambda: clock["cpu"]))
    t = timing_mod.time_call(fn, CUDA)
    assert t.wall_s == pytest.approx(2.0 + 3.0) and t.cpu_s == pytest.approx(0.5)


# ---- interleaved rounds


def _fake_time_call(monkeypatch):
    """time_call replaced: each call's Timing carries its global call number (wall) so rounds can be traced."""
    log = []

    def fake(fn, device):
        fn()
        log.append(fn.name)
        return Timing(float(len(log) - 1), 0.0)

    monkeypatch.setattr(timing_mod, "time_call", fake)
    return log


def _variants(names):
    out = {}
    for n in names:
        f = lambda: None  # noqa: E731
        f.name = n
        out[n] = f
    return out


def test_interleaved_refuses_no_repeats_and_negative_warmup():
    """repeats >= 1 and warmup >= 0 are required; repeats=1, warmup=0 is accepted."""
    v = {"a": lambda: None}
    with pytest.raises(UsageError):
        interleaved(v, CPU, warmup=0, repeats=0)
    with pytest.raises(UsageError):
        interleaved(v, CPU, warmup=-1, repeats=1)
    assert len(interleaved(v, CPU, warmup=0, repeats=1)["a"]) == 1


@pytest.mark.parametrize("warmup,repeats", [(0, 3), (2, 3)])
def test_interleaved_drops_exactly_the_warmup_rounds(monkeypatch, warmup, repeats):
    """Every variant runs warmup + repeats times; the timings kept are those of the last `repeats` rounds, in round
    order, and on_call reports timed=False for exactly the warm-up calls, in call order."""
    log = _fake_time_call(monkeypatch)
    names = ["a", "b", "c"]
    progress = []
    out = interleaved(_variants(names), CPU, warmup=warmup, repeats=repeats, seed=1,
                      on_call=lambda name, timed: progress.append((name, timed)))
    rounds = warmup + repeats
    assert len(log) == rounds * len(names)
    assert progress == [(name, i >= warmup * len(names)) for i, name in enumerate(log)]
    for name in names:
        calls = [i for i, n in enumerate(log) if n == name]
        assert len(calls) == rounds
        assert [t.wall_s for t in out[name]] == [float(i) for i in calls[warmup:]]


def test_interleaved_order_is_a_fresh_seeded_shuffle_each_round(monkeypatch):
    """Round r's order is the r-th shuffle of the names by random.Random(seed) (a fresh shuffle of the listed order
    every round, the rng carried on), so a seed reproduces the order and different seeds give different orders."""
    log = _fake_time_call(monkeypatch)
    names = ["a", "b", "c", "d", "e"]
    warmup, repeats = 1, 6
    for seed in (3, 11):
        log.clear()
        interleaved(_variants(names), CPU, warmup=warmup, repeats=repeats, seed=seed)
        rng, expected = random.Random(seed), []
        for _ in range(warmup + repeats):
            order = names[:]
            rng.shuffle(order)
            expected += order
        assert log == expected, seed


# ---- median CI


def _binary(n, ones, ones_last=True):
    return [0.0] * (n - ones) + [1.0] * ones if ones_last else [1.0] * ones + [0.0] * (n - ones)


def _tail(n, p, k):
    """P(X >= k), X ~ Binomial(n, p)."""
    return sum(comb(n, x) * p ** x * (1 - p) ** (n - x) for x in range(k, n + 1))


def test_median_ci_is_the_2_5_and_97_5_percentile_of_bootstrap_medians():
    """Ten values, two of them 1 (the rest 0): a resample's median is 0.5 when exactly five draws are 1, 1 when more
    (X ~ Bin(10, 0.2)). P(X >= 6) ≈ 0.6% < 2.5% < P(X >= 5) ≈ 3.3% (< 5%), so the 97.5th percentile is 0.5, while a
    90% interval or the full range would not be; mirrored for the lower bound. Every value can be drawn, the last too."""
    assert _tail(10, 0.2, 6) < 0.025 / 2 and 0.025 * 1.2 < _tail(10, 0.2, 5) < 0.05 / 1.4
    assert median_ci(_binary(10, 2), resamples=20000) == (0.0, 0.0, 0.5)
    assert median_ci(_binary(10, 8, ones_last=True), resamples=20000) == (1.0, 0.5, 1.0)


def test_median_ci_resamples_medians_not_means():
    """One huge outlier among nine: a resample's median is the outlier only if >= 5 of 9 draws hit it (p ≈ 0.1%), so
    the CI stays within the other values; a mean would be pulled up by a single draw."""
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 1e6]
    med, lo, hi = median_ci(values)
    assert med == 5.0 and 1.0 <= lo <= med <= hi <= 8.0


def test_median_ci_needs_three_values_and_uses_its_seed():
    """No CI from 2 values, a CI from 3; the bootstrap is seeded: the same seed repeats, other seeds differ."""
    assert median_ci([1.0, 2.0]) == (1.5, None, None)
    med, lo, hi = median_ci([1.0, 2.0, 3.0])
    assert med == 2.0 and lo is not None and lo <= med <= hi
    values = [float(v) for v in torch.randn(12, generator=torch.Generator().manual_seed(0))]
    assert median_ci(values, resamples=40, seed=5) == median_ci(values, resamples=40, seed=5)
    assert len({median_ci(values, resamples=40, seed=s) for s in range(5)}) > 1


# ---- ratio CI


def test_ratio_value_is_the_ratio_of_medians():
    """value = median(numer) / median(denom): not the median of per-round ratios, not a ratio of means."""
    assert ratio_ci([1.0, 2.0, 3.0], [3.0, 1.0, 2.0])[0] == pytest.approx(1.0)  # median of ratios: 1.5
    assert ratio_ci([1.0, 2.0, 9.0], [1.0, 1.0, 1.0])[0] == pytest.approx(2.0)  # ratio of means: 4
    with pytest.raises(ValueError, match="paired"):
        ratio_ci([1.0, 2.0, 3.0], [1.0, 2.0])


def test_ratio_ci_needs_three_rounds():
    """No CI from 2 rounds, a CI from 3."""
    assert ratio_ci([2.0, 4.0], [1.0, 2.0])[1:] == (None, None)
    value, lo, hi = ratio_ci([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)


def test_ratio_ci_percentiles_of_resampled_ratio_of_medians():
    """Over denominators of 1 the ratio is the numerator's median: the same 2.5/97.5 percentiles as median_ci (see
    above). With numerator 1 and denominators five 1s and one 3 (six rounds), a resample's ratio of medians is 1/2
    when exactly three draws are the 3 (X ~ Bin(6, 1/6); P(X >= 4) ≈ 0.9% < 2.5% < P(X >= 3) ≈ 6%), so the lower
    bound is 1/2, where the median of per-round ratios would give median(1, 1/3) = 2/3."""
    ones = [1.0] * 10
    assert ratio_ci(_binary(10, 2), ones, resamples=20000) == (0.0, 0.0, 0.5)
    assert ratio_ci(_binary(10, 8, ones_last=False), ones, resamples=20000) == (1.0, 0.5, 1.0)
    assert _tail(6, 1 / 6, 4) < 0.025 / 2 and _tail(6, 1 / 6, 3) > 0.025 * 2
    value, lo, hi = ratio_ci([1.0] * 6, [1.0] * 5 + [3.0], resamples=20000)
    assert (value, lo, hi) == (1.0, 0.5, 1.0)


def test_ratio_ci_resamples_medians_not_means_and_uses_its_seed():
    """An outlier numerator in one of nine rounds leaves every resampled median ratio at 1 (it needs >= 5 of 9 draws
    to matter); a mean would not. The paired bootstrap is seeded."""
    assert ratio_ci([1.0] * 8 + [1e6], [1.0] * 9) == (1.0, 1.0, 1.0)
    g = torch.Generator().manual_seed(1)
    a, b = ([float(v) for v in torch.rand(12, generator=g) + 1] for _ in range(2))
    assert ratio_ci(a, b, resamples=40, seed=2) == ratio_ci(a, b, resamples=40, seed=2)
    assert len({ratio_ci(a, b, resamples=40, seed=s) for s in range(5)}) > 1
