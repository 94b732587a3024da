"""Where ${VAR} is expanded: the places a site's data, store and broker are (a source's
path, stac.url; h3pipe.yaml's store and queue), never a title, licence or description,
which land in reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from h3pipe.config.project import ProjectConfig
from h3pipe.errors import ValidationFailed
from h3pipe.queue.settings import QueueSettings
from tests.conftest import raster_source, write_project

SECRET = "S3ntinel-pw-7f3a"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("H3PIPE_TEST_SECRET", SECRET)
    monkeypatch.setenv("H3PIPE_TEST_DATA", "/data")


def test_the_store_and_queue_urls_of_h3pipe_yaml_are_expanded(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", settings="""\
        store: postgresql://h3:${H3PIPE_TEST_SECRET}@db.internal/h3
        queue:
          url: amqp://h3:${H3PIPE_TEST_SECRET}@mq.internal:5672//
        """)
    project = ProjectConfig(root)
    settings = project.read_settings()
    assert project.store_location() == f"postgresql://h3:{SECRET}@db.internal/h3"
    queue = QueueSettings.find(None, settings)
    assert queue is not None and queue.url == f"amqp://h3:{SECRET}@mq.internal:5672//"
    assert queue.shown == "amqp://h3:***@mq.internal:5672//"


@pytest.mark.parametrize("field,text", [
    ("title", "title: 'DEM ${H3PIPE_TEST_SECRET}'"),
    ("license", "license: ${H3PIPE_TEST_SECRET}"),
    ("description", "description: ${H3PIPE_TEST_SECRET:-x}"),
    ("provenance.notes", "provenance: {notes: '${H3PIPE_TEST_SECRET}'}"),
])
def test_a_variable_where_reports_show_text_is_refused(tmp_path: Path, field: str,
                                                       text: str) -> None:
    root = write_project(tmp_path / "p", sources={
        "dem": raster_source("dem", "${H3PIPE_TEST_DATA}/dem.tif") + text + "\n"})
    [problem] = ProjectConfig(root).check().problems
    assert problem.path == field and "expanded only in" in problem.message
    assert "path" in problem.message and SECRET not in problem.message
    with pytest.raises(ValidationFailed):
        ProjectConfig(root).load()


def test_a_variable_in_h3pipe_yaml_outside_store_and_queue_is_refused(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", settings="name: ${H3PIPE_TEST_SECRET}\n")
    with pytest.raises(ValidationFailed) as caught:
        ProjectConfig(root).read_settings()
    [problem] = caught.value.problems
    assert problem.path == "name" and ("expanded only in lineage.api_key, lineage.file, "
                                       "lineage.namespace, lineage.url, queue, queue.url, "
                                       "store") in problem.message


def test_a_source_path_is_still_expanded(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", sources={
        "dem": raster_source("dem", "${H3PIPE_TEST_DATA}/dem.tif", title="'Elevation'")})
    sources, _, _ = ProjectConfig(root).load()
    assert sources["dem"].location == "/data/dem.tif" and sources["dem"].title == "Elevation"
