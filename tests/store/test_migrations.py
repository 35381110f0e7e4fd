"""Migrations: upgrade an empty database, are idempotent, survive concurrent first use."""

from __future__ import annotations

import multiprocessing as mp

import sqlalchemy as sa

from tracking_plugin.store.db import Database
from tracking_plugin.store.schema import Base


def test_upgrade_creates_every_table_and_is_idempotent(db_uri: str) -> None:
    db = Database(db_uri)
    assert db.current_revision() is None
    db.upgrade()
    head = Database.head_revision()
    assert db.current_revision() == head
    tables = set(sa.inspect(db.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    db.upgrade()  # second time: nothing to do, no error
    assert db.current_revision() == head
    db.dispose()


def test_migrated_schema_matches_the_metadata(db_uri: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    db = Database(db_uri)
    db.upgrade()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # Dialect-conditional prefix indexes are declared with ddl_if and may be reported.
    real = [d for d in diff if not (d[0] in ("add_index", "remove_index") and "key_value" in d[1].name)]
    assert real == []
    db.dispose()


def _first_use(uri: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    db = Database(uri)
    barrier.wait()
    try:
        db.ensure_schema()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put(repr(exc))


def test_concurrent_first_use_by_several_processes(db_uri: str) -> None:
    ctx = mp.get_context("spawn")
    n = 6
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_first_use, args=(db_uri, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    outcomes = [results.get(timeout=5) for _ in range(n)]
    assert outcomes == ["ok"] * n
    assert Database(db_uri).current_revision() == Database.head_revision()
