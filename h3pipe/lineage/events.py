"""OpenLineage run events of a run: :class:`RunFacts` (what every event of one run says)
and :func:`run_event`, built as the OpenLineage spec 2-0-2 lays them out
(https://openlineage.io/spec/2-0-2/OpenLineage.json).

* **Run id**: OpenLineage wants a UUID, h3pipe's run id is a digest of the run's inputs
  (the same for a resume). The event's ``runId`` is a UUIDv5 of h3pipe's run id and the
  moment this attempt claimed it (``runs.started_at``): each attempt is its own
  OpenLineage run, and anyone holding the catalog can derive it again.
  The ``h3pipe_run`` facet keeps h3pipe's id.
* **Job**: the configured namespace, named by the pipeline id.
* **Inputs**: the pipeline's sources, named as the OpenLineage naming conventions say
  (``file`` and a path; ``s3://bucket`` and a key; ``https://host`` and a path; a STAC
  collection as its API's ``/collections/<id>`` path; a PostGIS table as
  ``postgres://host:port`` and ``database.schema.table``). No query string, no user, no
  password: a signed URL's signature never reaches an event.
* **Output**: the published dataset (embedded store: ``file`` and
  ``<store>/results/<dataset>``; PostgreSQL: ``database.h3.stats_<theme>__<dataset>``),
  with its scope and resolution in the ``h3pipe_result`` facet.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from h3pipe import masking
from h3pipe.about import version
from h3pipe.lineage.settings import LineageSettings
from h3pipe.storage.embedded import EmbeddedStore

if TYPE_CHECKING:
    from h3pipe.planning.prepare import RunPlan
    from h3pipe.spec import SourceSpec
    from h3pipe.storage.base import Store

SPEC = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
SCHEMA_URL = f"{SPEC}#/$defs/RunEvent"
# h3pipe's own facets; described in docs/orchestrators.md.
FACETS_URL = "urn:h3pipe:facets:1"
EVENT_TYPES = ("START", "COMPLETE", "FAIL", "ABORT")
# How a run's recorded status ends its lineage.
ENDS = {"completed": "COMPLETE", "failed": "FAIL", "interrupted": "ABORT"}
_RUN_UUIDS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:h3pipe:run")
_FACET = {
    "errorMessage": "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json"
                    "#/$defs/ErrorMessageRunFacet",
    "processing_engine": "https://openlineage.io/spec/facets/1-1-1/"
                         "ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet",
    "parent": "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json"
              "#/$defs/ParentRunFacet",
    "jobType": "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json"
               "#/$defs/JobTypeJobFacet",
    "documentation": "https://openlineage.io/spec/facets/1-1-0/DocumentationJobFacet.json"
                     "#/$defs/DocumentationJobFacet",
    "schema": "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json"
              "#/$defs/SchemaDatasetFacet",
    "outputStatistics": "https://openlineage.io/spec/facets/1-0-2/"
                        "OutputStatisticsOutputDatasetFacet.json"
                        "#/$defs/OutputStatisticsOutputDatasetFacet",
}
# GDAL's virtual file systems of object stores, as OpenLineage names their namespaces.
_VSI = {"s3": "s3", "gs": "gs", "az": "wasbs", "adls": "abfss", "oss": "oss"}


def producer() -> str:
    """Who made an event: this h3pipe, by version."""
    return f"urn:h3pipe:{version()}"


def facet(kind: str, /, **fields: Any) -> dict[str, Any]:
    """A facet of ``kind``: its fields, and who made it after which schema."""
    return {"_producer": producer(), "_schemaURL": _FACET.get(kind, f"{FACETS_URL}#{kind}"),
            **fields}


@dataclass(frozen=True)
class Dataset:
    namespace: str
    name: str
    facets: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self, **more: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"namespace": self.namespace, "name": self.name}
        if self.facets:
            out["facets"] = dict(self.facets)
        return out | more


@dataclass(frozen=True)
class RunFacts:
    """What every event of one run says: who ran what, over which scope, from which
    sources into which dataset."""

    run_id: str
    started_at: str  # when this attempt claimed the run, as the catalog recorded it
    pipeline_id: str
    pipeline_version: int
    pipeline_hash: str
    title: str | None
    scope_key: str
    scope_label: str
    resolution: int
    cells: int
    inputs: tuple[Dataset, ...]
    output: Dataset

    @property
    def uuid(self) -> str:
        return run_uuid(self.run_id, self.started_at)


def run_uuid(run_id: str, started_at: str) -> str:
    """The OpenLineage run id of one attempt of an h3pipe run."""
    return str(uuid.uuid5(_RUN_UUIDS, f"{run_id}@{started_at}"))


def run_event(kind: str, facts: RunFacts, settings: LineageSettings, *,
              error: str | None = None, rows: int | None = None,
              columns: list[str] | None = None, at: datetime | None = None
              ) -> dict[str, Any]:
    """One RunEvent: ``kind`` is START, COMPLETE, FAIL or ABORT; ``error`` is why a run
    failed or stopped; ``rows`` and ``columns`` what a completed run published."""
    if kind not in EVENT_TYPES:
        raise ValueError(f"not an event type h3pipe sends: {kind}")
    run_facets: dict[str, Any] = {
        "h3pipe_run": facet("h3pipe_run", runId=facts.run_id, startedAt=facts.started_at,
                            pipelineVersion=facts.pipeline_version,
                            pipelineHash=facts.pipeline_hash, scopeKey=facts.scope_key,
                            scopeLabel=facts.scope_label, resolution=facts.resolution,
                            cells=facts.cells),
        "processing_engine": facet("processing_engine", version=version(),
                                   name="h3pipe"),
    }
    if settings.parent is not None:
        p = settings.parent
        run_facets["parent"] = facet("parent", run={"runId": p.run_id},
                                     job={"namespace": p.namespace, "name": p.job})
    if error is not None:
        run_facets["errorMessage"] = facet("errorMessage", message=masking.scrub(error),
                                           programmingLanguage="python")
    job_facets: dict[str, Any] = {"jobType": facet("jobType", processingType="BATCH",
                                                   integration="H3PIPE", jobType="PIPELINE")}
    if facts.title:
        job_facets["documentation"] = facet("documentation", description=facts.title)
    output = facts.output
    extra: dict[str, Any] = {}
    if columns is not None:
        output = Dataset(output.namespace, output.name, dict(output.facets) | {
            "schema": facet("schema", fields=[{"name": c} for c in columns])})
    if rows is not None:
        extra["outputFacets"] = {"outputStatistics": facet("outputStatistics",
                                                           rowCount=rows)}
    return {
        "eventType": kind,
        "eventTime": (at or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        "producer": producer(),
        "schemaURL": SCHEMA_URL,
        "run": {"runId": facts.uuid, "facets": run_facets},
        "job": {"namespace": settings.namespace, "name": facts.pipeline_id,
                "facets": job_facets},
        "inputs": [d.to_json() for d in facts.inputs],
        "outputs": [output.to_json(**extra)],
    }


# -- from a run plan ------------------------------------------------------------------------

def facts_of(plan: RunPlan, store: Store, started_at: str, root: Path) -> RunFacts:
    """The facts of a claimed run; ``root`` is the project's folder (relative source paths
    are read from there)."""
    p = plan.pipeline
    used = {s.source for s in p.steps if s.source}
    items: dict[str, int] = {}
    for item in plan.items:
        items[item.source_id] = items.get(item.source_id, 0) + 1
    inputs = tuple(source_dataset(plan.sources[sid], root, items.get(sid))
                   for sid in sorted(used) if sid in plan.sources)
    return RunFacts(plan.run_id, started_at, p.id, p.version, p.content_hash, p.title,
                    plan.scope.key, plan.scope.label, plan.resolution, len(plan.cells),
                    inputs, output_dataset(store, p.dataset, p.theme, plan.resolution,
                                           plan.scope.key, plan.scope.label))


def source_dataset(spec: SourceSpec, root: Path, items: int | None = None) -> Dataset:
    """A source as an input dataset, named without any secret its location holds."""
    described: dict[str, Any] = {"sourceId": spec.id, "kind": spec.kind, "theme": spec.theme}
    if spec.stac is not None:
        namespace, name = _stac_name(spec.stac.url, spec.stac.collection, root)
        described |= {"asset": spec.stac.asset, "items": items}
    elif spec.table:
        namespace, database = _postgres(spec.location)
        table = spec.table if "." in spec.table else f"public.{spec.table}"
        name = f"{database}.{table}"
    else:
        namespace, name = location_name(spec.location, root)
    return Dataset(namespace, masking.scrub(name),
                   {"h3pipe_source": facet("h3pipe_source", **described)})


def output_dataset(store: Store, dataset: str, theme: str, resolution: int, scope_key: str,
                   scope_label: str) -> Dataset:
    """The dataset a run publishes into: the store's results of ``dataset`` (every scope
    and resolution); which part the run replaces is in its ``h3pipe_result`` facet."""
    if isinstance(store, EmbeddedStore):
        namespace, name = "file", f"{store.root.resolve()}/results/{dataset}"
    else:
        # The PostgreSQL store's module (its COPY brings pyarrow.compute, 0.1 s) only
        # for a run on one: not for every run on the embedded store.
        from h3pipe.storage.postgis import stats_table

        namespace, database = _postgres(str(getattr(store, "url", store.location)))
        name = f"{database}.h3.{stats_table(theme, dataset)}"
    return Dataset(namespace, name, {"h3pipe_result": facet(
        "h3pipe_result", dataset=dataset, theme=theme, resolution=resolution,
        scopeKey=scope_key, scopeLabel=scope_label)})


def location_name(location: str, root: Path) -> tuple[str, str]:
    """(namespace, name) of a file or URL: a GDAL ``/vsi...`` path as the URL it reads;
    user, password and query left out."""
    if location.startswith("/vsicurl/"):
        location = location[len("/vsicurl/"):]
    vsi = re.match(r"^/vsi([a-z0-9]+)/([^/]+)/(.*)$", location)
    if vsi and vsi[1] in _VSI:
        return f"{_VSI[vsi[1]]}://{vsi[2]}", vsi[3]
    parts = urlsplit(location)
    if parts.scheme == "file":
        return "file", parts.path
    if len(parts.scheme) > 1 and parts.hostname:
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        if parts.scheme in ("http", "https", "ftp"):
            return f"{parts.scheme}://{host}", parts.path or "/"
        return f"{parts.scheme}://{host}", parts.path.lstrip("/")
    path = Path(location).expanduser()
    return "file", str(path if path.is_absolute() else (root / path).resolve())


def _stac_name(url: str, collection: str, root: Path) -> tuple[str, str]:
    namespace, name = location_name(url, root)
    if namespace.startswith(("http://", "https://")) and not name.endswith(
            (".json", ".parquet", ".geoparquet")):
        return namespace, f"{name.rstrip('/')}/collections/{collection}"
    return namespace, f"{name}#{collection}"  # a static catalog or stac-geoparquet file


def _postgres(location: str) -> tuple[str, str]:
    """(``postgres://host:port``, database) of a PostgreSQL URL or libpq keyword string
    (read here, not by psycopg: a source may name a table where the 'postgres' extra is
    not installed)."""
    if masking.is_keyword_dsn(location):
        words = {k.lower(): v.strip("'") for k, v in
                 re.findall(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", location)}
    else:
        parts = urlsplit(location)
        words = {k.lower(): v for k, v in parse_qsl(parts.query)}
        words.setdefault("host", parts.hostname or "")
        words.setdefault("port", str(parts.port or ""))
        words.setdefault("dbname", parts.path.lstrip("/"))
        words.setdefault("user", parts.username or "")
    host = words.get("host") or words.get("hostaddr") or "localhost"
    if host.startswith("/"):  # a Unix socket: the database is on this machine
        host = "localhost"
    return (f"postgres://{host}:{words.get('port') or 5432}",
            words.get("dbname") or words.get("user") or "postgres")


__all__ = ["ENDS", "EVENT_TYPES", "SCHEMA_URL", "Dataset", "RunFacts", "facet",
           "facts_of", "location_name", "output_dataset", "producer", "run_event", "run_uuid",
           "source_dataset"]
