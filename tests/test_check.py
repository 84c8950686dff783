"""`mubench baseline` / `mubench check`: direction-aware regression checks with tolerances (no models)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_fakes import call
from mubench.check import compare, load_baseline, make_baseline, parse_tolerance, Tolerance
from mubench.errors import UsageError
from mubench.store import Store
from results_fakes import fake_results


def _run_dir(root, name: str, results: dict) -> str:
    d = root / name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(results))
    return str(d)


@pytest.fixture
def baseline(tmp_path, capsys):
    """A baseline written by the CLI from a store: sd on micro, fid 20 (lower better), clip 0.30 (higher better)."""
    store = tmp_path / "base.sqlite"
    with Store(store) as st:
        st.record_run(fake_results("sd", {"fid": 20.0, "clip": 0.30}, ci=0.5))
    path = tmp_path / "baseline.json"
    code, _, err = call(capsys, "baseline", "--write", str(path), f"store={store}", "tolerance.clip=rel:0.1")
    assert code == 0, err
    return path


def test_baseline_file_holds_metrics_protocol_and_tolerances(baseline):
    data = load_baseline(baseline)
    [entry] = data["entries"]
    assert (entry["suite"], entry["method"], entry["model"], entry["protocol_hash"]) == ("micro", "sd", "micro",
                                                                                          "proto-a")
    assert entry["metrics"]["fid"] == {"value": 20.0, "ci_low": 19.5, "ci_high": 20.5, "n": 100,
                                       "higher_is_better": False}
    assert entry["protocol"]["sampler"]["steps"] == 20
    assert data["tolerances"] == {"clip": "rel:0.1"}


def test_equal_results_pass(tmp_path, baseline, capsys):
    run = _run_dir(tmp_path, "run", fake_results("sd", {"fid": 20.0, "clip": 0.30}))
    code, out, err = call(capsys, "check", "--baseline", str(baseline), f"results={run}")
    assert code == 0, out + err
    assert "check passed" in out


def test_injected_regression_fails_with_a_readable_diff(tmp_path, baseline, capsys):
    run = _run_dir(tmp_path, "run", fake_results("sd", {"fid": 23.5, "clip": 0.30}))  # FID up = worse
    code, out, _ = call(capsys, "check", "--baseline", str(baseline), f"results={run}")
    assert code == 1
    assert "REGRESSED" in out and "check failed" in out
    assert "fid: 20 → 23.5 (lower is better; worse by 3.5 > allowed" in out


def test_improvements_pass_in_both_directions(tmp_path, baseline, capsys):
    run = _run_dir(tmp_path, "run", fake_results("sd", {"fid": 15.0, "clip": 0.40}))
    code, out, _ = call(capsys, "check", "--baseline", str(baseline), f"results={run}", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["passed"] is True
    assert {f["metric"]: f["status"] for f in report["findings"]} == {"fid": "better", "clip": "better"}


def test_lower_clip_is_a_regression_but_within_file_tolerance_passes(tmp_path, baseline, capsys):
    within = _run_dir(tmp_path, "within", fake_results("sd", {"fid": 20.0, "clip": 0.28}))  # -6.7% < rel:0.1
    code, out, _ = call(capsys, "check", "--baseline", str(baseline), f"results={within}", "--json")
    assert code == 0
    assert {f["metric"]: f["status"] for f in json.loads(out)["findings"]}["clip"] == "worse, within tolerance"
    beyond = _run_dir(tmp_path, "beyond", fake_results("sd", {"fid": 20.0, "clip": 0.26}))  # -13%
    code, out, _ = call(capsys, "check", "--baseline", str(baseline), f"results={beyond}")
    assert code == 1 and "clip: 0.3 → 0.26 (higher is better" in out


def test_command_line_tolerance_overrides_the_file(tmp_path, baseline, capsys):
    run = _run_dir(tmp_path, "run", fake_results("sd", {"fid": 21.0, "clip": 0.28}))
    code, _, _ = call(capsys, "check", "--baseline", str(baseline), f"results={run}")
    assert code == 1  # fid exact by default
    code, out, _ = call(capsys, "check", "--baseline", str(baseline), f"results={run}", "tolerance.fid=abs:1.5")
    assert code == 0, out
    code, _, _ = call(capsys, "check", "--baseline", str(baseline), f"results={run}", "tolerance.fid=abs:1.5",
                      "tolerance.clip=rel:0.01")  # the command line beats the file's rel:0.1 for clip
    assert code == 1
    code, _, _ = call(capsys, "check", "--baseline", str(baseline), f"results={run}", "tolerance=rel:0.06")
    assert code == 0  # default for fid (5% worse); the file's clip rel:0.1 still applies
    code, _, _ = call(capsys, "check", "--baseline", str(baseline), f"results={run}", "tolerance.fid=ci:2")
    assert code == 0  # 2 x CI half-width 0.5 = 1.0 >= 1.0 worse


def test_check_against_a_store_and_protocol_change(tmp_path, baseline, capsys):
    store = tmp_path / "current.sqlite"
    with Store(store) as st:
        st.record_run(fake_results("sd", {"fid": 20.0, "clip": 0.30}, protocol_hash="proto-b", steps=50))
    code, out, _ = call(capsys, "check", "--baseline", str(baseline), f"store={store}")
    assert code == 1 and "PROTOCOL CHANGED" in out and "sampler.steps 20 → 50" in out
    code, out, _ = call(capsys, "check", "--baseline", str(baseline), f"store={store}", "protocol=any")
    assert code == 0, out
    with Store(store) as st:  # a run under the baseline's protocol is preferred when both exist
        st.record_run(fake_results("sd", {"fid": 25.0, "clip": 0.30}, created="2025-01-01T00:00:00+00:00"))
    code, out, _ = call(capsys, "check", "--baseline", str(baseline), f"store={store}")
    assert code == 1 and "REGRESSED" in out and "PROTOCOL" not in out


def test_missing_metric_fails_and_new_metric_is_shown(tmp_path, baseline, capsys):
    run = _run_dir(tmp_path, "run", fake_results("sd", {"fid": 20.0, "overall": 0.5}))
    code, out, _ = call(capsys, "check", "--baseline", str(baseline), f"results={run}", "--json")
    assert code == 1
    statuses = {f["metric"]: f["status"] for f in json.loads(out)["findings"]}
    assert statuses == {"fid": "ok", "clip": "MISSING", "overall": "new"}


@pytest.mark.parametrize("content, needle", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    (json.dumps({"schema": "something/9", "entries": []}), "'schema'"),
    (json.dumps({"schema": "mubench.baseline/1", "entries": []}), "non-empty list"),
    (json.dumps({"schema": "mubench.baseline/1", "entries": [{"suite": "micro", "method": "sd", "model": "m",
                                                              "metrics": {"fid": {"value": "x"}}}]}), "numeric"),
    (json.dumps({"schema": "mubench.baseline/1", "tolerances": {"fid": "pct:3"},
                 "entries": [{"suite": "micro", "method": "sd", "model": "m", "metrics": {"fid": {"value": 1}}}]}),
     "unknown tolerance kind"),
])
def test_missing_or_malformed_baseline_exits_2(tmp_path, capsys, content, needle):
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    run = _run_dir(tmp_path, "run", fake_results("sd", {"fid": 20.0}))
    code, out, err = call(capsys, "check", "--baseline", str(path), f"results={run}")
    assert code == 2 and needle in err and "Traceback" not in err


def test_no_matching_results_and_bad_arguments_exit_2(tmp_path, baseline, capsys):
    run = _run_dir(tmp_path, "run", fake_results("lora", {"fid": 20.0}))
    code, _, err = call(capsys, "check", "--baseline", str(baseline), f"results={run}")
    assert code == 2 and "no current results match the baseline" in err
    code, _, err = call(capsys, "check", "--baseline", str(baseline), f"results={run}", "tolerence.fid=abs:1")
    assert code == 2 and "did you mean 'tolerance'" in err
    code, _, err = call(capsys, "check", "--baseline", str(baseline), f"results={run}", "tolerance.fid=lots")
    assert code == 2 and "not a tolerance" in err
    code, _, err = call(capsys, "check", f"results={run}")
    assert code == 2 and "--baseline" in err
    # a misspelt metric or method must not drop out of a CI gate silently
    code, _, err = call(capsys, "check", "--baseline", str(baseline), f"results={run}", "tolerance.clpi=abs:0.1")
    assert code == 2 and "tolerance.clpi" in err and "did you mean 'clip'" in err
    code, _, err = call(capsys, "check", "--baseline", str(baseline), f"results={run}", "methods=sd,sdd")
    assert code == 2 and "methods=sdd" in err and "did you mean 'sd'" in err
    code, _, err = call(capsys, "baseline", "--write", str(tmp_path / "b2.json"), f"results={run}", "methods=lora,lroa")
    assert code == 2 and "methods=lroa" in err and not (tmp_path / "b2.json").exists()
    code, _, err = call(capsys, "baseline", f"results={run}")
    assert code == 2 and "--write" in err
    # the file given as a key, as the other keys are: told how to give it
    code, _, err = call(capsys, "check", f"baseline={baseline}", f"results={run}")
    assert code == 2 and f"give it as --baseline {baseline}, not baseline={baseline}" in err
    code, _, err = call(capsys, "baseline", f"write={tmp_path / 'b3.json'}", f"results={run}")
    assert code == 2 and "give it as --write" in err and not (tmp_path / "b3.json").exists()


def test_outputs_never_overwrite_mubench_data_or_a_folder(tmp_path, baseline, capsys):
    run = _run_dir(tmp_path, "run", fake_results("sd", {"fid": 20.0, "clip": 0.30}))
    results = Path(run) / "results.json"
    before = results.read_bytes()
    code, _, err = call(capsys, "baseline", "--write", str(results), f"results={run}")
    assert code == 2 and "is not a mubench baseline (a run's results)" in err and results.read_bytes() == before
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    code, _, err = call(capsys, "baseline", "--write", str(other), f"results={run}")
    assert code == 2 and other.read_text() == "mine"
    code, _, err = call(capsys, "baseline", "--write", str(tmp_path), f"results={run}")
    assert code == 2 and "is a folder" in err and not list(tmp_path.glob(".*tmp*"))
    code, _, err = call(capsys, "baseline", "--write", str(baseline), f"results={run}")  # a baseline is replaced
    assert code == 0, err
    code, _, err = call(capsys, "report", f"results={run}", f"out={baseline}")
    assert code == 2 and "holds a mubench baseline" in err and load_baseline(baseline)
    code, _, err = call(capsys, "report", f"results={run}", f"out={other}")  # any other file: an old report
    assert code == 0 and "| sd |" in other.read_text()


def _paired_check(base_values, cur_values, base_value, cur_value, tolerance="abs:0.01"):
    from mubench.check import compare
    from results_fakes import fake_units

    base = fake_results("sd", {"clip": base_value})
    cur = fake_results("sd", {"clip": cur_value})
    cur["created"] = "9999"
    baseline = make_baseline([base], {"clip": tolerance}, units={base["run_id"]: {"clip": fake_units(base_values)}})
    current = cur_values if hasattr(cur_values, "kind") else fake_units(cur_values)
    report = compare(baseline, [cur], current_units={cur["run_id"]: {"clip": current}})
    [finding] = [f for f in report.findings if f.metric == "clip"]
    return finding


def test_check_regresses_only_when_the_paired_test_finds_the_current_run_worse():
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.normal(0.7, 0.02, 40)
    # the reported value is worse beyond tolerance, but on the shared prompts the current run is significantly better
    f = _paired_check(base, base + 0.02 + rng.normal(0, 0.002, 40), 0.70, 0.60)
    assert f.status == "worse, within tolerance" and f.significant and "significantly better" in f.note
    f = _paired_check(base, base - 0.1 + rng.normal(0, 0.002, 40), 0.70, 0.60)  # worse on both counts
    assert f.status == "REGRESSED" and f.significant


def test_check_without_a_usable_paired_test_keeps_the_tolerance_rule():
    # four shared prompts cannot reach alpha, and no shared prompt cannot be tested: the tolerance decides
    f = _paired_check([0.7, 0.71, 0.72, 0.73], [0.3, 0.31, 0.32, 0.33], 0.715, 0.315)
    assert f.status == "REGRESSED" and f.significant is None and "no paired test" in f.note
    from results_fakes import fake_units

    disjoint = fake_units([0.3] * 4, prompts=[f"q{i}" for i in range(4)])
    f = _paired_check([0.7] * 4, disjoint, 0.7, 0.3)
    assert f.status == "REGRESSED" and "no paired test" in f.note


def test_subprocess_exit_code_1_on_regression(tmp_path, baseline):
    """What CI sees: `python -m mubench check` exits 1 and prints the diff (one subprocess: imports are slow)."""
    bad = _run_dir(tmp_path, "bad", fake_results("sd", {"fid": 30.0, "clip": 0.30}))
    proc = subprocess.run([sys.executable, "-m", "mubench", "check", "--baseline", str(baseline), f"results={bad}"],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 1 and "REGRESSED" in proc.stdout and "Traceback" not in proc.stderr
    assert "check failed" in proc.stderr


def test_tolerance_parsing_and_direction_in_the_library():
    assert parse_tolerance("abs:0.5") == Tolerance("abs", 0.5)
    assert parse_tolerance("rel:5%") == Tolerance("rel", 0.05)
    assert parse_tolerance(2) == Tolerance("abs", 2.0)
    with pytest.raises(UsageError):
        parse_tolerance("abs:-1")
    base = make_baseline([fake_results("sd", {"fid": 10.0, "clip": 0.5})])
    report = compare(base, [fake_results("sd", {"fid": 9.0, "clip": 0.4})], {"clip": "abs:0.05"})
    by_metric = {f.metric: f for f in report.findings}
    assert by_metric["fid"].status == "better" and by_metric["fid"].worse_by == pytest.approx(-1.0)
    assert by_metric["clip"].status == "REGRESSED" and by_metric["clip"].worse_by == pytest.approx(0.1)
    assert report.failed


def test_baseline_write_refuses_tolerances_check_could_not_use(tmp_path, capsys):
    """A misspelt metric in the file would leave its metric exact; ci:K on a metric without a CI would make every
    later check exit 2; another tool's JSON with 'entries' and 'tolerances' keys is not a baseline to replace."""
    run = _run_dir(tmp_path, "run", fake_results("sd", {"fid": 20.0, "clip": 0.30}))
    out = tmp_path / "b.json"
    code, _, err = call(capsys, "baseline", "--write", str(out), f"results={run}", "tolerance.clpi=abs:1")
    assert code == 2 and "tolerance.clpi: the baseline has no metric 'clpi'; did you mean 'clip'?" in err
    assert not out.exists()
    code, _, err = call(capsys, "baseline", "--write", str(out), f"results={run}", "tolerance=ci:2")
    assert code == 2 and "has no confidence interval" in err and "tolerance.fid=abs:X" in err, err
    mine = tmp_path / "cfg.json"
    mine.write_text(json.dumps({"entries": [], "tolerances": {}, "mine": 1}))
    code, _, err = call(capsys, "baseline", "--write", str(mine), f"results={run}")
    assert code == 2 and json.loads(mine.read_text())["mine"] == 1, err


