-- A request, from 'h3pipe runs cancel', that a running run stop taking new tasks.
ALTER TABLE runs ADD COLUMN cancel_requested_at TEXT;
