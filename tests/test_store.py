"""The SQLite results store: round trip, latest-per-key, concurrent writers, unreadable files."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

from mubench.errors import UsageError
from mubench.store import SCHEMA_VERSION, Store, default_store_path
from results_fakes import fake_results, fake_samples


def test_round_trip_keeps_results_samples_and_scores(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    assert store.journal_mode == "wal" and store.schema_version() == SCHEMA_VERSION
    results = fake_results("sd", {"fid": 20.5, "clip": 0.31}, ci=0.01)
    samples = fake_samples(3, 2)
    run_id = store.record_run(results, samples)
    assert run_id == results["run_id"]
    store.close()

    again = Store(tmp_path / "s.sqlite", create=False)
    assert again.get_results(run_id) == results
    assert again.get_results(run_id[:10]) == results  # unique prefix
    got = again.samples(run_id)
    assert sorted(got, key=lambda s: (s["prompt_id"], s["image_index"])) == samples
    assert again.count("results") == 2 and again.count("samples") == 6 and again.count("scores") == 12
    [row] = again.runs()
    assert row["run_id"] == run_id and row["n_samples"] == 6 and row["metrics"] == {"fid": 20.5, "clip": 0.31}
    # plain SQL over the per-metric rows works too
    rows = again._conn.execute("SELECT metric, value, higher_is_better FROM results ORDER BY metric").fetchall()
    assert rows == [("clip", 0.31, 1), ("fid", 20.5, 0)]


def test_recording_the_same_run_twice_replaces_it(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    results = fake_results("sd", {"fid": 20.0})
    store.record_run(results, fake_samples(2, 1))
    results["metrics"]["fid"]["value"] = 19.0
    store.record_run(results, fake_samples(3, 1))
    assert store.count("runs") == 1 and store.count("samples") == 3 and store.count("scores") == 6
    assert store.get_results(results["run_id"])["metrics"]["fid"]["value"] == 19.0


def test_latest_results_is_newest_per_suite_method_model_protocol(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    old = fake_results("sd", {"fid": 30.0}, created="2026-01-01T00:00:00+00:00")
    new = fake_results("sd", {"fid": 25.0}, created="2026-01-02T00:00:00+00:00")
    other_protocol = fake_results("sd", {"fid": 40.0}, protocol_hash="proto-b", created="2026-01-01T00:00:00+00:00")
    lora = fake_results("lora", {"fid": 22.0})
    other_suite = fake_results("sd", {"fid": 50.0}, suite="coco")
    for r in (new, old, other_protocol, lora, other_suite):  # insertion order must not matter
        store.record_run(r)
    latest = store.latest_results()
    assert {r["run_id"] for r in latest} == {new["run_id"], other_protocol["run_id"], lora["run_id"],
                                             other_suite["run_id"]}
    assert {r["run_id"] for r in store.latest_results(suite="micro", methods=["sd"])} == {
        new["run_id"], other_protocol["run_id"]}
    assert [r["run_id"] for r in store.latest_results(methods=["lora"])] == [lora["run_id"]]
    assert store.latest_results(model="nope") == []
    # newest first; equal times: the later recorded first
    assert [r["run_id"] for r in store.runs(limit=2)] == [new["run_id"], other_suite["run_id"]]


def _writer(path: str, worker: int, n_runs: int, barrier) -> None:
    store = Store(path)
    barrier.wait()
    for k in range(n_runs):
        r = fake_results(f"m{worker}", {"fid": float(k), "clip": 0.5}, created=f"2026-01-01T00:00:{k:02d}+00:00")
        store.record_run(r, fake_samples(5, 2))
    store.close()


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ctx = mp.get_context("fork")
    n_workers, n_runs = 3, 15
    barrier = ctx.Barrier(n_workers)
    procs = [ctx.Process(target=_writer, args=(path, w, n_runs, barrier)) for w in range(n_workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = Store(path, create=False)
    total = n_workers * n_runs
    assert store.count("runs") == total
    assert store.count("results") == 2 * total
    assert store.count("samples") == 10 * total
    assert store.count("scores") == 20 * total
    assert sorted({r["method"] for r in store.runs()}) == [f"m{w}" for w in range(n_workers)]


def test_missing_foreign_and_garbage_files_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no results store"):
        Store(tmp_path / "absent.sqlite", create=False)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(UsageError, match="not a readable mubench results store"):
        Store(garbage)
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE runs (x)")
    conn.commit()
    conn.close()
    with pytest.raises(UsageError, match="not a mubench results store"):
        Store(foreign)
    newer = tmp_path / "newer.sqlite"
    Store(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(UsageError, match="newer than this mubench"):
        Store(newer)
    with pytest.raises(UsageError, match="is a folder"):
        Store(tmp_path)


def test_bad_results_objects_are_rejected(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    bad = fake_results("sd", {"fid": 1.0})
    del bad["suite"]
    with pytest.raises(UsageError, match="suite"):
        store.record_run(bad)
    bad = fake_results("sd", {"fid": 1.0})
    bad["metrics"]["fid"]["value"] = "high"
    with pytest.raises(UsageError, match="not a number"):
        store.record_run(bad)
    assert store.count("runs") == 0


def test_default_store_path_follows_mubench_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MUBENCH_HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / "store.sqlite"
    monkeypatch.delenv("MUBENCH_HOME")
    assert default_store_path().name == "store.sqlite" and "mubench" in str(default_store_path())


def test_a_newest_run_that_hides_other_settings_is_said(tmp_path):
    """Runs of one method name with other settings (or other base weights) share a row: the hidden ones are named."""
    import warnings

    from mubench.selection import select

    def run(ratio, created, fingerprint="micro:aa", extra=None):
        r = fake_results("random-mask", {"clip": ratio}, created=created)
        r["config"]["method"] = {"name": "random-mask", "kind": "random-mask",
                                 "params": {"ratio": ratio, **(extra or {})}}
        r["model_fingerprint"] = fingerprint
        return r

    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        st.record_run(run(0.9, "2026-01-01T00:00:00+00:00"))
        st.record_run(run(0.9, "2026-01-02T00:00:00+00:00", extra={"kernel": "torch"}))  # a newer code version's key
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(select(store=str(path)).results) == 1  # same settings: nothing to say
    with Store(path) as st:
        st.record_run(run(0.0, "2026-01-03T00:00:00+00:00"))
    with pytest.warns(UserWarning, match=r"hides 2 older run\(s\) with other settings \(e.g. method.ratio 0.9 → 0.0\)"):
        assert select(store=str(path)).results[0]["metrics"]["clip"]["value"] == 0.0
    with Store(path) as st:
        st.record_run(run(0.0, "2026-01-04T00:00:00+00:00", fingerprint="micro:bb"))
    with pytest.warns(UserWarning, match="model micro:aa → micro:bb"):
        select(store=str(path))
    trained = tmp_path / "t.sqlite"  # a trained method: the artifact, not train settings that change nothing
    with Store(trained) as st:
        for log_every, artifact, day in ((50, "sha-a", 1), (10, "sha-a", 2)):
            r = run(0.5, f"2026-01-0{day}T00:00:00+00:00", extra={"train": {"log_every": log_every}})
            r["method_info"]["artifact"] = artifact
            st.record_run(r)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        select(store=str(trained))
    with Store(trained) as st:
        r = run(0.5, "2026-01-03T00:00:00+00:00", extra={"train": {"log_every": 10}})
        r["method_info"]["artifact"] = "sha-b"
        st.record_run(r)
    with pytest.warns(UserWarning, match="artifact sha-a → sha-b"):
        select(store=str(trained))


def test_results_json_keeps_the_suites_metric_order(tmp_path):
    """A table's columns come in the suite's order whether it is read from a store or from results.json."""
    from mubench.outputs import RunOutput, write_outputs
    from mubench.selection import select

    res = fake_results("sd", {"clip": 0.5, "color": 0.1, "shape": 0.2, "colors": 0.3, "overall": 0.4})
    write_outputs(tmp_path / "run", RunOutput(res))
    with Store(tmp_path / "s.sqlite") as st:
        st.record_run(res)
    from_file = list(select(results=str(tmp_path / "run")).results[0]["metrics"])
    assert from_file == list(select(store=str(tmp_path / "s.sqlite")).results[0]["metrics"]) == list(res["metrics"])


def test_a_store_nobody_here_may_write_is_read_as_it_is(tmp_path, monkeypatch):
    """A read-only mount or archive: opened immutable (no WAL switch, no -shm file, no upgrade), not 'unreadable'."""
    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        st.record_run(fake_results("sd", {"clip": 0.5}))
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr("mubench.store.os.access", lambda p, mode: False)  # as on a read-only file system
    with Store(path, create=False) as st:
        assert st.read_only and [r["method"] for r in st.latest_results()] == ["sd"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    conn = sqlite3.connect(path)  # an older store cannot be upgraded there: said, with what to do
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(UsageError, match="cannot be upgraded where it is"):
        Store(path, create=False)
