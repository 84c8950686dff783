"""The statistics engine: unit data, resampling, paired tests, Holm (its calibration on synthetic data and the power
tables: test_stats_power.py)."""
from __future__ import annotations

import numpy as np
import pytest

from mubench.metrics.fid import fid_from_features
from mubench.stats.paired import compare_units, unit_ci
from mubench.stats.resample import Clusters, bootstrap_weights, holm, percentile_ci, permutation_p, swap_patterns
from mubench.stats.units import UnitData, pool


def mean_units(values, prompts=None, seeds=None, hib=True, strata=None) -> UnitData:
    n = len(values)
    prompts = [f"p{i:04d}" for i in range(n)] if prompts is None else prompts
    return UnitData(kind="mean" if strata is None else "strata_mean", higher_is_better=hib,
                    prompt_ids=np.array(prompts), image_index=np.zeros(n, int), values=np.asarray(values, float),
                    seeds=np.arange(n) if seeds is None else seeds, strata=strata)


# -- unit data ---------------------------------------------------------------------------------------------------

def test_unit_data_round_trips_through_bytes_and_keeps_float32_features_exact():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(30, 8)).astype(np.float32).astype(np.float64)
    u = UnitData(kind="fid", higher_is_better=False, prompt_ids=np.array([f"p{i}" for i in range(30)]),
                 image_index=np.zeros(30, int), values=feats, ref=feats[::-1].copy(), note="small")
    back = UnitData.from_bytes(u.to_bytes())
    assert back.kind == "fid" and back.note == "small" and not back.higher_is_better
    assert np.array_equal(back.values, u.values) and np.array_equal(back.ref, u.ref)
    assert back.keys() == u.keys()
    with pytest.raises(ValueError):
        UnitData(kind="median", higher_is_better=True, prompt_ids=np.array(["a"]), image_index=[0], values=[1.0])


def test_weighted_fid_matches_the_reference_fid_at_unit_weights():
    rng = np.random.default_rng(1)
    gen, ref = rng.normal(size=(80, 6)), rng.normal(0.3, 1.2, size=(80, 6))
    u = UnitData(kind="fid", higher_is_better=False, prompt_ids=np.array([f"p{i}" for i in range(80)]),
                 image_index=np.zeros(80, int), values=gen, ref=ref)
    assert u.value() == pytest.approx(fid_from_features(gen, ref), rel=1e-8, abs=1e-9)
    # a weight of 2 on every unit is the same Gaussian (up to the ddof-1 normalisation of the count)
    doubled = u.evaluate(gen, np.full((1, 80), 2.0))[0]
    assert doubled == pytest.approx(fid_from_features(np.repeat(gen, 2, 0), np.repeat(ref, 2, 0)), rel=1e-8)


def test_strata_mean_is_the_mean_of_the_strata_means():
    u = mean_units([1, 1, 1, 0, 0, 0, 0, 1], strata=np.array(["a", "a", "a", "b", "b", "b", "b", "b"]))
    assert u.value() == pytest.approx((1.0 + 0.2) / 2)


def test_pooling_replicates_numbers_them_and_keeps_every_unit():
    a, b = mean_units([1.0, 2.0]), mean_units([3.0, 4.0])
    p = pool([a, b])
    assert p.n == 4 and p.replicate.tolist() == [0, 0, 1, 1] and p.value() == pytest.approx(2.5)


# -- resampling ---------------------------------------------------------------------------------------------------

def test_bootstrap_keeps_strata_sizes_and_whole_clusters():
    prompts = np.array(["p0", "p0", "p1", "p1", "p2", "p3"])
    strata = np.array(["x", "x", "x", "x", "y", "y"])
    cl = Clusters.of(prompts, strata=strata)
    w = bootstrap_weights(cl, 500, seed=3)
    assert w.shape == (500, 6)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 2] == w[:, 3])  # a prompt's images move together
    assert np.all(w[:, [0, 2]].sum(1) == 2) and np.all(w[:, [4, 5]].sum(1) == 2)  # each stratum keeps its count
    assert np.array_equal(w, bootstrap_weights(cl, 500, seed=3))  # seeded


