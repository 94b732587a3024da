-- Every state change of a run, its stages, steps and tasks, in order.
CREATE TABLE events (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id    TEXT NOT NULL REFERENCES runs (run_id),
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('run', 'stage', 'step', 'task', 'cleanup')),
    subject   TEXT NOT NULL,
    status    TEXT NOT NULL,
    detail    TEXT
);
CREATE INDEX events_by_run ON events (run_id, id);
