"""Where a stage's batches are computed."""

from h3pipe.engine.executors.local import Executor, Outcome, Retry, Stopping

__all__ = ["Executor", "Outcome", "Retry", "Stopping"]