def test_swap_patterns_are_exact_for_few_clusters_and_swap_whole_prompts():
    cl = Clusters.of(np.array(["a", "a", "b", "c"]))
    s, exact = swap_patterns(cl, 2000, seed=0)
    assert exact and s.shape == (8, 4) and np.all(s[:, 0] == s[:, 1])
    assert len({tuple(r) for r in s}) == 8
    s, exact = swap_patterns(Clusters.of(np.array([f"p{i}" for i in range(40)])), 100, seed=0)
    assert not exact and s.shape == (100, 40)


def test_holm_matches_the_step_down_by_hand():
    assert holm([0.01, 0.04, 0.03, None]) == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), None]
    assert holm([0.5, 0.9]) == [pytest.approx(1.0), pytest.approx(1.0)]
    assert holm([0.5, 0.6, 0.9]) == [pytest.approx(1.0)] * 3  # 3 x 0.5 = 1.5: an adjusted p is at most 1


def test_permutation_p_counts_the_observed_labelling():
    assert permutation_p(1.0, np.array([0.0, 0.5, 2.0]), exact=False) == pytest.approx(2 / 4)
    assert permutation_p(0.0, np.zeros(7), exact=True) == 1.0


# -- paired comparisons -------------------------------------------------------------------------------------------

def test_identical_runs_compare_with_delta_exactly_zero_and_p_one():
    rng = np.random.default_rng(2)
    x = rng.random(50)
    r = compare_units("clip", mean_units(x), mean_units(x.copy()))
    assert r.delta == 0.0 and r.ci_low == 0.0 and r.ci_high == 0.0 and r.p == 1.0
    r.decide()
    assert not r.significant and r.better is None and r.shared_noise
    feats = rng.normal(size=(40, 5))
    fa = UnitData(kind="fid", higher_is_better=False, prompt_ids=np.array([f"p{i}" for i in range(40)]),
                  image_index=np.zeros(40, int), values=feats, ref=feats[::-1].copy())
    rf = compare_units("fid", fa, UnitData.from_bytes(fa.to_bytes()), resamples=300, permutations=300)
    assert rf.delta == 0.0 and rf.p == 1.0


def test_pairing_uses_only_shared_units_and_says_how_many_were_dropped():
    a = mean_units([1.0, 0.0, 1.0], prompts=["p0", "p1", "p2"])
    b = mean_units([0.0, 0.0, 1.0, 1.0], prompts=["p1", "p2", "p3", "p0"], seeds=np.array([1, 5, 3, 0]))
    r = compare_units("x", a, b, resamples=200, permutations=200)
    assert r.units == 2 + 1 and r.dropped == 1  # p0, p1, p2 shared; p3 only in b
    assert r.a == pytest.approx(2 / 3) and r.b == pytest.approx(1 / 3)
    assert not r.shared_noise  # p2 has seed 2 in a, 5 in b


def test_a_clear_effect_is_significant_in_the_right_direction_and_lower_is_better_respected():
    rng = np.random.default_rng(4)
    difficulty = rng.normal(size=120)
    a = mean_units(difficulty + rng.normal(0, 0.3, 120), hib=False)
    b = mean_units(difficulty + 0.4 + rng.normal(0, 0.3, 120), hib=False)
    r = compare_units("fid-like", a, b)
    r.decide()
    assert r.delta > 0 and r.ci_low > 0 and r.p < 0.01
    assert r.significant and r.better == "a"  # b is higher, and lower is better here


def test_few_prompts_stay_untestable_whatever_the_number_of_relabellings():
    # 5 prompts, B above A on every one: the exact test's floor is 2 / 32 > 0.05; random relabellings (2^5 > 20)
    # must not slip under it, or "too few prompts to test" would depend on permutations=
    a, b = mean_units([0.1, 0.2, 0.3, 0.4, 0.5]), mean_units([0.6, 0.7, 0.8, 0.9, 1.0])
    for permutations, seed in [(2000, 0)] + [(20, s) for s in range(30)]:
        r = compare_units("clip", a, b, resamples=0, permutations=permutations, seed=seed)
        r.decide()
        assert r.p >= 2 / 32 and r.min_p >= 2 / 32 and not r.testable and not r.significant, (permutations, seed)


def test_a_value_that_is_not_finite_is_not_tested_rather_than_significant():
    va = np.linspace(0.5, 0.9, 8)
    vb = va.copy()
    vb[3] = np.nan
    r = compare_units("clip", mean_units(va), mean_units(vb), resamples=100)
    r.decide()
    assert r.p is None and r.delta is None and not r.significant and r.better is None
    assert "not finite" in r.note


