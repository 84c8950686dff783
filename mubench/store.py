"""The results store: one SQLite file holding every run's results, samples and per-image scores.

Tables (schema version :data:`SCHEMA_VERSION`, recorded in ``meta`` and in ``PRAGMA application_id``):

- ``runs``: one row per run (id, time, suite, method, model, protocol hash, git) plus the whole ``results.json``
  object, so nothing a run recorded is lost;
- ``results``: one row per (run, metric): value, CI, n, direction, queryable with plain SQL;
- ``samples``: one row per generated image (prompt id, image index, seed, path, sha256, sample key);
- ``scores``: one row per (image, scorer): the scorer's per-image result as JSON.

The file is opened in WAL mode with a busy timeout and every write is one ``BEGIN IMMEDIATE`` transaction, so several
processes (two ``mubench run`` at once, an ``accelerate`` main process and a report) can share one store without
losing rows. Only the standard library's ``sqlite3`` is used.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from .paths import mubench_home
from .errors import UsageError
from .results_schema import RESULTS_SCHEMA, validate_results
from .store_schema import DDL, TABLES

SCHEMA_VERSION = 2  # 2: unit_data (per-unit data behind each metric); a version-1 store is upgraded on open
APPLICATION_ID = 0x6D756263  # "mubc": marks a SQLite file as a mubench store
BUSY_TIMEOUT_S = 60.0


def default_store_path() -> Path:
    """``$MUBENCH_HOME/store.sqlite``, or ``store.sqlite`` under the user cache dir."""
    return mubench_home() / "store.sqlite"


def _json_default(obj: Any) -> Any:
    """JSON for what scorers return: numpy scalars become numbers; arrays/tensors are not stored."""
    item = getattr(obj, "item", None)
    shape = getattr(obj, "shape", None)
    if shape is not None and tuple(shape) == () and callable(item):
        return item()
    if shape is not None:
        return {"__array__": list(shape)}  # features (e.g. for FID) stay in the score cache, not the store
    return list(obj) if isinstance(obj, (set, tuple)) else str(obj)  # paths and the rest as text


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, allow_nan=True)  # key order kept: metric order is meaningful


def _float(x: Any) -> Optional[float]:
    return None if x is None else float(x)


def is_sqlite_file(path: Path) -> bool:
    """The file starts with SQLite's header (an empty file does not: SQLite would make it a new database)."""
    with path.open("rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def _create_tables(cur: sqlite3.Cursor) -> None:
    """The schema's tables and indexes, each created where it is missing (the DDL says IF NOT EXISTS)."""
    for stmt in DDL.split(";"):
        if stmt.strip():
            cur.execute(stmt)


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Store:
    """A mubench results store in one SQLite file.

    ``Store(path)`` creates the file (and its folder) when missing; ``Store(path, create=False)``
    raises :class:`~mubench.errors.UsageError` instead, which is what read-only commands want.
    A file that is not SQLite, or a SQLite file that is not a mubench store, or one written by a
    newer mubench, raises UsageError naming the file.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        if not self.path.exists():
            if not create:
                raise UsageError(f"no results store at {self.path} (nothing has been recorded there yet; "
                                 f"run `mubench run ... store={self.path}` first or pass store=PATH)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif self.path.is_dir():
            raise UsageError(f"store path {self.path} is a folder; expected a SQLite file (e.g. {self.path}/store.sqlite)")
        elif self.path.stat().st_size and not is_sqlite_file(self.path):  # SQLite would overwrite it
            raise UsageError(f"{self.path} is not a readable mubench results store (not an SQLite file)")
        # a store nobody here may write (a read-only mount, an archive) is read as it is: no WAL switch, no upgrade
        self.read_only = not create and not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK))
        wal = Path(f"{self.path}-wal")
        if self.read_only and wal.is_file() and wal.stat().st_size:
            warnings.warn(f"{self.path} is read-only here and its {wal.name} holds writes not yet folded into it "
                          "(a writer did not close): runs recorded since then are not seen", stacklevel=2)
        try:
            if self.read_only:
                self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True,
                                             timeout=BUSY_TIMEOUT_S, isolation_level=None)
            else:
                self._conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as err:
            raise UsageError(f"cannot open results store {self.path}: {err}") from None
        try:
            self._setup()
        except sqlite3.DatabaseError as err:
            self._conn.close()
            if any(w in str(err).lower() for w in ("disk is full", "disk i/o", "readonly", "read-only")):
                raise UsageError(f"cannot write the results store {self.path} ({err}): free space on its disk or "
                                 "choose another store=; the store itself is not damaged") from None
            raise UsageError(f"{self.path} is not a readable mubench results store ({err})") from None
        except UsageError:
            self._conn.close()
            raise

    # -- connection and schema -------------------------------------------------------------------

    def _setup(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        app_id, tables = self._look()
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise UsageError(f"{self.path} is a SQLite file but not a mubench results store "
                             f"(application id {app_id:#x}, tables: {', '.join(sorted(tables)) or 'none'})")
        conn.execute("PRAGMA synchronous = NORMAL")
        if app_id == APPLICATION_ID and "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            self.journal_mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if self.journal_mode != "wal" and not self.read_only:  # e.g. a store copied without its -wal file
                self._set_wal()
        elif self.read_only:
            raise UsageError(f"{self.path} is an empty file in a place this user cannot write: not a results store")
        else:  # a new (empty) file: make it a store; WAL mode is persistent in the file
            row = self._create()
            if row is None:
                return
        self._check_version(row)

    def _look(self) -> tuple[int, set[str]]:
        """Look before touching anything: one read snapshot of the header's application id and the table list."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]  # DatabaseError on a non-SQLite file
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            if conn.in_transaction:  # a failed statement may have ended it: a COMMIT would hide the real error
                conn.execute("COMMIT")
        return app_id, tables

    def _create(self) -> Optional[tuple]:
        """Make an empty file a store; None where this process wrote its schema version, else the version row
        another process wrote meanwhile (to be checked like an existing store's)."""
        self._set_wal()
        with self._write() as cur:
            _create_tables(cur)
            row = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:  # we are first (another process may have created it meanwhile)
                cur.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                cur.execute("INSERT INTO meta (key, value) VALUES ('created', ?)", (_utc_now(),))
                cur.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        return row

    def _check_version(self, row: Optional[tuple]) -> None:
        """A store's schema version: newer than this mubench's or unreadable is an error; older is upgraded in
        place (new tables only, nothing existing changes) where the store is writable."""
        if row is None:
            raise UsageError(f"{self.path}: mubench store without a schema version (damaged?)")
        try:
            version = int(row[0])
        except ValueError:
            version = -1
        if version > SCHEMA_VERSION:
            raise UsageError(f"{self.path} has store schema version {row[0]}, newer than this mubench "
                             f"understands ({SCHEMA_VERSION}); upgrade mubench or use another store=PATH")
        if version < 1:
            raise UsageError(f"{self.path}: unrecognised store schema version {row[0]!r}")
        if version < SCHEMA_VERSION and self.read_only:
            raise UsageError(f"{self.path} has store schema version {version}, older than this mubench's "
                             f"({SCHEMA_VERSION}), and cannot be upgraded where it is (read-only): copy it somewhere "
                             "writable and pass store=COPY")
        if version < SCHEMA_VERSION:
            with self._write() as cur:
                _create_tables(cur)
                cur.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _set_wal(self) -> None:
        """Switch to WAL (persistent in the file). The switch needs a brief exclusive lock: retry."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                self.journal_mode = str(mode).lower()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, taking the write lock up front (no deadlock on lock upgrade)."""
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def schema_version(self) -> int:
        return int(self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    # -- writing ---------------------------------------------------------------------------------

    def record_run(self, results: dict[str, Any], samples: Sequence[dict[str, Any]] = (),
                   units: Optional[Mapping[str, Any]] = None) -> str:
        """Store one run (its ``results.json`` object, per-image sample dicts and the per-unit data behind its
        metrics, :class:`mubench.stats.UnitData` by metric name); return its run id.

        Recording the same ``run_id`` again replaces that run's rows (idempotent), all in one transaction.
        """
        validate_results(results)
        run_id = str(results["run_id"])
        metrics = results.get("metrics") or {}
        sample_rows, score_rows = [], []
        for s in samples:
            try:
                prompt_id, image_index = str(s["prompt_id"]), int(s["image_index"])
            except (KeyError, TypeError, ValueError) as err:
                raise UsageError(f"run {run_id}: a sample needs prompt_id and image_index ({err!r})") from None
            meta = {k: v for k, v in s.items() if k != "scores"}
            sample_rows.append((run_id, prompt_id, image_index, s.get("seed"), s.get("path"), s.get("sha256"),
                                s.get("key"), _dumps(meta)))
            for scorer, score in (s.get("scores") or {}).items():
                score_rows.append((run_id, prompt_id, image_index, str(scorer), _dumps(score)))
        with self._write() as cur:
            cur.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            cur.execute(
                "INSERT INTO runs (run_id, created, recorded, suite, method, model, protocol_hash, git, n_samples, "
                "results_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, str(results.get("created") or _utc_now()), _utc_now(), str(results["suite"]),
                 str(results["method"]), str(results["model"]), str(results.get("protocol_hash") or ""),
                 results.get("git"), len(sample_rows), _dumps(results)),
            )
            cur.executemany(
                "INSERT INTO results (run_id, metric, value, ci_low, ci_high, n, higher_is_better) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, name, _float(m.get("value")), _float(m.get("ci_low")), _float(m.get("ci_high")),
                  m.get("n"), int(bool(m.get("higher_is_better", True)))) for name, m in metrics.items()],
            )
            cur.executemany("INSERT INTO samples (run_id, prompt_id, image_index, seed, path, sha256, key, "
                            "sample_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", sample_rows)
            cur.executemany("INSERT INTO scores (run_id, prompt_id, image_index, scorer, score_json) "
                            "VALUES (?, ?, ?, ?, ?)", score_rows)
            cur.executemany("INSERT INTO unit_data (run_id, metric, kind, blob) VALUES (?, ?, ?, ?)",
                            [(run_id, str(name), u.kind, sqlite3.Binary(u.to_bytes()))
                             for name, u in (units or {}).items()])
        return run_id

    def unit_blobs(self, run_id: str) -> dict[str, bytes]:
        """The stored per-unit data of a run's metrics (serialised :class:`mubench.stats.UnitData`), by metric."""
        return {m: bytes(b) for m, b in self._conn.execute(
            "SELECT metric, blob FROM unit_data WHERE run_id = ? ORDER BY rowid", (run_id,))}

    def all_results(self, suite: Optional[str] = None, methods: Optional[Sequence[str]] = None,
                    model: Optional[str] = None) -> list[dict[str, Any]]:
        """Every stored run's ``results.json`` object, newest first."""
        where, args = _filters(suite, methods, model)
        return [json.loads(r[0]) for r in self._conn.execute(
            f"SELECT results_json FROM runs {where} ORDER BY created DESC, rowid DESC", args)]

    def delete_run(self, run_id: str) -> bool:
        with self._write() as cur:
            cur.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            return cur.rowcount > 0

    # -- reading ---------------------------------------------------------------------------------

    def runs(self, suite: Optional[str] = None, methods: Optional[Sequence[str]] = None,
             model: Optional[str] = None, limit: Optional[int] = None) -> list[dict[str, Any]]:
        """Recorded runs, newest first: id, times, suite, method, model, protocol hash, git, counts, metrics."""
        where, args = _filters(suite, methods, model)
        sql = ("SELECT run_id, created, recorded, suite, method, model, protocol_hash, git, n_samples, results_json "
               f"FROM runs {where} ORDER BY created DESC, rowid DESC")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        out = []
        for row in self._conn.execute(sql, args):
            results = json.loads(row[9])
            out.append({
                "run_id": row[0], "created": row[1], "recorded": row[2], "suite": row[3], "method": row[4],
                "model": row[5], "protocol_hash": row[6], "git": row[7], "n_samples": row[8],
                "metrics": {k: v.get("value") for k, v in (results.get("metrics") or {}).items()},
                "total_s": (results.get("timing") or {}).get("total_s"),
            })
        return out

    def get_results(self, run_id: str) -> dict[str, Any]:
        """The stored ``results.json`` object of one run (a unique prefix of the id is accepted)."""
        rows = self._conn.execute("SELECT results_json FROM runs WHERE run_id = ? OR run_id LIKE ? LIMIT 2",
                                  (run_id, run_id.replace("%", "") + "%")).fetchall()
        if not rows:
            raise UsageError(f"no run {run_id!r} in {self.path}")
        if len(rows) > 1:
            exact = self._conn.execute("SELECT results_json FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if exact is None:
                raise UsageError(f"run id prefix {run_id!r} is ambiguous in {self.path}")
            rows = [exact]
        return json.loads(rows[0][0])

    def samples(self, run_id: str) -> list[dict[str, Any]]:
        """A run's sample dicts with their ``scores``, ordered by (prompt_id, image_index)."""
        samples: dict[tuple[str, int], dict[str, Any]] = {}
        for pid, idx, blob in self._conn.execute(
                "SELECT prompt_id, image_index, sample_json FROM samples WHERE run_id = ? "
                "ORDER BY prompt_id, image_index", (run_id,)):
            sample = json.loads(blob)
            sample["scores"] = {}
            samples[(pid, idx)] = sample
        for pid, idx, scorer, blob in self._conn.execute(
                "SELECT prompt_id, image_index, scorer, score_json FROM scores WHERE run_id = ?", (run_id,)):
            samples[(pid, idx)]["scores"][scorer] = json.loads(blob)
        return list(samples.values())

    def latest_results(self, suite: Optional[str] = None, methods: Optional[Sequence[str]] = None,
                       model: Optional[str] = None) -> list[dict[str, Any]]:
        """The newest run's ``results.json`` per (suite, method, model, protocol_hash), oldest key first."""
        where, args = _filters(suite, methods, model)
        sql = f"""
            SELECT results_json FROM (
                SELECT results_json, suite, method, model, protocol_hash, created, rowid AS rid,
                       ROW_NUMBER() OVER (PARTITION BY suite, method, model, protocol_hash
                                          ORDER BY created DESC, rowid DESC) AS rank
                FROM runs {where})
            WHERE rank = 1 ORDER BY suite, method, model, created, rid"""
        return [json.loads(r[0]) for r in self._conn.execute(sql, args)]

    def count(self, table: str) -> int:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        return int(self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def recorded(self, column: str) -> set[str]:
        """The distinct values of ``column`` (suite, method or model) over the recorded runs."""
        if column not in ("suite", "method", "model"):
            raise ValueError(f"unknown column {column!r}")
        return {str(r[0]) for r in self._conn.execute(f"SELECT DISTINCT {column} FROM runs")}


def _filters(suite: Optional[str], methods: Optional[Sequence[str]], model: Optional[str]) -> tuple[str, list]:
    clauses, args = [], []
    if suite:
        clauses.append("suite = ?")
        args.append(suite)
    if methods:
        methods = list(methods)
        clauses.append(f"method IN ({', '.join('?' * len(methods))})")
        args.extend(methods)
    if model:
        clauses.append("model = ?")
        args.append(model)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


__all__ = ["Store", "default_store_path", "mubench_home", "is_sqlite_file", "SCHEMA_VERSION", "RESULTS_SCHEMA",
           "validate_results"]
