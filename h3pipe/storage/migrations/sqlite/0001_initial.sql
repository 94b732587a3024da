-- Embedded store catalog: runs, their steps and tasks, and the published result files.
CREATE TABLE runs (
    run_id        TEXT PRIMARY KEY,
    pipeline_id   TEXT NOT NULL,
    pipeline_version INTEGER NOT NULL,
    pipeline_hash TEXT NOT NULL,
    dataset       TEXT NOT NULL,
    scope_key     TEXT NOT NULL,
    scope_label   TEXT NOT NULL,
    resolution    INTEGER NOT NULL,
    params        TEXT NOT NULL,          -- JSON: batch size, workers, ...
    status        TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    cells         INTEGER,
    pid           INTEGER,
    host          TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    error         TEXT
);
CREATE INDEX runs_by_pipeline ON runs (pipeline_id, created_at);

CREATE TABLE steps (
    run_id       TEXT NOT NULL REFERENCES runs (run_id),
    step_id      TEXT NOT NULL,
    stage        INTEGER NOT NULL,
    operation    TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    tasks_total  INTEGER NOT NULL DEFAULT 0,
    tasks_done   INTEGER NOT NULL DEFAULT 0,
    rows_in      INTEGER NOT NULL DEFAULT 0,
    rows_out     INTEGER NOT NULL DEFAULT 0,
    started_at   TEXT,
    finished_at  TEXT,
    error        TEXT,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE tasks (
    run_id       TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    task_no      INTEGER NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    rows_in      INTEGER NOT NULL DEFAULT 0,
    rows_out     INTEGER,
    started_at   TEXT,
    finished_at  TEXT,
    seconds      REAL,
    output_path  TEXT,
    error        TEXT,
    PRIMARY KEY (run_id, step_id, task_no),
    FOREIGN KEY (run_id, step_id) REFERENCES steps (run_id, step_id)
);

-- One current result file per dataset, resolution and scope; replacing it is one UPDATE.
CREATE TABLE results (
    dataset      TEXT NOT NULL,
    resolution   INTEGER NOT NULL,
    scope_key    TEXT NOT NULL,
    scope_label  TEXT NOT NULL,
    theme        TEXT NOT NULL,
    run_id       TEXT NOT NULL REFERENCES runs (run_id),
    path         TEXT NOT NULL,           -- relative to the store root
    columns      TEXT NOT NULL,           -- JSON list of statistic columns, in pipeline order
    rows         INTEGER NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (dataset, resolution, scope_key)
);