def test_fid_paired_test_detects_a_shifted_distribution():
    rng = np.random.default_rng(5)
    n, d = 60, 4
    ref = rng.normal(size=(n, d))
    a = UnitData(kind="fid", higher_is_better=False, prompt_ids=np.array([f"p{i}" for i in range(n)]),
                 image_index=np.zeros(n, int), values=ref + rng.normal(0, 0.3, (n, d)), ref=ref)
    b = UnitData(kind="fid", higher_is_better=False, prompt_ids=a.prompt_ids, image_index=a.image_index,
                 values=ref + 0.8 + rng.normal(0, 0.3, (n, d)), ref=ref)
    r = compare_units("fid", a, b, resamples=500, permutations=500)
    r.decide()
    assert r.significant and r.better == "a" and r.ci_low > 0
    lo, hi = unit_ci(b, resamples=500)
    assert lo < b.value() < hi


def test_fid_against_one_fixed_reference_equals_the_general_route():
    """The permutation test's fast path (one reference Gaussian, rooted once) gives the general route's FIDs, and the
    unit data's FID under equal weights with per-unit references is the plain FID of the two feature sets."""
    from mubench.stats.units import frechet_batched, frechet_to_fixed

    rng = np.random.default_rng(0)
    d, r = 6, 5
    a = rng.normal(size=(r, d, d))
    s1 = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(d)
    b = rng.normal(size=(d, d))
    s2 = b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=(r, d)), rng.normal(size=d)
    general = frechet_batched(mu1, s1, np.broadcast_to(mu2, mu1.shape), np.broadcast_to(s2, s1.shape))
    np.testing.assert_allclose(frechet_to_fixed(mu1, s1, mu2, s2), general, rtol=1e-9, atol=1e-9)
    x, ref = rng.normal(size=(80, d)), rng.normal(loc=0.5, size=(80, d))
    u = UnitData(kind="fid", higher_is_better=False, prompt_ids=np.arange(80), image_index=np.zeros(80), values=x,
                 ref=ref)
    ones = np.ones((3, 80))
    np.testing.assert_allclose(u.evaluate(x, ones), fid_from_features(x, ref), rtol=1e-7)


def test_random_relabellings_set_their_own_floor_on_p():
    """30 prompts (exact floor 2 / 2^30) but 19 random relabellings: p cannot go below 1/20 = alpha, so the metric is
    untestable at alpha 0.05 (the boundary belongs to 'untestable'), and testable once the relabellings allow it."""
    rng = np.random.default_rng(5)
    base = rng.normal(0.5, 0.05, 30)
    a, b = mean_units(base), mean_units(base + 0.2)
    r = compare_units("clip", a, b, resamples=0, permutations=19)
    r.decide(0.05)
    assert r.min_p == pytest.approx(1 / 20) and not r.testable and not r.significant
    r = compare_units("clip", a, b, resamples=0, permutations=2000)
    r.decide(0.05)
    assert r.testable and r.significant


def test_fid_bootstrap_draws_are_recentred_on_the_estimate():
    """Resamples with duplicate images bias FID upwards; the shift removes that bias (moves the draws' mean onto the
    estimate) and keeps their spread."""
    from mubench.stats.resample import percentile_ci

    draws = np.arange(100.0) + 50.0  # mean 99.5, estimate 10: biased by +89.5
    lo, hi = percentile_ci(draws, 10.0, shift=True)
    assert (lo, hi) == pytest.approx((np.percentile(draws, 2.5) - 89.5, np.percentile(draws, 97.5) - 89.5))
    assert lo < 10.0 < hi
    assert percentile_ci(draws, 10.0) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))  # no shift


