"""The metric history without a foreign key to runs on PostgreSQL (migration 0011).

``log_batch`` checks and locks its run once per batch (``FOR KEY SHARE``) instead of the
per-row trigger of ``fk_metrics_run_uuid_runs``. What must hold without that key:

- writer processes logging batches while another process deletes and garbage-collects
  their runs leave no metric row that names a missing run; every call either wrote all
  its points (still there if its run survived) or got the deleted / garbage-collected
  error and wrote nothing;
- a batch to an unknown or garbage-collected run gets the same error as before and writes
  nothing (small batches: ``executemany``; large ones: ``COPY``);
- migrating to 0011 and back keeps every row, and the key is back after the downgrade.
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import time
import traceback
from typing import Any

import pytest
import sqlalchemy as sa

from support import create_pg_database
from tracking_plugin.entities import Metric, Param
from tracking_plugin.errors import Conflict, NotFound
from tracking_plugin.store.db import Database, Statement
from tracking_plugin.store.sql import SqlStore

T0 = 1_700_000_000_000
FK = "fk_metrics_run_uuid_runs"
ORPHANS = "SELECT count(*) FROM metrics m WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_uuid = m.run_uuid)"

WRITERS = 3
RUNS_EACH = 3  # per writer: the reaper garbage-collects all but the last
SURVIVOR_BATCHES = 3
POINTS = 20_000  # per batch: a COPY that takes long enough for a whole gc to run beside it
# A writer's batch in flight: its connection (named after the writer) runs the COPY.
IN_FLIGHT = (
    "SELECT query_start FROM pg_stat_activity WHERE application_name = :name AND state = 'active' "
    "AND query LIKE 'COPY metrics%' AND query_start > :after"
)


def _metric_fks(db: Database, table: str = "metrics") -> list[str]:
    return [fk["name"] for fk in sa.inspect(db.engine).get_foreign_keys(table) if fk["referred_table"] == "runs"]


def _new_run(store: SqlStore, experiment_id: str) -> str:
    return store.create_run(experiment_id, user_id="ada", start_time=T0).info.run_id


def _purge(store: SqlStore, run_id: str) -> bool:
    """Delete and garbage-collect one run now, as ``prefect-mlops gc`` does (its three
    transactions: plan, mark, purge). False if the plan did not list it."""
    store.delete_run(run_id)
    plan = store.gc_plan(deleted_before_ms=2**62, run_ids=[run_id])
    if [c.run_id for c in plan.runs] != [run_id] or not store.gc_mark_run(plan.runs[0]):
        return False
    store.gc_purge_run(run_id)
    return True


def _writer(url: str, writer: int, run_ids: list[str], start, results) -> None:  # type: ignore[no-untyped-def]
    """Log batches into each of ``run_ids`` in turn: into a run until it is refused (the
    reaper got it), into the last SURVIVOR_BATCHES times. Reports every call."""
    outcomes: list[tuple[str, str]] = []  # (run, "ok" or the error)
    try:
        store = SqlStore(Database(f"{url}?application_name=w{writer}"))
        start.wait()
        step = 0
        for n, run_id in enumerate(run_ids):
            last = n == len(run_ids) - 1
            for _ in range(SURVIVOR_BATCHES if last else 100):
                batch = [Metric(f"w{writer}", float(step + j), T0 + j, step + j) for j in range(POINTS)]
                step += POINTS
                try:
                    store.log_batch(run_id, metrics=batch)
                    outcomes.append((run_id, "ok"))
                except Exception as exc:  # noqa: BLE001 - any error is reported and checked
                    outcomes.append((run_id, f"{type(exc).__name__}: {exc}"))
                    break
        store.close()
        results.put((writer, outcomes))
    except Exception:  # noqa: BLE001 - reported to the parent
        results.put((writer, traceback.format_exc()))


def _reaper(url: str, runs: dict[int, list[str]], start, results) -> None:  # type: ignore[no-untyped-def]
    """For each writer and each of its runs but the last: wait until the writer has a
    batch in flight (its COPY is running), then delete and garbage-collect the run it is
    logging into, at once."""
    try:
        store = SqlStore(Database(url))
        start.wait()
        done = []
        seen = {w: datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) for w in runs}
        for n in range(RUNS_EACH - 1):
            for writer, run_ids in runs.items():
                deadline = time.monotonic() + 60
                while True:
                    with store.db.transaction(write=False) as tx:
                        found = tx.one(Statement(sa.text(IN_FLIGHT), ("name", "after")), (f"w{writer}", seen[writer]))
                    if found is not None:
                        break
                    assert time.monotonic() < deadline, f"writer {writer} never started a batch"
                    time.sleep(0.002)
                seen[writer] = found[0]
                if _purge(store, run_ids[n]):
                    done.append(run_ids[n])
        store.close()
        results.put(("reaper", done))
    except Exception:  # noqa: BLE001 - reported to the parent
        results.put(("reaper", traceback.format_exc()))


@pytest.mark.slow
def test_gc_under_concurrent_batches_leaves_no_orphan_metrics(pg_server: str) -> None:
    url = create_pg_database(pg_server)
    db = Database(url)
    db.upgrade()
    assert _metric_fks(db) == []  # nothing but the store's own check keeps them apart
    store = SqlStore(db)
    exp = store.create_experiment("gc-race")
    runs = {w: [_new_run(store, exp) for _ in range(RUNS_EACH)] for w in range(WRITERS)}
    reaped = [runs[w][n] for n in range(RUNS_EACH - 1) for w in range(WRITERS)]

    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(WRITERS + 1), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, w, runs[w], start, results)) for w in range(WRITERS)]
    procs.append(ctx.Process(target=_reaper, args=(url, runs, start, results)))
    for proc in procs:
        proc.start()
    reports = dict(results.get(timeout=600) for _ in procs)
    for proc in procs:
        proc.join(60)
    failed = {who: report for who, report in reports.items() if isinstance(report, str)}
    assert failed == {}
    assert reports["reaper"] == reaped

    with db.transaction(write=False) as tx:
        assert tx.one(Statement(sa.text(ORPHANS))) == (0,)
        counts = dict(
            ((run_id, key), n)
            for run_id, key, n in tx.all(Statement(sa.text("SELECT run_uuid, key, count(*) FROM metrics GROUP BY 1, 2")))
        )
        left = {r for (r,) in tx.all(Statement(sa.text("SELECT run_uuid FROM runs")))}
    survivors = {run_ids[-1] for run_ids in runs.values()}
    assert left == survivors
    assert {run_id for run_id, _ in counts} == survivors  # a gc'd run kept no point

    for writer, run_ids in runs.items():
        outcomes = reports[writer]
        # Into each reaped run: some batches went in, then one was refused, with the
        # deleted or the garbage-collected error (never a database error).
        for run_id in run_ids[:-1]:
            mine = [outcome for r, outcome in outcomes if r == run_id]
            assert mine[:-1] == ["ok"] * (len(mine) - 1) and len(mine) >= 2, mine
            assert (mine[-1].startswith("Conflict: Cannot log to run ") and "it is deleted" in mine[-1]) or (
                mine[-1].startswith("NotFound: Run ") and "garbage-collected" in mine[-1]
            ), mine[-1]
        # The survivor holds every acknowledged point, once.
        assert [outcome for r, outcome in outcomes if r == run_ids[-1]] == ["ok"] * SURVIVOR_BATCHES
        assert counts[(run_ids[-1], f"w{writer}")] == SURVIVOR_BATCHES * POINTS
    db.dispose()


@pytest.mark.parametrize("points", [50, 5_000])  # executemany, COPY (PostgreSQL)
def test_batches_to_unknown_or_collected_runs_write_nothing(store: SqlStore, points: int) -> None:
    exp = store.create_experiment("gone")
    batch = [Metric("m", float(i), T0, i) for i in range(points)]
    kept = _new_run(store, exp)
    store.log_batch(kept, metrics=batch)
    collected = _new_run(store, exp)
    store.log_batch(collected, metrics=batch)
    assert _purge(store, collected)

    def rows() -> list[tuple[Any, ...]]:
        with store.db.transaction(write=False) as tx:
            return [
                tx.all(Statement(sa.text(f"SELECT run_uuid, count(*) FROM {table} GROUP BY run_uuid ORDER BY 1")))
                for table in ("metrics", "metric_blocks", "latest_metrics", "params")
            ]

    before = rows()
    assert before[0] == [(kept, points)]
    with pytest.raises(NotFound, match=r"Run '0{32}' does not exist\. Check the run id"):
        store.log_batch("0" * 32, metrics=batch, params=[Param("p", "1")])
    with pytest.raises(NotFound, match=rf"Run '{collected}' was garbage-collected at .* permanently removed"):
        store.log_batch(collected, metrics=batch, params=[Param("p", "1")])
    with pytest.raises(NotFound, match=rf"Run '{collected}' was garbage-collected"):  # log_metric's call
        store.log_batch(collected, metrics=[Metric("m", 1.0, T0, 0)])
    deleted = _new_run(store, exp)
    store.delete_run(deleted)
    with pytest.raises(Conflict, match=rf"Cannot log to run '{deleted}': it is deleted\. Restore it first"):
        store.log_batch(deleted, metrics=batch)
    assert rows() == before


def test_migration_0011_keeps_the_history_and_its_downgrade_restores_the_key(db_uri: str) -> None:
    from alembic import command

    db = Database(db_uri)
    db.upgrade("0010_runs_deleted_time")
    assert _metric_fks(db) == [FK]
    store = SqlStore(db)
    run_id = _new_run(store, store.create_experiment("m"))
    store.log_batch(run_id, metrics=[Metric("loss", 1.0 / (i + 1), T0 + i, i) for i in range(3_000)])

    def history() -> list[tuple[float, int, int]]:
        return [(m.value, m.timestamp, m.step) for m in store.get_metric_history(run_id, "loss")]

    logged = history()
    assert len(logged) == 3_000
    db.upgrade()
    # PostgreSQL drops the key (log_batch checks the run once per batch); SQLite keeps it.
    assert _metric_fks(db) == ([] if db.dialect == "postgresql" else [FK])
    assert _metric_fks(db, "metric_blocks") and _metric_fks(db, "latest_metrics")
    assert history() == logged
    store.log_batch(run_id, metrics=[Metric("loss", 0.0, T0, 3_000)])
    assert len(history()) == 3_001

    with db._writer.connect() as conn, conn.begin():
        command.downgrade(db._alembic_config(conn), "0010_runs_deleted_time")
    assert db.current_revision() == "0010_runs_deleted_time"
    assert _metric_fks(db) == [FK]
    assert history()[:3_000] == logged and len(history()) == 3_001
    orphan = Statement(
        sa.text("INSERT INTO metrics (run_uuid, key, value, is_nan, timestamp, step) VALUES (:r, 'm', 0, false, 0, 0)"),
        ("r",),
    )
    with pytest.raises(db.IntegrityError):  # the key is enforced again
        with db.transaction() as tx:
            tx.execute(orphan, ("0" * 32,))
    db.upgrade()
    assert db.current_revision() == Database.head_revision()
    db.dispose()
