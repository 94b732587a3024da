-- PostgreSQL store: the catalog in schema h3pipe (the connection's search_path), outputs
-- in schema h3, per-run intermediates in schema h3_temp (UNLOGGED tables).
CREATE EXTENSION IF NOT EXISTS postgis WITH SCHEMA public;
CREATE SCHEMA IF NOT EXISTS h3;
CREATE SCHEMA IF NOT EXISTS h3_temp;

CREATE TABLE runs (
    run_id        TEXT PRIMARY KEY,
    pipeline_id   TEXT NOT NULL,
    pipeline_version INTEGER NOT NULL,
    pipeline_hash TEXT NOT NULL,
    dataset       TEXT NOT NULL,
    scope_key     TEXT NOT NULL,
    scope_label   TEXT NOT NULL,
    resolution    INTEGER NOT NULL,
    params        TEXT NOT NULL,
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
    seconds      DOUBLE PRECISION,
    output_path  TEXT,
    error        TEXT,
    PRIMARY KEY (run_id, step_id, task_no),
    FOREIGN KEY (run_id, step_id) REFERENCES steps (run_id, step_id)
);

CREATE TABLE results (
    dataset      TEXT NOT NULL,
    resolution   INTEGER NOT NULL,
    scope_key    TEXT NOT NULL,
    scope_label  TEXT NOT NULL,
    theme        TEXT NOT NULL,
    run_id       TEXT NOT NULL REFERENCES runs (run_id),
    path         TEXT NOT NULL,
    columns      TEXT NOT NULL,
    rows         INTEGER NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (dataset, resolution, scope_key)
);

CREATE TABLE run_items (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    source_id   TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    href        TEXT NOT NULL,
    PRIMARY KEY (run_id, source_id, item_id)
);

CREATE TABLE sources (
    id           TEXT PRIMARY KEY,
    version      INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    theme        TEXT NOT NULL,
    title        TEXT,
    location     TEXT NOT NULL,
    is_active    INTEGER NOT NULL DEFAULT 1,
    document     TEXT NOT NULL,
    file         TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX sources_by_theme ON sources (theme);

CREATE TABLE source_versions (
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    document     TEXT NOT NULL,
    file         TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    action       TEXT NOT NULL CHECK (action IN ('register', 'deactivate')),
    recorded_at  TEXT NOT NULL,
    PRIMARY KEY (id, version)
);

-- Every cell ever published, with its outline for map clients.
CREATE TABLE h3.cells (
    h3_index    TEXT PRIMARY KEY,
    resolution  SMALLINT NOT NULL,
    geom        geometry(Polygon, 4326) NOT NULL
);
CREATE INDEX cells_geom ON h3.cells USING gist (geom);
CREATE INDEX cells_resolution ON h3.cells (resolution);
