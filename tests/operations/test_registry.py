"""A new operation or configuration key cannot ship undocumented."""

from __future__ import annotations

import re
from pathlib import Path

from h3pipe.config import schemas
from h3pipe.operations import get_operation, operation_names

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_operation_is_documented_with_its_example_and_params():
    text = (DOCS / "operations.md").read_text()
    for name in operation_names():
        op = get_operation(name)
        section = text.split(f"## `{name}`", 1)
        assert len(section) == 2, f"docs/operations.md has no section for {name}"
        body = section[1].split("\n## ", 1)[0]
        assert op.example.strip() in body, f"the example of {name} is not in its section"
        for param in op.params_schema.get("properties", {}):
            assert f"`{param}`" in body, f"param {param} of {name} is undocumented"


def test_every_schema_key_is_documented():
    text = (DOCS / "configuration.md").read_text()
    for kind in schemas.KINDS:
        for key in schemas.schema(kind)["properties"]:
            assert re.search(rf"`{key}`", text), f"{kind} key '{key}' is not in configuration.md"


def test_examples_in_docs_validate(tmp_path):
    from h3pipe.operations.zonal_stats import NAMED_STATS

    text = (DOCS / "operations.md").read_text()
    for stat in NAMED_STATS:
        assert f"`{stat}`" in text, f"statistic {stat} is undocumented"


def test_warm_up_runs_cleanly():
    # Workers call it first thing; a failure there would only cost time, silently.
    from h3pipe.operations import warm_up

    warm_up()
