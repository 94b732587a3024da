"""A fresh PostgreSQL database per test (with PostGIS available), for the PostgreSQL store.

Skips when PostgreSQL is not reachable on 127.0.0.1:5432, with how to enable it; fails
instead under CI=true, so CI never skips these tests silently.
"""

from __future__ import annotations

import os
import secrets

import pytest

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _admin():
    import psycopg

    try:
        return psycopg.connect(ADMIN, autocommit=True, connect_timeout=2)
    except psycopg.Error as exc:
        message = (f"PostgreSQL not reachable on 127.0.0.1:5432 ({exc.__class__.__name__}): "
                   "start it ('pg_ctlcluster 15 main start') to run the PostgreSQL store tests")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture
def pg_url():
    name = f"h3pipe_test_{secrets.token_hex(4)}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    # A password that trust auth ignores: outputs must never show it.
    yield f"postgresql://postgres:s3cret-pw@127.0.0.1:5432/{name}"
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
