"""Migrations: upgrade an empty database, are idempotent, survive concurrent first use."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import sqlalchemy as sa

from tracking_plugin.store.db import Database, Statement
from tracking_plugin.store.schema import Base
from support import insert_old_run


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
    # Dialect-conditional indexes (key/value prefixes, SQLite's search index) are declared
    # with ddl_if and may be reported.
    conditional = ("key_value", "ix_runs_search")
    # So is the key metrics.run_uuid -> runs: SQLite's only (migration 0011).
    sqlite_only_fk = [("add_fk", "fk_metrics_run_uuid_runs")] if db.dialect == "postgresql" else []
    # The metadata describes PostgreSQL's history table: on SQLite it has no ``id`` and no
    # ix_metrics_history, being WITHOUT ROWID keyed by those columns (migration 0012).
    postgres_only = [] if db.dialect == "postgresql" else [("add_column", "id"), ("add_index", "ix_metrics_history")]
    real = [
        d for d in diff
        if not (d[0] in ("add_index", "remove_index") and any(name in d[1].name for name in conditional))
    ]
    assert [(d[0], d[1].name) for d in real if d[0] == "add_fk"] == sqlite_only_fk
    assert [(d[0], d[3].name if d[0] == "add_column" else d[1].name) for d in real if d[0] != "add_fk"] == postgres_only
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


def _open_new_files(paths: list[str], barrier, results) -> None:  # type: ignore[no-untyped-def]
    errors = []
    for path in paths:
        barrier.wait()  # every process opens the same new file at once
        db = Database(f"sqlite:///{path}")
        try:
            with db.transaction(write=False) as tx:
                errors.append(None if tx.one(Statement(sa.text("PRAGMA journal_mode"))) == ("wal",) else "not in WAL mode")
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            errors.append(repr(exc))
        db.dispose()
    results.put(errors)


def test_processes_opening_a_new_sqlite_file_at_once_all_get_it_in_wal_mode(tmp_path: Path) -> None:
    """Switching a new file to WAL mode from several connections at once gets "database
    is locked" at once in some of them (SQLite skips the busy handler there): retried."""
    ctx = mp.get_context("spawn")
    n, rounds = 8, 12
    paths = [str(tmp_path / f"new-{i}.db") for i in range(rounds)]
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open_new_files, args=(paths, barrier, results)) for _ in range(n)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=300) for _ in range(n)]
    for proc in procs:
        proc.join(60)
    assert [e for errors in outcomes for e in errors if e is not None] == []


def test_upgrade_from_0001_keeps_every_row(db_uri: str) -> None:
    """0002 rebuilds SQLite's key/value tables (WITHOUT ROWID) and 0003 its search index:
    rows logged under 0001 read back the same through the store and search afterwards."""
    from tracking_plugin.entities import RunTag
    from tracking_plugin.store.sql import SqlStore

    db = Database(db_uri)
    db.upgrade("0001")
    run_id = "ab" * 16
    with db.engine.begin() as conn:
        insert_old_run(conn, run_id, "FINISHED")
        conn.execute(sa.text("INSERT INTO params (run_uuid, key, value) VALUES (:r, 'lr', '0.1')"), {"r": run_id})
        conn.execute(sa.text("INSERT INTO tags (run_uuid, key, value) VALUES (:r, 'team', 'ml')"), {"r": run_id})
        conn.execute(sa.text(
            "INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step) "
            "VALUES (:r, 'acc', 0.5, false, 1, 0), (:r, 'loss', 0, true, 1, 0)"
        ), {"r": run_id})
    db.upgrade()
    assert db.current_revision() == Database.head_revision()
    if db.dialect == "sqlite":
        with db.engine.connect() as conn:
            ddl = dict(conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all())
        assert all("WITHOUT ROWID" in ddl[t] for t in ("params", "tags", "latest_metrics"))
        indexes = {i["name"] for i in sa.inspect(db.engine).get_indexes("runs")}
        assert "ix_runs_search_rows" in indexes and "ix_runs_search" not in indexes
    store = SqlStore(db)
    run = store.get_run(run_id)
    assert run.data.params == {"lr": "0.1"} and run.data.tags == {"team": "ml"}
    assert run.data.metrics["acc"] == 0.5 and run.data.metrics["loss"] != run.data.metrics["loss"]  # NaN
    found = store.search_runs([run.info.experiment_id], "params.lr = '0.1' and metrics.acc > 0.4")
    assert [r.info for r in found] == [run.info]  # read from the search index on SQLite
    store.log_batch(run_id, tags=[RunTag("team", "ops")])
    assert store.get_run(run_id).data.tags == {"team": "ops"}
    db.dispose()


def test_0008_summarises_the_history_already_logged(db_uri: str) -> None:
    """0008 fills metric_blocks from the points logged before it (NaN left out), and
    log_batch keeps them from then on."""
    from tracking_plugin.entities import Metric
    from tracking_plugin.store.sql import SqlStore

    db = Database(db_uri)
    db.upgrade("0007_gc")
    run_id = "cd" * 16
    with db.engine.begin() as conn:
        insert_old_run(conn, run_id)
        conn.execute(sa.text(
            "INSERT INTO metrics (run_uuid, key, value, is_nan, timestamp, step) VALUES "
            "(:r, 'loss', 3.0, false, 1, 0), (:r, 'loss', -1.0, false, 1, 1023), (:r, 'loss', 0, true, 1, 5), "
            "(:r, 'loss', 7.5, false, 1, 1024), (:r, 'acc', 0.5, false, 1, 2)"
        ), {"r": run_id})
    db.upgrade()
    blocks = "SELECT key, block, n_points, min_step, max_step, min_value, max_value FROM metric_blocks ORDER BY key, block"
    with db.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(blocks)).all()]
    assert rows == [("acc", 0, 1, 2, 2, 0.5, 0.5), ("loss", 0, 2, 0, 1023, -1.0, 3.0), ("loss", 1, 1, 1024, 1024, 7.5, 7.5)]
    SqlStore(db).log_batch(run_id, metrics=[Metric("loss", 9.0, 2, 1500), Metric("loss", -2.0, 2, 900)])
    with db.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(blocks)).all()]
    assert rows[1:] == [("loss", 0, 3, 0, 1023, -2.0, 3.0), ("loss", 1, 2, 1024, 1500, 7.5, 9.0)]
    db.dispose()
