-- The queue backend needs the PostgreSQL store; the embedded catalog gets the same run and
-- task columns so both catalogs read alike (a queue run's broker, a task's deliveries and
-- worker).
ALTER TABLE runs ADD COLUMN queue TEXT;
ALTER TABLE tasks ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN worker TEXT;
