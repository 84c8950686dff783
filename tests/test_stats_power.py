"""The paired test's calibration on synthetic data with a known null and known effects (its false-positive rate must
be alpha, its power the one the effect size predicts), and ``mubench.stats.power``'s power tables."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mubench.stats.paired import compare_units
from mubench.stats.power import power_table
from results_fakes import fake_units


def _simulate(n_sims: int, n: int, effect: float, noise: float, seed: int, binary: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ps = np.empty(n_sims)
    for s in range(n_sims):
        difficulty = rng.normal(size=n)
        if binary:
            a = (difficulty + rng.normal(0, 1, n) > 0).astype(float)
            b = (difficulty + rng.normal(0, 1, n) > 0).astype(float)
        else:
            a = difficulty + rng.normal(0, noise, n)
            b = difficulty + effect + rng.normal(0, noise, n)
        ps[s] = compare_units("m", fake_units(a), fake_units(b), resamples=0, permutations=400, seed=s).p
    return ps


def test_false_positive_rate_of_the_paired_test_is_alpha_under_a_known_null():
    ps = _simulate(n_sims=800, n=40, effect=0.0, noise=0.5, seed=11)
    fpr = float(np.mean(ps < 0.05))
    assert 0.03 <= fpr <= 0.07, fpr


def test_binary_scores_under_the_null_do_not_inflate_the_false_positive_rate():
    ps = _simulate(n_sims=500, n=48, effect=0.0, noise=0.0, seed=12, binary=True)
    assert float(np.mean(ps < 0.05)) <= 0.07


def test_power_matches_the_effect_size_the_normal_approximation_predicts():
    n, effect, noise = 40, 0.25, 0.5
    sd_diff = noise * math.sqrt(2)
    z = effect / (sd_diff / math.sqrt(n))
    predicted = 0.5 * math.erfc((1.959964 - z) / math.sqrt(2))  # P(Z > 1.96 - z), ~0.61
    power = float(np.mean(_simulate(n_sims=400, n=n, effect=effect, noise=noise, seed=13) < 0.05))
    assert abs(power - predicted) <= 0.07, (power, predicted)


def test_power_table_from_an_aa_pair_rises_with_n_and_effect():
    rng = np.random.default_rng(21)
    latent = rng.normal(size=200)
    a = fake_units((latent + rng.normal(0, 1, 200) > 0).astype(float))
    b = fake_units((latent + rng.normal(0, 1, 200) > 0).astype(float))
    table = power_table(a, b, ns=[32, 256], effects=[0.05, 0.25], sims=60, permutations=200)
    power = {(p.n, p.effect): p.power for p in table}
    assert power[(256, 0.25)] > 0.95 and power[(32, 0.05)] < 0.4
    assert power[(256, 0.25)] >= power[(32, 0.25)] and power[(256, 0.25)] >= power[(256, 0.05)]
    assert all(p.false_positive_rate <= 0.12 for p in table)


def test_power_draws_count_a_prompt_drawn_twice_as_two_clusters():
    a, b = fake_units([0.1, 0.5, 0.3, 0.9]), fake_units([0.2, 0.4, 0.35, 0.8])  # 4 prompts, drawn 64 at a time
    [pt] = power_table(a, b, ns=[64], effects=[1.0], sims=10, permutations=200)
    assert pt.power == 1.0 and pt.sims == 10  # sims: the number of simulations


def test_power_counts_p_equal_to_alpha_as_not_significant():
    """19 relabellings: p cannot go below 1/20 = alpha, which is 'not significant' (as in compare's decide)."""
    rng = np.random.default_rng(1)
    a, b = fake_units(rng.normal(size=50)), fake_units(rng.normal(size=50))
    [pt] = power_table(a, b, ns=[40], effects=[100.0], sims=10, permutations=19)
    assert pt.power == 0.0 and pt.false_positive_rate == 0.0


def test_power_needs_at_least_two_shared_units():
    with pytest.raises(ValueError, match="fewer than 2 units"):
        power_table(fake_units([0.5]), fake_units([0.4]), ns=[8], effects=[0.1], sims=2, permutations=10)