def test_pooled_replicates_are_resampled_within_each_drawn_prompt():
    """Two-stage bootstrap: a prompt drawn k times carries k x (number of replicates) replicate draws."""
    prompts = np.array(["p0", "p1", "p2", "p0", "p1", "p2"])
    cl = Clusters.of(prompts, replicate=np.array([0, 0, 0, 1, 1, 1]))
    w = bootstrap_weights(cl, 2000, seed=5)
    assert np.all(w.sum(1) == 6)  # 3 prompts drawn x 2 replicate draws each
    pair_sum = w[:, :3] + w[:, 3:]
    assert np.all(pair_sum % 2 == 0)  # each draw of a prompt adds two replicate draws to it
    assert np.any(w[:, :3] != w[:, 3:])  # the replicates of a prompt are weighted apart (second stage)
    assert (w == 0).any(axis=0).all() and (w > 0).any(axis=0).all()  # each unit is sometimes left out, sometimes in
    assert np.abs(w.mean(0) - 1.0).max() < 0.1  # unbiased: each unit weighs 1 on average
    one = bootstrap_weights(Clusters.of(prompts[:3]), 200, seed=5)
    assert np.all(one.sum(1) == 3)


def test_runs_without_image_seeds_never_claim_shared_noise():
    x = np.random.default_rng(3).random(20)
    unseeded = np.full(20, -1)
    r = compare_units("clip", mean_units(x, seeds=unseeded), mean_units(x + 0.1, seeds=unseeded.copy()),
                      resamples=0, permutations=100)
    assert not r.shared_noise and r.units == 20
    r = compare_units("clip", mean_units(x), mean_units(x + 0.1), resamples=0, permutations=100)
    assert r.shared_noise


# -- weighted evaluation and power --------------------------------------------------------------------------------

def test_a_weighted_mean_divides_by_the_weights_not_the_unit_count():
    from mubench.stats.units import UnitData

    u = UnitData(kind="mean", higher_is_better=True, prompt_ids=np.array(["p0", "p1", "p1", "p1"]),
                 image_index=np.array([0, 0, 1, 2]), values=np.array([1.0, 0.0, 0.0, 0.0]))
    # a bootstrap draw of p0 twice (one image) and p1 never: the mean is 1, not 2 / 4
    assert u.evaluate(u.values, np.array([[2.0, 0, 0, 0], [1.0, 1, 1, 1]])) == pytest.approx([1.0, 0.25])


def test_batched_fid_with_per_unit_references_equals_row_by_row():
    from mubench.stats.units import UnitData

    rng = np.random.default_rng(0)
    n, d = 40, 3
    u = UnitData(kind="fid", higher_is_better=False, prompt_ids=np.array([f"p{i}" for i in range(n)]),
                 image_index=np.zeros(n, int), values=rng.normal(size=(n, d)), ref=rng.normal(0.5, 1, size=(n, d)))
    w = np.vstack([np.ones(n), rng.integers(0, 3, n)]).astype(float)
    batched = u.evaluate(u.values, w)
    assert batched == pytest.approx([u.evaluate(u.values, w[k:k + 1])[0] for k in range(2)], rel=1e-9)


def test_build_keeps_seed_zero_and_the_suites_own_value():
    """Seed 0 is a seed (not 'unknown', -1), metric_from_units keeps the value a suite computed, and
    suite.bootstrap_resamples=0 gives no CI, not a zero-width one."""
    import numpy as np

    from mubench.stats.build import mean_units, metric_from_units
    from mubench.suites.base import PromptItem, SampleRecord

    recs = [SampleRecord(PromptItem(f"p{k}", "x"), 0, k, f"k{k}", "") for k in range(3)]  # seeds 0, 1, 2
    u = mean_units(recs, [1.0, 0.0, 1.0])
    assert u.seeds.tolist() == [0, 1, 2]
    assert metric_from_units(u, 0, value=0.25).value == 0.25 and metric_from_units(u, 0).value == np.mean([1, 0, 1])
    m = metric_from_units(u, 0)
    assert m.ci_low is None and m.ci_high is None and m.n == 3


def test_fid_units_note_only_below_the_feature_dimension():
    """n == d is not biased by the rule FID itself applies (it refuses only n < d): no note there."""
    import numpy as np

    from mubench.stats.build import fid_units
    from mubench.suites.base import PromptItem, SampleRecord

    recs = [SampleRecord(PromptItem(f"p{k}", "x"), 0, k, f"k{k}", "") for k in range(4)]
    assert fid_units(recs, np.zeros((4, 4)), ref=np.zeros((4, 4))).note == ""
    assert "biased" in fid_units(recs[:3], np.zeros((3, 4)), ref=np.zeros((3, 4))).note


