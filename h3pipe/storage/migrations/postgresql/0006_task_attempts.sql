-- How many times each task was tried.
ALTER TABLE tasks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
