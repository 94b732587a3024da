"""Documents this machine has seen pass their schema are not checked again
(:func:`h3pipe.config.schemas.checked`): a command on an unchanged project loads no
jsonschema, and a change, even of one value's type, is checked."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from h3pipe.config import schemas
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

# ``h3pipe validate`` as a shell runs it, and whether it loaded jsonschema (said by an
# atexit handler: the command ends its process itself).
_VALIDATE = """
import atexit, json, sys
from h3pipe.cli import main
sys.argv = ["h3pipe", "--project", sys.argv[1], "-q", "validate"]
atexit.register(lambda: print(json.dumps({"jsonschema": "jsonschema" in sys.modules})))
sys.exit(main())
"""


def _validate(project: Path, cache: Path) -> dict[str, object]:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _VALIDATE, str(project)], cwd=root,
                          env={**os.environ, "XDG_CACHE_HOME": str(cache)},
                          capture_output=True, text=True, timeout=120)
    *said, last = done.stdout.splitlines()
    return {**json.loads(last), "code": done.returncode,
            "said": "\n".join(said) + done.stderr}


def test_an_unchanged_project_is_not_checked_against_its_schemas_again(tmp_path):
    write_raster(tmp_path / "r.tif", np.ones((10, 10), "float32"), west=29.0, north=-1.9,
                 res=0.01)
    project = write_project(
        tmp_path / "proj", sources={"r": raster_source("r", str(tmp_path / "r.tif"))},
        pipelines={"p": zonal_pipeline("p", "r", ["mean", "count"])})
    cache = tmp_path / "cache"
    first = _validate(project, cache)
    assert first["code"] == 0 and first["jsonschema"] is True
    assert len(list((cache / "h3pipe" / "valid").iterdir())) == 3  # source, pipeline, params
    again = _validate(project, cache)
    assert again["code"] == 0 and again["jsonschema"] is False

    # A value of the wrong type is checked, and refused, however often it is asked.
    pipeline = project / "pipelines" / "p.yaml"
    pipeline.write_text(pipeline.read_text().replace("[mean, count]", "mean"))
    for _ in range(2):
        broken = _validate(project, cache)
        assert broken["code"] == 1 and broken["jsonschema"] is True
        assert "expected a list, got a string ('mean')" in broken["said"]


def test_what_is_remembered_is_the_data_with_its_types_under_one_schema(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(schemas, "VALID_DIR", tmp_path / "valid")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert schemas._digest("s", {"n": 1}) != schemas._digest("s", {"n": 1.0})
    assert schemas._digest("s", {"n": 1}) != schemas._digest("s", {"n": True})
    assert schemas._digest("s", {1: "a"}) != schemas._digest("s", {"1": "a"})
    assert schemas._digest("s", {"n": 1}) != schemas._digest("t", {"n": 1})
    assert schemas._digest("s", {"a": 1, "b": 2}) == schemas._digest("s", {"b": 2, "a": 1})
    assert schemas._digest("s", {"d": datetime.date(2024, 1, 1)}) is None  # not plain YAML

    from h3pipe.config.yamlio import Document

    assert schemas.checked(Document("f", {"n": 1}), schema) == []
    assert schemas.checked(Document("f", {"n": 1}), schema) == []  # remembered
    assert len(list((tmp_path / "valid").iterdir())) == 1
    refused = schemas.checked(Document("f", {"n": "1"}), schema)
    assert [p.message for p in refused] == ["expected an integer, got a string ('1')"]
    assert len(list((tmp_path / "valid").iterdir())) == 1  # failures are not remembered
