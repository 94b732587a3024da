-- STAC items each run used (provenance), and the source catalog with its version history.
CREATE TABLE run_items (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    source_id   TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    href        TEXT NOT NULL,           -- unsigned
    PRIMARY KEY (run_id, source_id, item_id)
);

-- The current version of every registered source; deactivating keeps the row.
CREATE TABLE sources (
    id           TEXT PRIMARY KEY,
    version      INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    theme        TEXT NOT NULL,
    title        TEXT,
    location     TEXT NOT NULL,           -- path, or STAC url#collection
    is_active    INTEGER NOT NULL DEFAULT 1,
    document     TEXT NOT NULL,           -- JSON of the source file as registered
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
