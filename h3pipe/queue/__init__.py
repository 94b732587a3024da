"""The queue backend: a run's batches computed by ``h3pipe worker`` processes on any
machine that reaches the broker (Celery on RabbitMQ) and the PostgreSQL store.

The store, not the broker, is the record: a message names a task; the worker that takes
it counts the delivery, computes the batch, writes its output and marks it completed in
one transaction; the last task of a stage closes it with a compare-and-swap and sends the
message that plans the next stage, and the message after the last stage publishes. So a
run advances with nobody watching (``run --detach``), a duplicate delivery writes nothing
twice, and a lost worker's batch is simply delivered again.

- :mod:`.settings`: :class:`~.settings.QueueSettings`, where the queue is and its limits;
- :mod:`.app`: the Celery application and the broker settings that matter, explained;
- :mod:`.work`: what a worker does with a message (a batch, or a stage to advance);
- :mod:`.submit`: submitting a run, following it, waiting for it.
"""
