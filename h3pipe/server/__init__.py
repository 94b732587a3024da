"""``h3pipe serve``: the HTTP face of a :class:`~h3pipe.api.Project`. :func:`create_app`
(in :mod:`h3pipe.server.app`) builds the ASGI application: OGC API – Processes
(:mod:`.ogc`), the catalog endpoints (:mod:`.catalog`), the map's data (:mod:`.maps`) and
the live dashboard (:mod:`.dashboard`); runs go to warm workers or the queue (:mod:`.jobs`).
Needs the ``server`` extra (FastAPI, uvicorn)."""
