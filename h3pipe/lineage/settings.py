"""Where a project's OpenLineage events go: :class:`LineageSettings`.

Read from ``lineage:`` in h3pipe.yaml, with the OpenLineage client's own environment
variables taking precedence, so a scheduler that already sets them for its other tasks
(Airflow's OpenLineage provider, dbt-ol) points h3pipe at the same backend:
``OPENLINEAGE_URL``, ``OPENLINEAGE_ENDPOINT``, ``OPENLINEAGE_API_KEY``,
``OPENLINEAGE_NAMESPACE``, ``OPENLINEAGE_DISABLED`` and ``OPENLINEAGE_PARENT_ID``
(``namespace/job/run-uuid``, the parent run an orchestrator passes down); and
``H3PIPE_LINEAGE_FILE`` for the file. Neither set: no event is made.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from h3pipe import masking
from h3pipe.errors import ConfigError

DEFAULT_NAMESPACE = "h3pipe"
DEFAULT_ENDPOINT = "api/v1/lineage"  # Marquez's, and the OpenLineage client's default
# A lineage backend that is down may cost a run this long, once (see transports.Emitter).
DEFAULT_TIMEOUT = 2.0


@dataclass(frozen=True)
class Parent:
    """The run that started this one (an Airflow task, a Dagster step)."""

    namespace: str
    job: str
    run_id: str


@dataclass(frozen=True)
class LineageSettings:
    namespace: str = DEFAULT_NAMESPACE
    url: str | None = None  # the backend's base URL (events go to url + endpoint)
    endpoint: str = DEFAULT_ENDPOINT
    api_key: str | None = None  # sent as a Bearer token, never in an event
    file: Path | None = None  # JSON lines, one event each, appended
    timeout: float = DEFAULT_TIMEOUT
    parent: Parent | None = None

    @property
    def enabled(self) -> bool:
        return self.url is not None or self.file is not None

    @property
    def target(self) -> str | None:
        """Where HTTP events are posted, as it may be shown."""
        if self.url is None:
            return None
        return masking.shown(self.url.rstrip("/") + "/" + self.endpoint.lstrip("/"))

    @classmethod
    def find(cls, settings: Mapping[str, Any], root: Path,
             env: Mapping[str, str] | None = None) -> LineageSettings:
        """The lineage settings of the project at ``root``: its environment, then
        ``lineage:`` of its (validated) h3pipe.yaml ``settings``. Raises
        :class:`ConfigError` for a value that cannot work, before any run starts."""
        env = os.environ if env is None else env
        table: Mapping[str, Any] = settings.get("lineage") or {}
        if env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
            return cls()
        url = env.get("OPENLINEAGE_URL") or table.get("url")
        file = env.get("H3PIPE_LINEAGE_FILE") or table.get("file")
        api_key = env.get("OPENLINEAGE_API_KEY") or table.get("api_key")
        if api_key:
            masking.remember(f"api_key={api_key}")  # masked wherever an error quotes it
        return cls(namespace=env.get("OPENLINEAGE_NAMESPACE") or table.get("namespace")
                   or DEFAULT_NAMESPACE,
                   url=_checked_url(url) if url else None,
                   endpoint=env.get("OPENLINEAGE_ENDPOINT") or table.get("endpoint")
                   or DEFAULT_ENDPOINT,
                   api_key=api_key or None,
                   file=_checked_file(file, root) if file else None,
                   timeout=float(table.get("timeout", DEFAULT_TIMEOUT)),
                   parent=_parent(env.get("OPENLINEAGE_PARENT_ID")))


def _checked_url(url: str) -> str:
    masking.remember(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"lineage url '{masking.shown(url)}' is not an http:// or https:// "
                          "URL", hint="set lineage.url in h3pipe.yaml (or $OPENLINEAGE_URL) "
                          "to the backend's base URL, e.g. http://marquez:5000")
    return url


def _checked_file(given: str, root: Path) -> Path:
    path = Path(given).expanduser()
    path = path if path.is_absolute() else root / path
    if path.is_dir():
        raise ConfigError(f"lineage file {path} is a folder",
                          hint="set lineage.file (or $H3PIPE_LINEAGE_FILE) to a file name, "
                          "e.g. lineage.jsonl")
    if not path.parent.is_dir():
        raise ConfigError(f"lineage file {path}: its folder does not exist",
                          hint=f"create {path.parent}, or set lineage.file (or "
                          "$H3PIPE_LINEAGE_FILE) to a file in a folder that exists")
    return path


def _parent(given: str | None) -> Parent | None:
    if not given:
        return None
    parts = given.strip().split("/")
    try:
        if len(parts) != 3 or not all(parts):
            raise ValueError(given)
        run_id = str(uuid.UUID(parts[2]))
    except ValueError:
        raise ConfigError(f"OPENLINEAGE_PARENT_ID '{given}' is not NAMESPACE/JOB/RUN_UUID",
                          hint="set it as Airflow's lineage_parent_id macro gives it, or "
                          "unset it") from None
    return Parent(parts[0], parts[1], run_id)


__all__ = ["DEFAULT_ENDPOINT", "DEFAULT_NAMESPACE", "DEFAULT_TIMEOUT", "LineageSettings",
           "Parent"]
