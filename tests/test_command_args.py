"""KEY=VALUE arguments of the result commands: empty values, names, integers, significance levels and switches."""
from __future__ import annotations

import pytest

from mubench.commands._kv import as_alpha, as_bool, as_int, as_list, parse_kv
from mubench.errors import UsageError


def _one(arg: str):
    key = arg.partition("=")[0]
    return parse_kv([arg], [key])[key]


def test_none_is_no_value_but_a_quoted_none_is_text():
    """store=none means the default store; a quoted "none" is the text itself."""
    assert parse_kv(["store=none"], ["store"]) == {"store": None}
    assert str(parse_kv(['suite="none"'], ["suite"])["suite"]) == "none"


def test_a_prefix_key_needs_a_name_after_its_dot():
    """tolerance.=X names no metric: refused like any unknown key, while tolerance.fid=X is taken."""
    with pytest.raises(UsageError, match="unknown key 'tolerance.'"):
        parse_kv(["tolerance.=abs:1"], ["tolerance"], ["tolerance"])
    assert list(parse_kv(["tolerance.fid=abs:1"], ["tolerance"], ["tolerance"])) == ["tolerance.fid"]


def test_integer_keys_refuse_booleans_and_values_below_the_minimum():
    """resamples=true is not 1 resample; seed=0 is allowed where the minimum is 0."""
    assert as_int(_one("resamples=5"), "resamples") == 5
    assert as_int(_one("seed=0"), "seed", minimum=0) == 0
    for arg in ("resamples=true", "resamples=0", "resamples=2.5"):
        with pytest.raises(UsageError, match="expected an integer"):
            as_int(_one(arg), "resamples")


@pytest.mark.parametrize("bad", ["alpha=0", "alpha=1", "alpha=1.5", "alpha=-0.1", "alpha=true"])
def test_a_significance_level_is_strictly_between_0_and_1(bad):
    """alpha=1 would call every difference significant and alpha=0 none: both are refused."""
    with pytest.raises(UsageError, match="between 0 and 1"):
        as_alpha(_one(bad))


def test_alpha_inside_the_range_is_taken():
    assert as_alpha(_one("alpha=0.05")) == 0.05 and as_alpha(0.999) == 0.999


@pytest.mark.parametrize("arg, expected", [("ci=true", True), ("ci=false", False), ("ci=no", False),
                                           ("ci=off", False), ("ci=0", False), ("ci=1", True), ("ci=yes", True)])
def test_switches_read_true_and_false_in_their_usual_spellings(arg, expected):
    assert as_bool(_one(arg), "ci") is expected
    assert as_bool(0, "ci") is False and as_bool(1, "ci") is True
    assert as_bool("Off", "ci") is False and as_bool("no", "ci") is False  # quoted text: 'ci="off"'


def test_name_lists_drop_empty_names_and_refuse_a_list_of_none():
    """methods=a,,b, is [a, b]; methods=, names no method, which is refused rather than meaning every method."""
    assert as_list(_one("methods=a,,b,"), "methods") == ["a", "b"]
    assert as_list(["a", " ", "b"], "methods") == ["a", "b"]
    assert as_list(None, "methods") is None
    with pytest.raises(UsageError, match="at least one name"):
        as_list(_one("methods=,"), "methods")
