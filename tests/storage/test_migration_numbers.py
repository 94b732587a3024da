"""Migrations numbered alike in both dialects: a number names the same change in SQLite and
PostgreSQL, and a store migrated when they were numbered differently (h3pipe 0.1.0) is
known to be up to date, by each migration's name, and is not migrated again."""

from __future__ import annotations

from pathlib import Path

from h3pipe.storage.catalog import MIGRATIONS_DIR
from tests.stores import Backend, store_backend  # noqa: F401  (the fixture)

# What 0.1.0 recorded, per dialect, for a store migrated to its last migration: the
# numbers as its files had them (read from its tree: SQLite lacked wide_results and
# PostgreSQL the STAC migration, so their numbers drifted apart from 0002 or 0009 on).
OLD = {
    "embedded": ["0001_initial", "0002_stac_and_source_catalog",
                 "0003_intermediates_and_pipelines", "0004_events", "0005_heartbeat",
                 "0006_task_attempts", "0007_cancel", "0008_interrupted", "0009_queue",
                 "0010_sweep_layout", "0011_task_null_rows"],
    "postgresql": ["0001_initial", "0002_intermediates_and_pipelines", "0003_events",
                   "0004_heartbeat", "0005_task_attempts", "0006_cancel",
                   "0007_interrupted", "0008_wide_results", "0009_queue",
                   "0010_sweep_layout", "0011_task_null_rows"],
}


def _stems(dialect: str) -> list[str]:
    return sorted(p.stem for p in Path(MIGRATIONS_DIR, dialect).glob("*.sql"))


def test_a_number_names_the_same_change_in_both_dialects():
    assert _stems("sqlite") == _stems("postgresql")
    numbers = [s.split("_", 1)[0] for s in _stems("sqlite")]
    assert numbers == [f"{n:04d}" for n in range(1, len(numbers) + 1)]


def test_a_store_numbered_the_old_way_is_up_to_date(store_backend: Backend):  # noqa: F811
    with store_backend.open(create=True) as store:
        assert store.catalog.pending() == []
    # Rewrite the store's record as 0.1.0 left it.
    store_backend.sql("DELETE FROM schema_migrations")
    for version in OLD[store_backend.name]:
        store_backend.sql("INSERT INTO schema_migrations VALUES (?, ?)",
                          (version, "2026-11-01T00:00:00+00:00"))
    with store_backend.open() as store:
        catalog = store.catalog
        assert catalog.pending() == []
        assert catalog.migrate() == []
        dialect = "sqlite" if store_backend.name == "embedded" else "postgresql"
        # Every migration that changes this dialect is known as applied, by its new name;
        # the one that only holds comments here (the other dialect's) is never pending.
        empty = {"sqlite": "0009_wide_results",
                 "postgresql": "0002_stac_and_source_catalog"}[dialect]
        assert catalog.applied() == [s for s in _stems(dialect) if s != empty]
    recorded = sorted(r[0] for r in store_backend.sql("SELECT version FROM schema_migrations"))
    assert recorded == sorted(OLD[store_backend.name])  # nothing written by reading it


def test_a_new_store_records_the_new_numbers(store_backend: Backend):  # noqa: F811
    with store_backend.open(create=True) as store:
        assert store.catalog.pending() == []
    recorded = {r[0] for r in store_backend.sql("SELECT version FROM schema_migrations")}
    assert "0010_queue" in recorded and "0012_task_null_rows" in recorded
    assert "0009_queue" not in recorded
