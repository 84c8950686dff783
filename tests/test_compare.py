"""`mubench compare`, significance marks in `mubench report` and replicate pooling, on stores of fake results
whose per-unit data is known (no models)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mubench.store import Store
from results_fakes import fake_results, fake_units
from cli_fakes import call

N = 60


def _record(st: Store, method: str, values: dict[str, np.ndarray], *, seed: int = 0, steps: int = 20,
            replicate: dict | None = None, protocol_hash: str = "proto-a") -> str:
    res = fake_results(method, {k: float(np.mean(v)) for k, v in values.items()}, n=N, steps=steps,
                       protocol_hash=protocol_hash)
    res["protocol"]["seed"] = seed
    if replicate:
        res["replicate"] = replicate
    units = {k: fake_units(v, seed0=seed, higher_is_better=k != "fid") for k, v in values.items()}
    return st.record_run(res, units=units)


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    difficulty = rng.normal(size=N)
    path = tmp_path / "store.sqlite"
    with Store(path) as st:
        base = difficulty + rng.normal(0, 0.2, N)
        _record(st, "sd", {"clip": base, "score": base})
        _record(st, "maskunet", {"clip": base + 0.5 + rng.normal(0, 0.2, N), "score": base + rng.normal(0, .2, N)})
        _record(st, "random-mask", {"clip": base - 0.5 + rng.normal(0, 0.2, N), "score": base + 0.02})
    return path


def test_compare_json_has_the_documented_fields_and_finds_the_clear_effect(store, capsys):
    code, out, err = call(capsys, "compare", "sd", "random-mask", f"store={store}", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert {"a", "b", "units", "dropped", "shared_noise", "metrics"} <= set(res)
    assert res["a"]["method"] == "sd" and res["b"]["method"] == "random-mask"
    assert res["units"] == N and res["dropped"] == 0 and res["shared_noise"] is True
    by = {m["metric"]: m for m in res["metrics"]}
    keys = {"metric", "higher_is_better", "a", "b", "delta", "ci_low", "ci_high", "p", "p_holm", "significant", "better"}
    assert keys <= set(by["clip"])
    clip = by["clip"]
    assert clip["significant"] and clip["better"] == "a" and clip["delta"] < 0 and clip["ci_high"] < 0
    assert clip["p_holm"] >= clip["p"]
    assert by["score"]["delta"] == pytest.approx(0.02) and by["score"]["ci_low"] == pytest.approx(0.02)


def test_a_run_compared_with_itself_by_id_has_delta_zero_and_nothing_significant(store, capsys):
    with Store(store) as st:
        run_id = st.runs(methods=["sd"])[0]["run_id"]
    code, out, err = call(capsys, "compare", run_id, run_id[:10], f"store={store}", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["same_runs"] is True
    for m in res["metrics"]:
        assert m["delta"] == 0.0 and m["p"] == 1.0 and not m["significant"] and m["better"] is None
    code, out, err = call(capsys, "compare", run_id, run_id[:10], f"store={store}")
    assert code == 0 and "A and B are the same runs" in out
    code, out, err = call(capsys, "compare", "sd", "maskunet", f"store={store}", "--json")
    assert code == 0 and json.loads(out)["same_runs"] is False


def test_differing_protocols_are_refused_with_the_keys_unless_forced(tmp_path, capsys):
    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        _record(st, "sd", {"clip": np.linspace(0, 1, N)})
        _record(st, "lora", {"clip": np.linspace(0, 1, N) + 0.1}, steps=50, protocol_hash="proto-b")
    code, out, err = call(capsys, "compare", "sd", "lora", f"store={path}")
    assert code == 2 and "mubench: error:" in err and "sampler.steps: 20 vs 50" in err and "--force" in err
    code, out, err = call(capsys, "compare", "sd", "lora", f"store={path}", "--force")
    assert code == 0 and "sampler.steps: 20 vs 50" in out


def test_compare_bad_input_exits_2_with_a_message(store, capsys):
    for args in (["compare", "sd", "nope", f"store={store}"], ["compare", "sd", "lora", f"store={store}", "alpha=2"],
                 ["compare", "sd", "maskunet", f"store={store}", "metrics=fid"],
                 ["compare", "sd", "maskunet", f"store={store}", "resamples=0"]):
        code, out, err = call(capsys, *args)
        assert code == 2 and err.startswith("mubench: error:"), (args, err)


def test_report_bolds_only_significant_winners_and_marks_against_the_baseline(store, capsys):
    code, out, err = call(capsys, "report", f"store={store}", "baseline=sd")
    assert code == 0, err
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| ") and "Method" not in line}
    clip, score = 0, 1
    assert rows["maskunet"][clip].startswith("**") and rows["maskunet"][clip].endswith("▲")
    assert rows["random-mask"][clip].endswith("▼") and not rows["random-mask"][clip].startswith("**")
    assert not rows["sd"][clip].startswith("**")
    # score: random-mask is higher by 0.02 on every prompt (significant), maskunet only by noise
    assert rows["random-mask"][score].endswith("▲")
    assert "▲" not in rows["maskunet"][score] and "▼" not in rows["maskunet"][score]
    assert sum(c.startswith("**") for r in rows.values() for c in r) == 1 + 0  # score: no row beats every other
    assert "Bold: significantly better than every other row" in out and "alpha 0.05" in out and "n = 60" in out
    code, out, err = call(capsys, "report", f"store={store}", "bold=value")
    assert code == 0 and "not a significance mark" in out and out.count("**") >= 4


def test_report_json_and_csv_carry_the_marks(store, capsys):
    code, out, err = call(capsys, "report", f"store={store}", "baseline=sd", "--json")
    assert code == 0, err
    table = json.loads(out)
    marks = {r["method"]: [c["mark"] for c in r["cells"]] for r in table["rows"]}
    assert marks["random-mask"][0] == "▼" and marks["maskunet"][0] == "▲" and table["bold_rule"] == "significant"
    code, out, err = call(capsys, "report", f"store={store}", "baseline=sd", "--csv")
    assert code == 0 and "clip [a] mark" in out.splitlines()[0] and "best ▲" in out


def test_replicate_groups_are_pooled_by_report_and_compare(tmp_path, capsys):
    rng = np.random.default_rng(3)
    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        for k, seed in enumerate((0, 1, 2)):
            _record(st, "sd", {"clip": rng.normal(size=N)}, seed=seed, protocol_hash=f"h{seed}",
                    replicate={"group": "g1", "seeds": [0, 1, 2], "index": k})
        _record(st, "lora", {"clip": rng.normal(size=N)}, seed=0)
    code, out, err = call(capsys, "report", f"store={path}", "ci=true", "--json")
    assert code == 0, err
    rows = {r["method"]: r for r in json.loads(out)["rows"]}
    assert rows["sd"]["cells"][0]["n"] == 3 * N and rows["sd"]["cells"][0]["run_id"] == "group:g1"
    code, out, err = call(capsys, "compare", "sd", "lora", f"store={path}", "--json")
    res = json.loads(out)
    assert code == 0 and len(res["a"]["run_ids"]) == 3 and res["a"]["seeds"] == [0, 1, 2]
    assert res["units"] == N  # lora has replicate 0 only: the pooled side's other replicates are dropped
    assert res["dropped"] == 2 * N


def test_a_replicate_group_pairs_with_a_single_run_by_seed_not_by_position(tmp_path, capsys):
    rng = np.random.default_rng(5)
    path = tmp_path / "s.sqlite"
    values = {seed: rng.normal(size=N) + seed for seed in (0, 1)}  # the two seeds' runs tell apart by their mean
    with Store(path) as st:  # recorded seed 1 first: the store's newest-first order is not the group's seed order
        for k, seed in ((1, 1), (0, 0)):
            _record(st, "sd", {"clip": values[seed]}, seed=seed, protocol_hash=f"h{seed}",
                    replicate={"group": "g1", "seeds": [0, 1], "index": k})
        _record(st, "lora", {"clip": values[1] + 0.01}, seed=1)
    code, out, err = call(capsys, "compare", "sd", "lora", f"store={path}", "--json")
    assert code == 0, err
    res = json.loads(out)
    clip = res["metrics"][0]
    assert res["shared_noise"] is True and res["units"] == N and res["dropped"] == N
    assert clip["a"] == pytest.approx(values[1].mean()) and clip["delta"] == pytest.approx(0.01)


def test_replicates_match_by_seed_first_then_in_order():
    from mubench.stats.paired import matched_replicates
    from mubench.stats.units import pool

    def side(*seeds):  # one run per seed, two prompts each, image seeds as fake_units makes them
        return pool([fake_units([0.0, 1.0], seed0=s) if s is not None else replace_seeds(fake_units([0.0, 1.0]))
                     for s in seeds])

    def replace_seeds(u):
        u.seeds[:] = -1
        return u

    assert matched_replicates(side(0, 1), side(1)) == ({1: 0, 0: 1}, {0: 0})
    assert matched_replicates(side(0, 1, 2), side(2, 5, 0)) == ({0: 0, 2: 1, 1: 2}, {2: 0, 0: 1, 1: 2})
    assert matched_replicates(side(3), side(4)) == ({0: 0}, {0: 0})  # no seed in common: paired anyway
    assert matched_replicates(side(0, 1), side(7)) == ({0: 0, 1: 1}, {0: 0})  # seed 1's run: no partner
    assert matched_replicates(side(None, None), side(None)) == ({0: 0, 1: 1}, {0: 0})  # unknown seeds: in order


def test_too_few_prompts_are_not_tested_rather_than_not_significant(tmp_path, capsys):
    path = tmp_path / "s.sqlite"
    with Store(path) as st:  # 3 prompts, B better on each: the exact sign-flip test cannot go below 2 / 8
        st.record_run(fake_results("sd", {"clip": 0.0}, n=3), units={"clip": fake_units([0.0, 0.1, 0.2])})
        st.record_run(fake_results("lora", {"clip": 0.5}, n=3), units={"clip": fake_units([0.5, 0.6, 0.7])})
    code, out, err = call(capsys, "compare", "sd", "lora", f"store={path}", "--json")
    assert code == 0, err
    clip = json.loads(out)["metrics"][0]
    assert clip["testable"] is False and clip["min_p"] == pytest.approx(0.25) and clip["p"] == pytest.approx(0.25)
    assert clip["ci_low"] is None and not clip["significant"] and "too few prompts" in clip["note"]
    code, out, err = call(capsys, "compare", "sd", "lora", f"store={path}")
    assert code == 0 and "too few prompts to test" in out and "no significant difference" not in out


def test_results_dirs_carry_unit_data_for_marks(tmp_path, capsys):
    from mubench.outputs import RunOutput, write_outputs

    rng = np.random.default_rng(4)
    base = rng.normal(size=N)
    for method, shift in (("sd", 0.0), ("random-mask", -1.0)):
        res = fake_results(method, {"clip": float(np.mean(base + shift))}, n=N)
        write_outputs(tmp_path / method, RunOutput(res, [], {"clip": fake_units(base + shift)}))
    code, out, err = call(capsys, "report", f"results={tmp_path}", "baseline=sd")
    assert code == 0, err
    assert "▼" in [line for line in out.splitlines() if line.startswith("| random-mask")][0]


def test_check_with_per_unit_baseline_flags_only_significant_regressions(tmp_path, capsys):
    rng = np.random.default_rng(5)
    base = rng.normal(size=N)
    old, new_noise, new_worse = tmp_path / "old.sqlite", tmp_path / "noise.sqlite", tmp_path / "worse.sqlite"
    with Store(old) as st:
        _record(st, "sd", {"clip": base})
    baseline = tmp_path / "b.json"
    code, out, err = call(capsys, "baseline", f"store={old}", f"--write={baseline}", "tolerance=abs:0.01")
    assert code == 0, err
    entry = json.loads(baseline.read_text())["entries"][0]
    assert set(entry["units"]) == {"clip"}  # the per-unit scores travel with the baseline (base64, compressed)
    with Store(new_noise) as st:  # worse by ~0.05 on average, but only by noise: beyond tolerance, not significant
        _record(st, "sd", {"clip": base - 0.05 + rng.normal(0, 1.0, N)})
    with Store(new_worse) as st:  # worse by 0.3 on every prompt
        _record(st, "sd", {"clip": base - 0.3 + rng.normal(0, 0.05, N)})
    code, out, err = call(capsys, "check", f"--baseline={baseline}", f"store={new_noise}", "--json")
    report = json.loads(out)
    clip = next(f for f in report["findings"] if f["metric"] == "clip")
    assert code == 0 and clip["significant"] is False and "not significant" in clip["note"], clip
    code, out, err = call(capsys, "check", f"--baseline={baseline}", f"store={new_worse}", "--json")
    clip = next(f for f in json.loads(out)["findings"] if f["metric"] == "clip")
    assert code == 1 and clip["status"] == "REGRESSED" and clip["significant"] is True and clip["p"] < 0.05


def test_verdicts_name_methods_not_run_ids():
    from mubench.report.comparison_text import side_names

    def side(label, method, seed, run_id):
        return {"label": label, "method": method, "seeds": seed, "run_ids": [run_id]}

    by_id = {"a": side("r1", "sd", 0, "r1"), "b": side("r2", "full-ft", 0, "r2")}
    assert side_names(by_id) == ("sd", "full-ft")
    by_name = {"a": side("sd", "sd", 0, "r1"), "b": side("random-mask", "random-mask", 0, "r2")}
    assert side_names(by_name) == ("sd", "random-mask")
    aa = {"a": side("r1", "sd", 0, "r1"), "b": side("r3", "sd", 1, "r3")}
    assert side_names(aa) == ("sd (seed 0)", "sd (seed 1)")


def test_a_pooled_metric_without_unit_data_counts_every_run_s_n():
    from mubench.selection import pooled_result

    runs = []
    for k, seed in enumerate((0, 1)):
        res = fake_results("sd", {"clip": 0.5 + k, "spread": 2.0 + k}, n=N)
        res["protocol"]["seed"] = seed
        res["replicate"] = {"group": "g", "seeds": [0, 1], "index": k}
        runs.append(res)
    units = [{"clip": fake_units(np.full(N, 0.5 + k))} for k in range(2)]
    rep, _ = pooled_result(runs, units)
    assert rep["metrics"]["spread"]["value"] == pytest.approx(2.5) and rep["metrics"]["spread"]["n"] == 2 * N
    assert rep["metrics"]["clip"]["n"] == 2 * N
    # a metric with unit data: value and CI come from the pooled units, not from one run
    from mubench.stats.paired import unit_ci
    from mubench.stats.units import pool

    assert rep["metrics"]["clip"]["value"] == pytest.approx(1.0)  # the mean of 0.5 and 1.5 over both runs' units
    low, high = unit_ci(pool([units[0]["clip"], units[1]["clip"]]))
    assert (rep["metrics"]["clip"]["ci_low"], rep["metrics"]["clip"]["ci_high"]) == pytest.approx((low, high))


def _table_store(path, runs):
    """runs: (method, model, clip values per prompt)."""
    with Store(path) as st:
        for method, model, values in runs:
            st.record_run(fake_results(method, {"clip": float(np.mean(values))}, model=model, n=N),
                          units={"clip": fake_units(values)})
    return path


def test_marks_follow_the_table_s_direction_and_stay_within_a_model(tmp_path, capsys):
    base = np.linspace(0.2, 0.4, N)
    spec = tmp_path / "t.yaml"  # a spec that says lower is better for this column
    spec.write_text("rows: [sd, lora]\ncolumns: [{metric: clip, name: Error, format: .3f, higher_is_better: false}]\n")
    path = _table_store(tmp_path / "a.sqlite", [("sd", "micro", base), ("lora", "micro", base + 0.05)])
    code, out, err = call(capsys, "report", f"store={path}", f"table={spec}", "baseline=sd")
    assert code == 0, err
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| sd") or
            line.startswith("| lora")}
    assert "▼" in rows["lora"] and "**" not in rows["lora"] and "**0.300**" in rows["sd"]
    # two base models: each row is compared with the baseline of its own model
    path = _table_store(tmp_path / "b.sqlite", [("sd", "sd15", base), ("lora", "sd15", base + 0.01),
                                                ("sd", "pixart", base + 0.1), ("lora", "pixart", base + 0.11)])
    code, out, err = call(capsys, "report", f"store={path}", "baseline=sd")
    assert code == 0, err
    marks = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in out.splitlines()
             if line.startswith("| lora")}
    assert "▲" in marks[("lora", "sd15")] and "▲" in marks[("lora", "pixart")]
    assert "of the row's own model" in out


def test_a_spec_s_rows_from_several_models_show_the_model(tmp_path, capsys):
    spec = tmp_path / "t.yaml"
    spec.write_text("rows: [sd, lora]\ncolumns: [clip]\n")
    path = _table_store(tmp_path / "c.sqlite", [("sd", "sd15", np.full(N, 0.3)), ("lora", "sd21", np.full(N, 0.33))])
    code, out, err = call(capsys, "report", f"store={path}", f"table={spec}")
    assert code == 0, err
    assert "| Method | Model |" in out and "| sd | sd15 |" in out and "| lora | sd21 |" in out


def test_latex_output_is_ascii_for_pdflatex(store, capsys):
    code, out, err = call(capsys, "report", f"store={store}", "baseline=sd", "--latex")
    assert code == 0 and "▲" not in out and out.isascii(), [ch for ch in out if not ch.isascii()]
    code, out, err = call(capsys, "compare", "sd", "random-mask", f"store={store}", "--latex")
    assert code == 0 and out.isascii(), sorted({ch for ch in out if not ch.isascii()})


def test_an_interrupted_replicate_group_says_which_seeds_never_finished(tmp_path, capsys):
    """`run seeds=0,1,2` stopped after seed 0: one recorded run must not read as a plain single-seed run."""
    rng = np.random.default_rng(7)
    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        _record(st, "sd", {"clip": rng.normal(size=N)}, seed=0, replicate={"group": "g1", "seeds": [0, 1, 2],
                                                                          "index": 0})
        _record(st, "lora", {"clip": rng.normal(size=N)}, seed=0)
    code, out, err = call(capsys, "report", f"store={path}")
    assert code == 0, err
    assert "replicate group of 3 seeds with 1 run(s) recorded; seeds 1, 2 never finished" in out
    code, out, err = call(capsys, "compare", "sd", "lora", f"store={path}")
    assert code == 0, err
    assert "replicate group with 1 of 3 runs (seeds [0]; 1, 2 never finished)" in out
    code, out, err = call(capsys, "compare", "sd", "lora", f"store={path}", "--json")
    assert json.loads(out)["a"]["seeds_missing"] == [1, 2] and json.loads(out)["b"]["seeds_missing"] == []


def test_a_baseline_row_below_the_row_it_marks_and_a_row_without_units(tmp_path, capsys):
    """▲ / ▼ say the row's side whatever the row order (the baseline may come after it), and no row is bold where
    another row of the column has a value but no per-unit data (it could not be tested against it)."""
    base = np.linspace(0.2, 0.4, N)
    spec = tmp_path / "t.yaml"
    spec.write_text("rows: [lora, sd]\ncolumns: [clip]\n")
    path = _table_store(tmp_path / "a.sqlite", [("sd", "micro", base), ("lora", "micro", base + 0.05)])
    code, out, err = call(capsys, "report", f"store={path}", f"table={spec}", "baseline=sd")
    assert code == 0, err
    [lora] = [line for line in out.splitlines() if line.startswith("| lora")]
    assert "▲" in lora and "▼" not in lora
    with Store(path) as st:  # a third row with a value and no unit data
        st.record_run(fake_results("dropout", {"clip": 0.1}, model="micro", n=N))
    code, out, err = call(capsys, "report", f"store={path}")
    assert code == 0, err
    assert "**" not in out and "No paired test (rows without per-unit data): clip" in out


def _marked_table(base, others):
    """A one-column table: sd (values ``base``) and one row per entry of ``others``, marks against sd."""
    from mubench.report.marks import apply_marks
    from mubench.report.table import Cell, Column, Row, Table

    names = ["sd", "lora", "dropout", "random-mask"][: 1 + len(others)]
    values = [np.asarray(base, float)] + [np.asarray(v, float) for v in others]
    units = {f"run-{k}": {"clip": fake_units(v)} for k, v in enumerate(values)}
    table = Table(caption=None, label=None, rows=[Row(m, "micro", m) for m in names],
                  columns=[Column("clip", "CLIP", "micro", "proto-a", "a", True, ".3f")],
                  cells={(k, 0): Cell(float(v.mean()), None, None, len(v), f"run-{k}") for k, v in enumerate(values)},
                  protocols={"a": "micro"}, notes=[])
    return apply_marks(table, units, baseline="sd")


def test_baseline_marks_are_holm_corrected_over_the_rows_compared_with_the_baseline():
    """The family of the ▲ / ▼ marks is the column's rows against the baseline, not every pair of the column (bold's
    family) and not each row alone."""
    base = np.zeros(6)
    # 6 prompts all better: exact p = 2/64 = 0.031 — marked alone, not once a second row doubles it (Holm 0.0625)
    assert _marked_table(base, [base + 1]).marks == {(1, 0): "▲"}
    assert _marked_table(base, [base + 1, base + 1]).marks == {}
    # 8 prompts: exact p = 6/256 = 0.023 per row; Holm over the 2 baseline rows 0.047 (marked), over all 3 pairs of
    # the column (the two rows tie, p 1) it would be 0.070
    base = np.zeros(8)
    d = np.array([-1.0, 3.0, 2.0, 3.0, 1.0, 2.0, 3.0, 2.0])
    assert _marked_table(base, [base + d, base + d]).marks == {(1, 0): "▲", (2, 0): "▲"}
    assert _marked_table(base, [base - d, base + d]).marks == {(1, 0): "▼", (2, 0): "▲"}


def test_the_reports_marks_use_the_given_alpha_and_permutations(tmp_path, capsys):
    """report's alpha= and permutations= reach the marks: a clear difference is marked at the defaults, not at an
    alpha below the smallest p-value the relabellings can give, nor with too few relabellings to reach 0.05."""
    base = np.linspace(0.2, 0.4, N)
    path = _table_store(tmp_path / "a.sqlite", [("sd", "micro", base), ("lora", "micro", base + 0.05)])

    def lora_row(*extra):
        code, out, err = call(capsys, "report", f"store={path}", "baseline=sd", *extra)
        assert code == 0, err
        return next(line for line in out.splitlines() if line.startswith("| lora"))

    assert "▲" in lora_row()
    assert "▲" not in lora_row("alpha=0.0001", "permutations=200")
    assert "▲" not in lora_row("permutations=10")  # p >= 1/11 > 0.05


def test_compare_records_the_resampling_seed_it_used(store, capsys):
    """The JSON names the seed of the bootstrap and the relabellings (seed=), which decides the CIs' last digits:
    with it a reader gets the same numbers again."""
    results = {}
    for seed in (0, 7):
        code, out, err = call(capsys, "compare", "sd", "maskunet", f"store={store}", f"seed={seed}", "--json")
        assert code == 0, err
        results[seed] = json.loads(out)
        assert results[seed]["test"]["seed"] == seed
    ci = {seed: [(m["ci_low"], m["ci_high"]) for m in r["metrics"]] for seed, r in results.items()}
    assert ci[0] != ci[7]
