"""Running a prepared run on this machine: the runner, its barrier stages, executors, the
run lock, stopping, cleanup of intermediates and the conservation check."""
