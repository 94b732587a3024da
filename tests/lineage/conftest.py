from __future__ import annotations

import pytest

from tests.lineage.receiver import Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def no_lineage_env(monkeypatch):
    """Nothing from the environment of whoever runs the tests: each test sets its own."""
    for name in ("OPENLINEAGE_URL", "OPENLINEAGE_ENDPOINT", "OPENLINEAGE_API_KEY",
                 "OPENLINEAGE_NAMESPACE", "OPENLINEAGE_DISABLED", "OPENLINEAGE_PARENT_ID",
                 "H3PIPE_LINEAGE_FILE"):
        monkeypatch.delenv(name, raising=False)