def test_tolerance_arithmetic_of_each_kind():
    """What each kind allows, on values where a wrong formula gives another number (a negative value, a CI)."""
    from mubench.check import EXACT_REL

    assert Tolerance("rel", 0.1).allowed({"value": -20.0}) == pytest.approx(2.0)  # |value|: never a negative bound
    assert Tolerance("ci", 2.0).allowed({"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}) == pytest.approx(0.2)
    assert Tolerance("abs", 0.0).allowed({"value": 1e6}) == pytest.approx(EXACT_REL * 1e6)  # bits, not a change


def test_check_takes_the_newest_current_run_and_nan_is_a_regression():
    base = make_baseline([fake_results("sd", {"clip": 0.5, "fid": 10.0}, created="2026-01-01T00:00:00+00:00")],
                         {"*": "abs:0.01"})
    older = fake_results("sd", {"clip": 0.1, "fid": 10.0}, created="2026-01-02T00:00:00+00:00")
    newer = fake_results("sd", {"clip": 0.5, "fid": 10.0}, created="2026-01-03T00:00:00+00:00")
    for runs in ([older, newer], [newer, older]):  # whatever order they are found in
        assert not compare(base, runs).failed
    nan = fake_results("sd", {"clip": float("nan"), "fid": 10.0}, created="2026-01-04T00:00:00+00:00")
    [finding] = [f for f in compare(base, [nan]).findings if f.metric == "clip"]
    assert finding.status == "REGRESSED"


def test_a_baseline_snapshots_the_newest_run_of_each_method_whatever_the_order():
    older = fake_results("sd", {"clip": 0.1}, created="2026-01-02T00:00:00+00:00")
    newer = fake_results("sd", {"clip": 0.5}, created="2026-01-03T00:00:00+00:00")
    other = fake_results("lora", {"clip": 0.7}, created="2026-01-01T00:00:00+00:00")
    for runs in ([older, newer, other], [newer, other, older]):
        entries = {e["method"]: e for e in make_baseline(runs)["entries"]}
        assert sorted(entries) == ["lora", "sd"]
        assert entries["sd"]["run_id"] == newer["run_id"] and entries["sd"]["metrics"]["clip"]["value"] == 0.5
        assert entries["lora"]["run_id"] == other["run_id"]


# -- check.py ----------------------------------------------------------------------------------------------------

def test_percent_is_only_for_relative_and_infinite_tolerances_are_refused():
    from mubench.check import parse_tolerance

    for bad in ("abs:5%", "ci:50%", "abs:inf", "rel:nan", "inf"):
        with pytest.raises(UsageError):
            parse_tolerance(bad)


def test_protocol_any_compares_the_newest_run_under_the_other_protocol():
    from mubench.check import compare, make_baseline

    base = make_baseline([fake_results("sd", {"clip": 0.5})])
    old = fake_results("sd", {"clip": 0.1}, protocol_hash="proto-b", created="2026-01-02T00:00:00+00:00")
    new = fake_results("sd", {"clip": 0.5}, protocol_hash="proto-b", created="2026-01-03T00:00:00+00:00")
    for runs in ([old, new], [new, old]):
        report = compare(base, runs, any_protocol=True)
        assert not report.failed and {f.status for f in report.findings} == {"ok"}


def test_a_nan_baseline_and_a_nan_current_value_agree():
    from mubench.check import compare, make_baseline

    base = make_baseline([fake_results("sd", {"clip": float("nan")})])
    [f] = compare(base, [fake_results("sd", {"clip": float("nan")})]).findings
    assert f.status == "ok" and not f.failed
    [f] = compare(base, [fake_results("sd", {"clip": 0.5})]).findings
    assert f.status == "REGRESSED" and f.note == "baseline is NaN"


def test_float_rounding_is_ok_not_worse_within_tolerance():
    from mubench.check import compare, make_baseline

    base = make_baseline([fake_results("sd", {"clip": 0.3, "fid": 0.3})])
    cur = fake_results("sd", {"clip": 0.29999999999999993, "fid": 0.1 + 0.2})  # both worse by one ulp
    assert {f.metric: f.status for f in compare(base, [cur]).findings} == {"clip": "ok", "fid": "ok"}


def test_a_metric_whose_current_value_is_null_is_missing():
    from mubench.check import compare, make_baseline

    base = make_baseline([fake_results("sd", {"clip": 0.5})])
    cur = fake_results("sd", {"clip": 0.5})
    cur["metrics"]["clip"]["value"] = None
    [f] = compare(base, [cur]).findings
    assert f.status == "MISSING" and f.failed
