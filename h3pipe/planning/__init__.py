"""Preparing a run: what it is (:class:`~h3pipe.planning.prepare.RunPlan`), where it computes
(:mod:`~h3pipe.planning.scope`), how its work is cut into batches
(:mod:`~h3pipe.planning.batching`), and the fan-out over countries and resolutions."""
