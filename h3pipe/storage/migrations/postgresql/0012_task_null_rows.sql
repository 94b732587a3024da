-- Coverage (issue 25): the rows of a task's output with no valid pixel (every statistic
-- null, or 0 where it stays defined), counted as the output is written; a run sums its
-- tasks, so a resumed run keeps its completed tasks' counts. NULL: nothing to count (a
-- step not over the run's cells with a raster), or a task completed before this column.
ALTER TABLE tasks ADD COLUMN null_rows INTEGER;
