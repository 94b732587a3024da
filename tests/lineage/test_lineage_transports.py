"""Events reach a real HTTP receiver and a file; a backend that is down, failing or silent
costs one bounded wait and one warning line, never an error."""

from __future__ import annotations

import json
import threading
import time

import pytest

from h3pipe.errors import ConfigError
from h3pipe.lineage.settings import LineageSettings, Parent
from h3pipe.lineage.transports import Emitter, FileTransport, HttpTransport
from tests.lineage.receiver import Receiver, closed_port


def test_an_event_is_posted_as_json_with_its_bearer_token(receiver, tmp_path):
    settings = LineageSettings.find({"lineage": {"url": receiver.url, "api_key": "k-123456789"}},
                                    tmp_path, env={})
    warnings: list[str] = []
    Emitter.of(settings, warnings.append).emit({"eventType": "START", "n": 1})
    (got,) = receiver.received
    assert got["path"] == "/api/v1/lineage"
    assert got["headers"]["Content-Type"] == "application/json"
    assert got["headers"]["Authorization"] == "Bearer k-123456789"
    assert got["body"] == {"eventType": "START", "n": 1}
    assert warnings == []


def test_a_refused_endpoint_warns_once_and_is_not_tried_again(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    warnings: list[str] = []
    out = tmp_path / "events.jsonl"
    emitter = Emitter([HttpTransport(url + "/api/v1/lineage"), FileTransport(out)],
                      warnings.append)
    for n in range(3):
        emitter.emit({"n": n})
    assert len(warnings) == 1
    assert warnings[0].startswith(f"lineage: cannot send events to {url}/api/v1/lineage (")
    assert "refused" in warnings[0].lower()
    # The other transport is not held back by the failing one.
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"n": 0}, {"n": 1}, {"n": 2}]


def test_a_silent_endpoint_costs_one_timeout_in_all():
    silent = Receiver("hang")
    try:
        warnings: list[str] = []
        emitter = Emitter([HttpTransport(silent.url, timeout=0.3)], warnings.append)
        started = time.monotonic()
        for n in range(5):
            emitter.emit({"n": n})
        spent = time.monotonic() - started
        assert 0.3 <= spent < 1.5, spent
        assert warnings == [f"lineage: cannot send events to {silent.url} (no answer within "
                            "0.3 s); this run sends it no more"]
        assert len(silent.received) == 1
    finally:
        silent.close()


def test_an_error_answer_is_named_in_the_warning():
    failing = Receiver("error")
    try:
        warnings: list[str] = []
        Emitter([HttpTransport(failing.url)], warnings.append).emit({"n": 1})
        assert len(failing.received) == 1
        assert warnings == [f"lineage: cannot send events to {failing.url} (HTTP 500 Internal "
                            "Server Error); this run sends it no more"]
    finally:
        failing.close()


def test_a_password_in_the_url_is_never_shown(tmp_path):
    url = f"http://lineage:Very-Secret-9@127.0.0.1:{closed_port()}"
    settings = LineageSettings.find({"lineage": {"url": url}}, tmp_path, env={})
    warnings: list[str] = []
    Emitter.of(settings, warnings.append).emit({"n": 1})
    assert len(warnings) == 1 and "Very-Secret-9" not in warnings[0]
    assert settings.target is not None and "Very-Secret-9" not in settings.target


def test_lines_of_many_writers_never_interleave(tmp_path):
    out = tmp_path / "events.jsonl"
    # Large lines, so that a line written in pieces would show.
    payload = "x" * 20_000

    def write(writer: int) -> None:
        emitter = Emitter([FileTransport(out)], lambda text: pytest.fail(text))
        for n in range(15):
            emitter.emit({"writer": writer, "n": n, "payload": payload})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    lines = out.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) == 8 * 15
    for w in range(8):
        assert [e["n"] for e in events if e["writer"] == w] == list(range(15))


def test_an_unwritable_file_warns_and_the_run_goes_on(tmp_path):
    out = tmp_path / "gone" / "events.jsonl"
    warnings: list[str] = []
    Emitter([FileTransport(out)], warnings.append).emit({"n": 1})
    assert warnings == [f"lineage: cannot send events to {out} (No such file or directory); "
                        "this run sends it no more"]


# -- settings -------------------------------------------------------------------------------

def test_the_environment_takes_precedence_over_h3pipe_yaml(tmp_path):
    declared = {"lineage": {"url": "http://declared:5000", "namespace": "declared",
                            "file": "declared.jsonl", "timeout": 1.5}}
    s = LineageSettings.find(declared, tmp_path, env={})
    assert (s.url, s.namespace, s.file, s.timeout) == (
        "http://declared:5000", "declared", tmp_path / "declared.jsonl", 1.5)
    assert s.target == "http://declared:5000/api/v1/lineage"
    s = LineageSettings.find(declared, tmp_path, env={
        "OPENLINEAGE_URL": "https://env:443/", "OPENLINEAGE_ENDPOINT": "/v2/events",
        "OPENLINEAGE_NAMESPACE": "env", "H3PIPE_LINEAGE_FILE": str(tmp_path / "env.jsonl"),
        "OPENLINEAGE_PARENT_ID": "airflow/dag.task/3f1e6b0a-7a6c-4c5e-9d7e-0f6c1c2f4a11"})
    assert (s.url, s.namespace, s.file) == ("https://env:443/", "env", tmp_path / "env.jsonl")
    assert s.target == "https://env:443/v2/events"
    assert s.parent == Parent("airflow", "dag.task", "3f1e6b0a-7a6c-4c5e-9d7e-0f6c1c2f4a11")
    assert not LineageSettings.find(declared, tmp_path,
                                    env={"OPENLINEAGE_DISABLED": "true"}).enabled
    assert not LineageSettings.find({}, tmp_path, env={}).enabled


@pytest.mark.parametrize("lineage, env, words", [
    ({"url": "ftp://x/"}, {}, "lineage url 'ftp://x/' is not an http:// or https:// URL"),
    ({}, {"OPENLINEAGE_URL": "marquez:5000"}, "lineage url 'marquez:5000' is not an http://"),
    ({"file": "no/such/folder/e.jsonl"}, {}, "its folder does not exist"),
    ({"file": "."}, {}, "is a folder"),
    ({}, {"OPENLINEAGE_PARENT_ID": "airflow/task"}, "is not NAMESPACE/JOB/RUN_UUID"),
    ({}, {"OPENLINEAGE_PARENT_ID": "a/b/not-a-uuid"}, "is not NAMESPACE/JOB/RUN_UUID"),
])
def test_settings_that_cannot_work_are_refused_before_a_run(tmp_path, lineage, env, words):
    with pytest.raises(ConfigError) as caught:
        LineageSettings.find({"lineage": lineage}, tmp_path, env=env)
    assert words in str(caught.value)
    assert caught.value.hint
