"""Which runs a side of `compare` or a pooled row stands for — replicate pooling, the newest run, run-id prefixes,
the model filter — and what compare_sides reports (protocol differences, Holm, unit counts); fake stores, no models."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mubench.errors import UsageError
from mubench.store import Store
from results_fakes import fake_results, fake_units

N = 60


def _record(st, method, values, *, seed=0, replicate=None, protocol_hash="proto-a", created=None, suite="micro"):
    kw = {"created": created} if created else {}
    res = fake_results(method, {k: float(np.mean(v)) for k, v in values.items()}, n=N,
                       protocol_hash=protocol_hash, suite=suite, **kw)
    res["protocol"]["seed"] = seed
    if replicate:
        res["replicate"] = replicate
    st.record_run(res, units={k: fake_units(v, seed0=seed) for k, v in values.items()})
    return res["run_id"]


# -- selection.py ------------------------------------------------------------------------------------------------

def test_a_pooled_metric_without_unit_data_is_the_mean_of_its_runs_values():
    from mubench.selection import pooled_result

    runs = []
    for k, v in enumerate((1.0, 2.0, 6.0)):
        res = fake_results("sd", {"spread": v}, n=N)
        res["protocol"]["seed"] = k
        res["replicate"] = {"group": "g", "seeds": [0, 1, 2], "index": k}
        runs.append(res)
    rep, _ = pooled_result(runs, [{}, {}, {}])
    assert rep["metrics"]["spread"]["value"] == pytest.approx(3.0)  # mean, not median (2.0)


def test_the_pooled_representative_is_the_last_replicate_s_run():
    from mubench.selection import pooled_result

    runs = []
    for k in range(2):
        res = fake_results("sd", {"spread": 1.0}, n=N, created=f"2026-01-0{k + 1}T00:00:00+00:00")
        res["protocol"]["seed"] = k
        res["replicate"] = {"group": "g", "seeds": [0, 1], "index": k}
        runs.append(res)
    rep, _ = pooled_result(runs[::-1], [{}, {}])
    assert rep["created"] == runs[1]["created"] and rep["replicates"] == [runs[0]["run_id"], runs[1]["run_id"]]


def test_a_group_member_hidden_by_a_newer_run_of_its_protocol_still_pools(tmp_path):
    """`run seeds=0,1,2`, then a plain `run seed=1` (same protocol as member 1): the group still pools its 3 runs."""
    from mubench.selection import select

    rng = np.random.default_rng(0)
    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        ids = [_record(st, "sd", {"clip": rng.normal(size=N)}, seed=s, protocol_hash=f"h{s}",
                       replicate={"group": "g1", "seeds": [0, 1, 2], "index": s},
                       created=f"2026-01-01T00:00:0{s}+00:00") for s in range(3)]
        _record(st, "sd", {"clip": rng.normal(size=N)}, seed=1, protocol_hash="h1", created="2026-01-02T00:00:00+00:00")
    sel = select(store=str(path))
    [group] = [r for r in sel.results if r["run_id"] == "group:g1"]
    assert group["replicates"] == ids and group["metrics"]["clip"]["n"] == 3 * N


def test_an_interrupted_group_of_one_run_shows_that_run_unpooled(tmp_path):
    from mubench.selection import select

    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        rid = _record(st, "sd", {"clip": np.linspace(0, 1, N)}, replicate={"group": "g1", "seeds": [0, 1], "index": 0})
    [r] = select(store=str(path)).results
    assert r["run_id"] == rid and r["protocol_hash"] == "proto-a" and r["replicates_missing"] == [1]


def test_results_dirs_are_filtered_by_model(tmp_path):
    from mubench.selection import select

    for model in ("a", "b"):
        d = tmp_path / model
        d.mkdir()
        (d / "results.json").write_text(json.dumps(fake_results("sd", {"fid": 1.0}, model=model)))
    assert [r["model"] for r in select(results=str(tmp_path), model="a").results] == ["a"]


# -- comparison.py -----------------------------------------------------------------------------------------------

def _runs_store(tmp_path, specs):
    path = tmp_path / "c.sqlite"
    with Store(path) as st:
        ids = [_record(st, *s[:2], **s[2]) for s in specs]
    return path, ids


def test_a_method_side_is_its_newest_run_alone(tmp_path):
    from mubench.comparison import resolve_side

    base = np.linspace(0, 1, N)
    path, ids = _runs_store(tmp_path, [("sd", {"clip": base}, {"created": "2026-01-01T00:00:00+00:00"}),
                                       ("sd", {"clip": base + 1}, {"created": "2026-01-02T00:00:00+00:00"})])
    with Store(path) as st:
        side = resolve_side(st, "sd")
    assert side.run_ids == [ids[1]] and side.units["clip"].value() == pytest.approx(1.5)


def test_an_ambiguous_run_id_prefix_is_refused(tmp_path):
    from mubench.comparison import resolve_side

    path = tmp_path / "c.sqlite"
    with Store(path) as st:
        for rid in ("abc" + "0" * 29, "abc" + "1" * 29):
            res = fake_results("sd", {"clip": 0.5})
            res["run_id"] = rid
            st.record_run(res)
        with pytest.raises(UsageError, match="ambiguous"):
            resolve_side(st, "abc")


def test_a_method_on_several_suites_needs_suite(tmp_path):
    from mubench.comparison import resolve_side

    path, _ = _runs_store(tmp_path, [("sd", {"clip": np.zeros(N)}, {"suite": "micro"}),
                                     ("sd", {"clip": np.zeros(N)}, {"suite": "coco"})])
    with Store(path) as st:
        with pytest.raises(UsageError, match="several suites"):
            resolve_side(st, "sd")
        assert resolve_side(st, "sd", suite="coco").results["suite"] == "coco"


def test_a_protocol_key_only_the_second_side_states_is_a_difference():
    from mubench.comparison import protocol_differences

    a = {"suite": "m", "protocol": {"steps": 20}}
    b = {"suite": "m", "protocol": {"steps": 20, "eta": 0.5}}
    assert protocol_differences(a, b) == ["eta: (unset) vs 0.5"]
    assert protocol_differences(b, a) == ["eta: 0.5 vs (unset)"]


def _side(label, units, run_id="r"):
    from mubench.comparison import Side

    return Side(label, fake_results("sd", {k: 0.0 for k in units}), units, [run_id])


def test_a_named_metric_one_side_lacks_is_a_usage_error():
    from mubench.comparison import compare_sides

    a = _side("A", {"clip": fake_units(np.zeros(N)), "score": fake_units(np.zeros(N))})
    b = _side("B", {"clip": fake_units(np.zeros(N))})
    with pytest.raises(UsageError, match="no per-unit data on both sides for score"):
        compare_sides(a, b, ["score"], resamples=10, permutations=10)


def test_compare_p_values_are_holm_adjusted_and_counts_take_the_widest_metric():
    from mubench.comparison import compare_sides
    from mubench.stats.resample import holm

    x = np.linspace(0, 1, N)
    unseeded = fake_units(x[:40])
    unseeded.seeds[:] = -1
    a = _side("A", {"clip": fake_units(x), "score": fake_units(x[:40]), "vqa": unseeded}, "ra")
    b = _side("B", {"clip": fake_units(x + 0.1), "score": fake_units(np.r_[x[:40] + 0.01, x[40:50]],
                                                                      prompts=[f"p{i:03d}" for i in range(50)]),
                    "vqa": fake_units(x[:40])}, "rb")
    res = compare_sides(a, b, resamples=50, permutations=200)
    ps = [m["p"] for m in res["metrics"]]
    assert [m["p_holm"] for m in res["metrics"]] == pytest.approx(holm(ps))
    assert res["metrics"][0]["p_holm"] > res["metrics"][0]["p"]
    assert res["units"] == N and res["dropped"] == 10  # clip: 60 shared; score: 40 shared, 10 only in B
    assert res["shared_noise"] is False  # vqa's A side has no image seeds




def test_runs_of_two_suites_name_the_suite_difference_once():
    from mubench.comparison import protocol_differences

    diff = protocol_differences(fake_results("sd", {}, suite="micro"), fake_results("sd", {}, suite="coco"))
    assert diff.count("suite: micro vs coco") == 1
