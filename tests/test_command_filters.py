"""The result commands' filters: check's baseline entries by model and by the combined filters, runs' method=, and
report's --html-only keys."""
from __future__ import annotations

import json

import pytest

from mubench.store import Store
from results_fakes import fake_results
from cli_fakes import call


@pytest.fixture
def two_model_baseline(tmp_path, capsys):
    """A baseline of sd on two models (micro, tiny) of suite micro and lora on suite coco."""
    store = tmp_path / "base.sqlite"
    with Store(store) as st:
        st.record_run(fake_results("sd", {"clip": 0.30}))
        st.record_run(fake_results("sd", {"clip": 0.50}, model="tiny"))
        st.record_run(fake_results("lora", {"clip": 0.40}, suite="coco"))
    path = tmp_path / "baseline.json"
    code, _, err = call(capsys, "baseline", "--write", str(path), f"store={store}")
    assert code == 0, err
    return path


def test_check_model_filter_leaves_out_the_baseline_entries_of_other_models(tmp_path, capsys, two_model_baseline):
    """check model=micro compares only the micro entries: the other model's entry is not listed as not run."""
    cur = tmp_path / "cur.sqlite"
    with Store(cur) as st:
        st.record_run(fake_results("sd", {"clip": 0.30}))
    code, out, err = call(capsys, "check", "--baseline", str(two_model_baseline), f"store={cur}", "model=micro",
                          "suite=micro", "--json")
    assert code == 0, out + err
    assert "tiny" not in out


def test_check_filters_that_together_match_no_baseline_entry_are_a_usage_error(tmp_path, capsys,
                                                                               two_model_baseline):
    """suite=coco and methods=sd each match some entry but none together: exit 2, not a check of nothing that
    passes."""
    cur = tmp_path / "cur.sqlite"
    with Store(cur) as st:
        st.record_run(fake_results("sd", {"clip": 0.30}, suite="coco"))
    code, out, err = call(capsys, "check", "--baseline", str(two_model_baseline), f"store={cur}", "suite=coco",
                          "methods=sd")
    assert code == 2 and "no entries matching" in err, out + err


def test_runs_method_is_a_spelling_of_methods(tmp_path, capsys):
    """mubench runs method=NAME lists only that method's runs."""
    store = tmp_path / "s.sqlite"
    with Store(store) as st:
        st.record_run(fake_results("sd", {"clip": 0.3}))
        st.record_run(fake_results("lora", {"clip": 0.4}))
    code, out, err = call(capsys, "runs", f"store={store}", "method=lora", "--json")
    assert code == 0, err
    assert [r["method"] for r in json.loads(out)] == ["lora"]


@pytest.mark.parametrize("key", ["differ_by=clip.clip", "masks=."])
def test_html_only_keys_are_refused_for_text_reports(tmp_path, capsys, key):
    """differ_by= and masks= shape only the HTML report: with a text format they are refused, not ignored."""
    store = tmp_path / "s.sqlite"
    with Store(store) as st:
        st.record_run(fake_results("sd", {"clip": 0.3}))
    code, out, err = call(capsys, "report", f"store={store}", key)
    assert code == 2 and "only to --html" in err, out + err
