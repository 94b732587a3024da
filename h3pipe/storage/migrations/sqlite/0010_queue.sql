-- The queue backend (h3pipe worker, run --queue), as in the PostgreSQL catalog: a queue
-- run's row names its broker, each task counts its deliveries and names its worker,
-- queue_runs keeps a run's plan and stage, queue_batches the batches sent. On this
-- catalog only for workers on the machine that holds it (queue.shared_store).
ALTER TABLE runs ADD COLUMN queue TEXT;
ALTER TABLE tasks ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN worker TEXT;
CREATE TABLE queue_runs (
    run_id         TEXT PRIMARY KEY REFERENCES runs (run_id),
    plan           BLOB NOT NULL,
    stage          INTEGER NOT NULL,
    queue_name     TEXT NOT NULL,
    max_deliveries INTEGER NOT NULL,
    advances       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE queue_batches (
    run_id   TEXT NOT NULL,
    step_id  TEXT NOT NULL,
    task_no  INTEGER NOT NULL,
    payload  BLOB NOT NULL,
    PRIMARY KEY (run_id, step_id, task_no)
);
