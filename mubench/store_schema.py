"""The results store's tables (SQLite DDL), for :mod:`mubench.store`; ``CREATE ... IF NOT EXISTS``, so applying it to
an existing store changes nothing."""

DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id        TEXT PRIMARY KEY,
    created       TEXT NOT NULL,
    recorded      TEXT NOT NULL,
    suite         TEXT NOT NULL,
    method        TEXT NOT NULL,
    model         TEXT NOT NULL,
    protocol_hash TEXT NOT NULL,
    git           TEXT,
    n_samples     INTEGER NOT NULL DEFAULT 0,
    results_json  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_key ON runs (suite, method, model, protocol_hash, created);
CREATE TABLE IF NOT EXISTS results (
    run_id           TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    metric           TEXT NOT NULL,
    value            REAL,
    ci_low           REAL,
    ci_high          REAL,
    n                INTEGER,
    higher_is_better INTEGER NOT NULL,
    PRIMARY KEY (run_id, metric)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    prompt_id   TEXT NOT NULL,
    image_index INTEGER NOT NULL,
    seed        INTEGER,
    path        TEXT,
    sha256      TEXT,
    key         TEXT,
    sample_json TEXT NOT NULL,
    PRIMARY KEY (run_id, prompt_id, image_index)
);
CREATE TABLE IF NOT EXISTS scores (
    run_id      TEXT NOT NULL,
    prompt_id   TEXT NOT NULL,
    image_index INTEGER NOT NULL,
    scorer      TEXT NOT NULL,
    score_json  TEXT NOT NULL,
    PRIMARY KEY (run_id, prompt_id, image_index, scorer),
    FOREIGN KEY (run_id, prompt_id, image_index)
        REFERENCES samples (run_id, prompt_id, image_index) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS unit_data (
    run_id  TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    metric  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    blob    BLOB NOT NULL,
    PRIMARY KEY (run_id, metric)
);
"""

TABLES = ("meta", "runs", "results", "samples", "scores", "unit_data")
