"""``bootstrap_mean``: the CI of a per-image mean — whole prompts resampled, image-weighted like the value, 95 %,
seeded, none for a single value."""
from __future__ import annotations


def test_bootstrap_mean_resamples_whole_groups():
    """groups (prompts) are the resampling unit: 5 prompts of 20 identical images each give a wide CI (an
    image-level bootstrap would pretend n = 100 independent values)."""
    from mubench.metrics.core import bootstrap_mean

    values = [v for v in (0.0, 0.0, 1.0, 1.0, 1.0) for _ in range(20)]
    groups = [g for g in range(5) for _ in range(20)]
    m = bootstrap_mean(values, groups=groups)
    assert m.value == 0.6 and m.n == 100
    assert m.ci_high - m.ci_low > 0.5  # image-level: about 0.19


def test_grouped_bootstrap_draws_are_image_weighted_like_the_value():
    """a resample's mean is its images' mean (sum over drawn groups / their image count), the statistic the value
    is; the mean of group means would centre the CI elsewhere when groups differ in size."""
    from mubench.metrics.core import bootstrap_mean

    values = [1.0] * 9 + [0.0] * 9  # one prompt with 9 images of 1, nine prompts with one image of 0
    groups = ["a"] * 9 + [f"b{k}" for k in range(9)]
    m = bootstrap_mean(values, groups=groups, resamples=4000)
    assert m.value == 0.5
    assert m.ci_low <= 0.5 <= m.ci_high  # mean of group means: CI about [0, 0.3]


def test_bootstrap_mean_ci_is_95_percent_reproducible_and_absent_for_one_value():
    """The interval is 95 % (not 90 %), the bootstrap is seeded, and a single value gets no CI (not a zero-width
    one)."""
    import numpy as np
    import pytest

    from mubench.metrics.core import bootstrap_mean

    x = np.random.default_rng(1).normal(size=400)
    m = bootstrap_mean(x, resamples=4000)
    assert m.ci_high - m.ci_low == pytest.approx(2 * 1.96 * x.std() / np.sqrt(len(x)), rel=0.06)
    assert bootstrap_mean(x, resamples=500) == bootstrap_mean(x, resamples=500)  # fixed seed
    assert bootstrap_mean(x, resamples=500, seed=1) != bootstrap_mean(x, resamples=500)
    one = bootstrap_mean([0.7])
    assert one.value == 0.7 and one.ci_low is None and one.ci_high is None and one.n == 1
