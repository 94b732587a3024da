-- Liveness of a running run, so another host can tell a dead holder from a slow one.
ALTER TABLE runs ADD COLUMN heartbeat_at TEXT;