def test_replicates_are_redrawn_independently_for_each_prompt():
    """Second stage of the pooled bootstrap: each drawn prompt gets its own draw of the replicate runs, so two prompts'
    replicate splits in one resample are independent: with two replicates a prompt's split is (2, 0), (1, 1) or (0, 2)
    with probabilities 1/4, 1/2, 1/4, so two prompts' splits agree with probability 1/16 + 1/4 + 1/16 = 0.375."""
    prompts = np.array(["p0", "p1", "p0", "p1"])
    cl = Clusters.of(prompts, replicate=np.array([0, 0, 1, 1]))
    w = bootstrap_weights(cl, 4000, seed=7)
    both = (w[:, 0] + w[:, 2] > 0) & (w[:, 1] + w[:, 3] > 0)  # both prompts drawn (once each: 2 prompts, 2 draws)
    share0 = w[both, 0] / (w[both, 0] + w[both, 2])  # replicate 0's share of prompt p0's weight
    share1 = w[both, 1] / (w[both, 1] + w[both, 3])
    agree = np.mean(share0 == share1)
    assert both.sum() > 1000 and abs(agree - 0.375) < 0.05


def test_swap_patterns_enumerate_when_two_to_the_clusters_equals_the_budget():
    """Every relabelling is enumerated when 2**C is at most the number of permutations, equality included."""
    cl = Clusters.of(np.array(["a", "b", "c"]))
    s, exact = swap_patterns(cl, 8, seed=0)
    assert exact and len({tuple(r) for r in s}) == 8
    s, exact = swap_patterns(cl, 7, seed=0)
    assert not exact and s.shape == (7, 3)


def test_random_swap_patterns_follow_the_seed():
    """Random relabellings are reproducible for one seed and differ between seeds."""
    cl = Clusters.of(np.array([f"p{i}" for i in range(30)]))
    a, _ = swap_patterns(cl, 50, seed=1)
    assert np.array_equal(a, swap_patterns(cl, 50, seed=1)[0])
    assert not np.array_equal(a, swap_patterns(cl, 50, seed=2)[0])


def test_percentile_ci_ignores_non_finite_draws_and_needs_two():
    """Draws that are NaN or infinite (a failed resample) are left out, not counted as zeros; with fewer than two
    finite draws there is no interval."""
    draws = np.concatenate([np.arange(1.0, 101.0), [np.nan, np.inf, -np.inf]])
    assert percentile_ci(draws, 50.0) == pytest.approx(tuple(np.percentile(np.arange(1.0, 101.0), [2.5, 97.5])))
    assert percentile_ci(np.array([3.0, np.nan]), 3.0) == (None, None)
    assert percentile_ci(np.array([3.0, 4.0]), 3.5) == pytest.approx((3.025, 3.975))


def test_fid_recentring_moves_the_draws_mean_not_their_median():
    """The shift subtracts the bias of the draws' mean from the estimate: for skewed draws the recentred interval is
    the plain one moved by (mean - estimate), whatever the median."""
    draws = np.array([0.0] * 90 + [100.0] * 10)  # mean 10, median 0
    lo, hi = percentile_ci(draws, 4.0, shift=True)
    plain = np.percentile(draws, [2.5, 97.5])
    assert (lo, hi) == pytest.approx((plain[0] - 6.0, plain[1] - 6.0))


def test_permutation_p_treats_float_ties_as_ties_but_no_more():
    """A null statistic equal to the observed one up to rounding (0.1 + 0.2 vs 0.3) counts as at least as extreme;
    one smaller by a real margin (1e-4 relative) does not."""
    assert 0.1 + 0.2 != 0.3
    assert permutation_p(0.1 + 0.2, np.array([0.3, 0.0, 0.0, 0.0]), exact=True) == pytest.approx(1 / 4)
    assert permutation_p(-(0.1 + 0.2), np.array([0.3, 0.0, 0.0, 0.0]), exact=True) == pytest.approx(1 / 4)  # two-sided
    assert permutation_p(1.0, np.array([0.9999, 0.0, 0.0, 0.0]), exact=True) == 0.0


def test_holm_leaves_non_finite_p_values_out_of_the_family():
    """A NaN p-value (an untestable metric) is not adjusted (None) and does not enlarge the family."""
    out = holm([0.01, float("nan"), 0.02])
    assert out[1] is None and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)
