"""The SQLite results store: round trip, latest-per-key, concurrent writers, unreadable files."""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from mubench.errors import UsageError
from mubench.outputs import RunOutput, record_in_store, sample_row
from mubench.store import SCHEMA_VERSION, Store, default_store_path
from mubench.suites.base import PromptItem, SampleRecord
from results_fakes import fake_results, fake_samples, fake_units


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


def test_latest_of_two_runs_in_the_same_second_is_the_one_recorded_last(tmp_path):
    """Run times have one-second resolution: of two runs of one key made in the same second, the later recorded is
    the newest (reports and baselines show it), and keys come oldest first."""
    store = Store(tmp_path / "s.sqlite")
    first = fake_results("sd", {"clip": 0.1}, created="2026-01-02T00:00:00+00:00")
    second = fake_results("sd", {"clip": 0.2}, created="2026-01-02T00:00:00+00:00")
    early = fake_results("lora", {"clip": 0.3}, created="2026-01-01T00:00:00+00:00")
    for r in (first, second, early):
        store.record_run(r)
    assert [r["run_id"] for r in store.latest_results()] == [early["run_id"], second["run_id"]]
    later = fake_results("lora", {"clip": 0.4}, created="2026-01-03T00:00:00+00:00", protocol_hash="proto-b")
    store.record_run(later)
    assert [r["run_id"] for r in store.latest_results(methods=["lora"])] == [early["run_id"], later["run_id"]]


def test_an_ambiguous_run_id_prefix_is_refused_and_an_exact_id_wins(tmp_path):
    """A prefix two runs share names no run (rather than an arbitrary one); a full id that is also a prefix of
    another id is that run."""
    store = Store(tmp_path / "s.sqlite")
    a, b, c = (fake_results("sd", {"clip": v}) for v in (0.1, 0.2, 0.3))
    a["run_id"], b["run_id"], c["run_id"] = "abc111", "abc222", "abc2229"
    for r in (a, b, c):
        store.record_run(r)
    with pytest.raises(UsageError, match="ambiguous"):
        store.get_results("abc")
    assert store.get_results("abc1")["run_id"] == "abc111"
    assert store.get_results("abc222")["run_id"] == "abc222"
    with pytest.raises(UsageError, match="ambiguous"):
        store.get_results("abc22")


def test_a_failed_write_changes_nothing_and_the_store_stays_writable(tmp_path):
    """A run whose rows cannot be written (two samples with one prompt id and image index) leaves the run it would
    have replaced in place, and the same open store records the next run."""
    store = Store(tmp_path / "s.sqlite")
    results = fake_results("sd", {"clip": 0.5})
    store.record_run(results, fake_samples(2, 1))
    dup = fake_samples(2, 1)
    dup.append(dict(dup[0]))
    changed = dict(results, metrics={"clip": dict(results["metrics"]["clip"], value=0.9)})
    with pytest.raises(sqlite3.IntegrityError):
        store.record_run(changed, dup)
    assert store.get_results(results["run_id"])["metrics"]["clip"]["value"] == 0.5
    assert store.count("samples") == 2
    other = fake_results("lora", {"clip": 0.7})
    store.record_run(other)
    store.close()
    with Store(tmp_path / "s.sqlite", create=False) as again:
        assert again.count("runs") == 2 and again.get_results(results["run_id"])["metrics"]["clip"]["value"] == 0.5


def test_a_version_1_store_is_upgraded_on_open_and_takes_unit_data(tmp_path):
    """A store written before unit data existed is upgraded in place (its runs kept) and can record per-unit data."""
    path = tmp_path / "old.sqlite"
    old = fake_results("sd", {"clip": 0.5})
    with Store(path) as st:
        st.record_run(old)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE unit_data")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with Store(path) as st:
        assert st.schema_version() == SCHEMA_VERSION
        assert st.get_results(old["run_id"]) == old
        new = fake_results("sd", {"clip": 0.6})
        st.record_run(new, units={"clip": fake_units([0.5, 0.7])})
        assert set(st.unit_blobs(new["run_id"])) == {"clip"}


def test_a_store_copied_without_wal_mode_is_switched_back_to_wal(tmp_path):
    """Concurrent writers rely on WAL mode: a store file found in another journal mode is put back in WAL."""
    path = tmp_path / "s.sqlite"
    Store(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0].lower() == "delete"
    conn.close()
    with Store(path) as st:
        assert st.journal_mode == "wal"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    conn.close()


def test_numpy_scalar_scores_are_stored_as_numbers(tmp_path):
    """Scorers return numpy scalars: the store keeps their numbers (arrays are left out, marked by their shape)."""
    store = Store(tmp_path / "s.sqlite")
    results = fake_results("sd", {"clip": 0.5})
    samples = fake_samples(1, 1)
    samples[0]["scores"] = {"micro-clip": {"cos": np.float32(0.25), "n": np.int64(3), "feat": np.zeros((2, 3))}}
    store.record_run(results, samples)
    [got] = store.samples(results["run_id"])
    assert got["scores"]["micro-clip"] == {"cos": 0.25, "n": 3, "feat": {"__array__": [2, 3]}}


def test_deleting_a_run_says_whether_there_was_one(tmp_path):
    """delete_run removes a run with its rows and reports False for an id that is not stored."""
    store = Store(tmp_path / "s.sqlite")
    results = fake_results("sd", {"clip": 0.5})
    store.record_run(results, fake_samples(2, 1))
    assert store.delete_run("nope") is False
    assert store.delete_run(results["run_id"]) is True
    assert store.count("runs") == 0 and store.count("samples") == 0 and store.count("scores") == 0


def test_a_recorded_run_keeps_its_unit_data_in_the_store(tmp_path):
    """The per-unit data behind a run's metrics (what compare and the report's marks test) reaches the store."""
    results = fake_results("sd", {"clip": 0.5})
    path = record_in_store(str(tmp_path / "s.sqlite"), RunOutput(results, fake_samples(2, 1),
                                                                 {"clip": fake_units([0.4, 0.6])}))
    with Store(path, create=False) as st:
        assert set(st.unit_blobs(results["run_id"])) == {"clip"}
        assert st.count("samples") == 2


def test_a_sample_row_carries_the_sha256_of_its_image_file(tmp_path):
    """samples.jsonl names each image by path and by the sha256 of its bytes, and keeps only scalar scores."""
    img = tmp_path / "a.png"
    img.write_bytes(b"not really a png")
    rec = SampleRecord(PromptItem("p0", "a red cube"), 1, 42, "key-a", str(img),
                       {"clip": {"clip": 0.3, "features": np.zeros(4)}})
    row = sample_row(rec)
    assert row["sha256"] == hashlib.sha256(b"not really a png").hexdigest()
    assert (row["prompt_id"], row["image_index"], row["seed"], row["key"]) == ("p0", 1, 42, "key-a")
    assert row["scores"] == {"clip": {"clip": 0.3}}
