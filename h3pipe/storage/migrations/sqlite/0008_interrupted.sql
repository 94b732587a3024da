-- A run or step stopped by a signal or a cancel request is 'interrupted', a state of its
-- own, not 'failed'. SQLite cannot change a CHECK constraint in place: the two tables are
-- rebuilt (the migration runner turns foreign keys off around this and checks them after).
-- Tasks also record the seconds spent reading each raster tile ('runs show' lists the
-- slowest tiles).
CREATE TABLE runs_new (
    run_id        TEXT PRIMARY KEY,
    pipeline_id   TEXT NOT NULL,
    pipeline_version INTEGER NOT NULL,
    pipeline_hash TEXT NOT NULL,
    dataset       TEXT NOT NULL,
    scope_key     TEXT NOT NULL,
    scope_label   TEXT NOT NULL,
    resolution    INTEGER NOT NULL,
    params        TEXT NOT NULL,
    status        TEXT NOT NULL
                  CHECK (status IN ('pending', 'running', 'completed', 'failed', 'interrupted')),
    cells         INTEGER,
    pid           INTEGER,
    host          TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    error         TEXT,
    heartbeat_at  TEXT,
    cancel_requested_at TEXT
);
INSERT INTO runs_new (run_id, pipeline_id, pipeline_version, pipeline_hash, dataset,
    scope_key, scope_label, resolution, params, status, cells, pid, host, created_at,
    started_at, finished_at, error, heartbeat_at, cancel_requested_at)
SELECT run_id, pipeline_id, pipeline_version, pipeline_hash, dataset, scope_key, scope_label,
    resolution, params, status, cells, pid, host, created_at, started_at, finished_at, error,
    heartbeat_at, cancel_requested_at FROM runs;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;
CREATE INDEX runs_by_pipeline ON runs (pipeline_id, created_at);

CREATE TABLE steps_new (
    run_id       TEXT NOT NULL REFERENCES runs (run_id),
    step_id      TEXT NOT NULL,
    stage        INTEGER NOT NULL,
    operation    TEXT NOT NULL,
    status       TEXT NOT NULL
                 CHECK (status IN ('pending', 'running', 'completed', 'failed', 'interrupted')),
    tasks_total  INTEGER NOT NULL DEFAULT 0,
    tasks_done   INTEGER NOT NULL DEFAULT 0,
    rows_in      INTEGER NOT NULL DEFAULT 0,
    rows_out     INTEGER NOT NULL DEFAULT 0,
    started_at   TEXT,
    finished_at  TEXT,
    error        TEXT,
    PRIMARY KEY (run_id, step_id)
);
INSERT INTO steps_new SELECT run_id, step_id, stage, operation, status, tasks_total,
    tasks_done, rows_in, rows_out, started_at, finished_at, error FROM steps;
DROP TABLE steps;
ALTER TABLE steps_new RENAME TO steps;

ALTER TABLE tasks ADD COLUMN tile_seconds TEXT;  -- JSON: tile name -> seconds reading it
