-- The queue backend (h3pipe worker, run --queue). A queue run's row names its broker (never
-- a password), so its liveness is judged by its tasks, not by the submitting process. Each
-- task counts the times a worker took it (a batch that kills its worker every time fails
-- the run after the limit) and names the worker that has it. queue_runs keeps what workers
-- need to advance a run with nobody watching: its plan and the stage it is at; queue_batches
-- the batches sent, so a message carries only a task's key.
ALTER TABLE runs ADD COLUMN queue TEXT;
ALTER TABLE tasks ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN worker TEXT;
CREATE TABLE queue_runs (
    run_id         TEXT PRIMARY KEY REFERENCES runs (run_id),
    plan           BYTEA NOT NULL,
    stage          INTEGER NOT NULL,
    queue_name     TEXT NOT NULL,
    max_deliveries INTEGER NOT NULL,
    advances       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE queue_batches (
    run_id   TEXT NOT NULL,
    step_id  TEXT NOT NULL,
    task_no  INTEGER NOT NULL,
    payload  BYTEA NOT NULL,
    PRIMARY KEY (run_id, step_id, task_no)
);
