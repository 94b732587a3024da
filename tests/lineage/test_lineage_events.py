"""Run events as the OpenLineage spec (2-0-2) lays them out, with sources named by its
naming conventions and no secret of any location in them."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest

from h3pipe.lineage.events import (
    Dataset,
    RunFacts,
    location_name,
    run_event,
    run_uuid,
    source_dataset,
)
from h3pipe.lineage.settings import LineageSettings, Parent
from h3pipe.spec import SourceSpec, StacSpec

SECRETS = ("Pw-Secret-77", "Sig-Secret-88", "Tok-Secret-99", "Key-Secret-11", "Db-Secret-22",
           "Err-Secret-33")


@pytest.mark.parametrize("location, namespace, name", [
    ("https://user:Pw-Secret-77@data.example.org/dem/a.tif?sig=Sig-Secret-88&se=2026",
     "https://data.example.org", "/dem/a.tif"),
    ("/vsicurl/https://data.example.org:8443/x.tif?token=Tok-Secret-99",
     "https://data.example.org:8443", "/x.tif"),
    ("/vsis3/bucket/key/a.tif", "s3://bucket", "key/a.tif"),
    ("s3://bucket/key/a.tif", "s3://bucket", "key/a.tif"),
    ("/vsigs/bucket/a.tif", "gs://bucket", "a.tif"),
    ("file:///data/a.tif", "file", "/data/a.tif"),
    ("/data/a.tif", "file", "/data/a.tif"),
])
def test_locations_are_named_as_openlineage_names_them(tmp_path, location, namespace, name):
    assert location_name(location, tmp_path) == (namespace, name)


def test_a_relative_path_is_named_from_the_project(tmp_path):
    assert location_name("data/a.tif", tmp_path) == ("file", str(tmp_path / "data" / "a.tif"))


def _source(**given):
    return SourceSpec(**({"id": "s", "kind": "raster", "location": "", "theme": "t"} | given))


def test_stac_collections_and_postgis_tables_are_named_without_their_secrets(tmp_path):
    api = _source(kind="stac", stac=StacSpec(
        url="https://planetarycomputer.microsoft.com/api/stac/v1/?subscription-key=Key-Secret-11",
        collection="cop-dem-glo-30"))
    d = source_dataset(api, tmp_path, items=4)
    assert (d.namespace, d.name) == ("https://planetarycomputer.microsoft.com",
                                     "/api/stac/v1/collections/cop-dem-glo-30")
    assert d.facets["h3pipe_source"]["items"] == 4
    static = source_dataset(_source(kind="stac", stac=StacSpec(url="cat/catalog.json",
                                                               collection="dem")), tmp_path)
    assert (static.namespace, static.name) == ("file", f"{tmp_path}/cat/catalog.json#dem")
    table = source_dataset(_source(kind="vector", table="osm.buildings", location=(
        "postgresql://gis:Db-Secret-22@db.example:6543/gis")), tmp_path)
    assert (table.namespace, table.name) == ("postgres://db.example:6543", "gis.osm.buildings")
    plain = source_dataset(_source(kind="vector", table="roads",
                                   location="host=db.example dbname=osm password=Db-Secret-22"),
                           tmp_path)
    assert (plain.namespace, plain.name) == ("postgres://db.example:5432", "osm.public.roads")


def _facts(tmp_path):
    inputs = tuple(source_dataset(_source(id=f"s{n}", location=loc), tmp_path) for n, loc in
                   enumerate(["https://u:Pw-Secret-77@h.example/a.tif?sig=Sig-Secret-88",
                              "/vsicurl/https://h.example/b.tif?token=Tok-Secret-99"]))
    return RunFacts("elev-r6-0123456789ab", "2026-12-06T10:00:00.000+00:00", "elev", 2, "abc",
                    "Elevation", "iso3=RWA", "RWA (Rwanda)", 6, 1234, inputs,
                    Dataset("file", "/store/results/elevation"))


@pytest.mark.parametrize("kind", ["START", "COMPLETE", "FAIL", "ABORT"])
def test_every_event_has_what_the_spec_requires(tmp_path, kind):
    settings = LineageSettings(namespace="ns", parent=Parent(
        "airflow", "dag.task", "3f1e6b0a-7a6c-4c5e-9d7e-0f6c1c2f4a11"))
    event = run_event(kind, _facts(tmp_path), settings,
                      error="connect failed: password=Err-Secret-33" if kind != "START" else None,
                      rows=1234 if kind == "COMPLETE" else None)
    assert event["eventType"] == kind
    assert event["schemaURL"] == "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
    assert event["producer"].startswith("urn:h3pipe:")
    assert datetime.fromisoformat(event["eventTime"]).tzinfo is not None
    run_id = uuid.UUID(event["run"]["runId"])
    assert run_id.version == 5
    assert event["job"] == {"namespace": "ns", "name": "elev", "facets": event["job"]["facets"]}
    assert event["job"]["facets"]["documentation"]["description"] == "Elevation"
    facets = event["run"]["facets"]
    assert facets["h3pipe_run"]["runId"] == "elev-r6-0123456789ab"
    assert facets["h3pipe_run"]["resolution"] == 6
    assert facets["parent"]["run"] == {"runId": "3f1e6b0a-7a6c-4c5e-9d7e-0f6c1c2f4a11"}
    assert facets["parent"]["job"] == {"namespace": "airflow", "name": "dag.task"}
    assert ("errorMessage" in facets) == (kind != "START")
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [
        ("https://h.example", "/a.tif"), ("https://h.example", "/b.tif")]
    (out,) = event["outputs"]
    assert (out["namespace"], out["name"]) == ("file", "/store/results/elevation")
    if kind == "COMPLETE":
        assert out["outputFacets"]["outputStatistics"]["rowCount"] == 1234
    every = [*facets.values(), *event["job"]["facets"].values(),
             *(f for d in event["inputs"] for f in d["facets"].values()),
             *out.get("outputFacets", {}).values()]
    for facet in every:
        assert facet["_producer"] and facet["_schemaURL"]
    text = json.dumps(event)
    assert not [s for s in SECRETS if s in text]


def test_the_run_uuid_is_one_per_attempt_and_can_be_derived_again():
    first = run_uuid("elev-r6-0123456789ab", "2026-12-06T10:00:00.000+00:00")
    assert first == run_uuid("elev-r6-0123456789ab", "2026-12-06T10:00:00.000+00:00")
    assert first != run_uuid("elev-r6-0123456789ab", "2026-12-06T11:00:00.000+00:00")
    assert first != run_uuid("elev-r7-0123456789ab", "2026-12-06T10:00:00.000+00:00")
    space = uuid.uuid5(uuid.NAMESPACE_URL, "urn:h3pipe:run")
    assert first == str(uuid.uuid5(space, "elev-r6-0123456789ab@2026-12-06T10:00:00.000+00:00"))
