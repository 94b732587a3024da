-- A run or step stopped by a signal or a cancel request is 'interrupted', a state of its
-- own, not 'failed'. Tasks also record the seconds spent reading each raster tile
-- ('runs show' lists the slowest tiles).
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'interrupted'));
ALTER TABLE steps DROP CONSTRAINT steps_status_check;
ALTER TABLE steps ADD CONSTRAINT steps_status_check
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'interrupted'));
ALTER TABLE tasks ADD COLUMN tile_seconds TEXT;
