-- What each run left between steps, with the policy that says when it may go, and the
-- pipeline definitions runs were made from.
CREATE TABLE intermediates (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    step_id     TEXT NOT NULL,
    location    TEXT NOT NULL,            -- a folder of the store, or a table
    policy      TEXT NOT NULL CHECK (policy IN ('on_success', 'on_completion', 'ttl', 'manual')),
    ttl_hours   DOUBLE PRECISION,
    created_at  TEXT NOT NULL,
    dropped_at  TEXT,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE pipelines (
    id          TEXT NOT NULL,
    hash        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    document    TEXT NOT NULL,
    file        TEXT NOT NULL,
    first_run   TEXT NOT NULL,
    PRIMARY KEY (id, hash)
);
