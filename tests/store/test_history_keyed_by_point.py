"""SQLite's metric history keyed by the point (migration 0012): identical points are one,
replays change nothing, ``metric_blocks`` counts exactly the stored points, and the
migration keeps the history (and its order) both ways."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from alembic import command

from tracking_plugin.entities import Metric
from tracking_plugin.store.db import Database
from tracking_plugin.store.sql import SqlStore
from support import insert_old_run

T0 = 1_700_000_000_000


def _run(store: SqlStore) -> str:
    experiment_id = store.create_experiment("keyed", "/tmp/keyed-artifacts")
    return store.create_run(experiment_id, user_id="u", start_time=T0, tags=[], run_name="r").info.run_id


def _tables(db: Database, run_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """The run's history, blocks and latest points as stored (sorted)."""
    queries = {
        "metrics": "SELECT key, step, timestamp, value, is_nan FROM metrics WHERE run_uuid = :r",
        "metric_blocks": "SELECT key, block, n_points, min_step, max_step, min_value, max_value "
                         "FROM metric_blocks WHERE run_uuid = :r",
        "latest_metrics": "SELECT key, step, timestamp, value, is_nan FROM latest_metrics WHERE run_uuid = :r",
    }
    with db.engine.connect() as conn:
        return {name: sorted(tuple(r) for r in conn.execute(sa.text(q), {"r": run_id}).all())
                for name, q in queries.items()}


def _recount(db: Database, run_id: str) -> list[tuple[Any, ...]]:
    """``metric_blocks`` as the stored history gives it."""
    with db.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.text(
            "SELECT key, step >> 10 AS b, count(*), min(step), max(step), min(value), max(value) FROM metrics "
            "WHERE run_uuid = :r AND is_nan = false GROUP BY key, b"
        ), {"r": run_id}).all())


def test_an_identical_point_logged_twice_is_one_point_in_a_keyed_history(store: SqlStore) -> None:
    """SQLite: one point, counted once by the chart's blocks, whatever the flag says and
    whether the repeat comes in the same batch, a later one, or one call per point.
    PostgreSQL keeps a repeat unless ``skip_logged_points`` (its table is unchanged)."""
    run_id = _run(store)
    point = Metric("loss", 0.5, T0, 3)
    store.log_batch(run_id, metrics=[point, point, Metric("loss", math.nan, T0, 4), Metric("loss", math.nan, T0, 4)])
    store.log_batch(run_id, metrics=[point])  # one point: log_metric's single INSERT
    store.log_batch(run_id, metrics=[point, Metric("loss", -0.0, T0, 3)], skip_logged_points=True)
    history = [(m.step, m.timestamp, m.value) for m in store.get_metric_history(run_id, "loss")]
    if store.db.dialect == "sqlite":
        # -0.0 equals 0.0 as a key, and is a new value next to 0.5.
        assert [h for h in history if not math.isnan(h[2])] == [(3, T0, 0.0), (3, T0, 0.5)]
        assert len(history) == 3
    else:
        assert [h for h in history if not math.isnan(h[2])] == [(3, T0, -0.0), (3, T0, 0.5), (3, T0, 0.5), (3, T0, 0.5)]
        assert len(history) == 6
    tables = _tables(store.db, run_id)
    assert tables["metric_blocks"] == _recount(store.db, run_id)
    assert tables["metric_blocks"][0][2] == len([h for h in history if not math.isnan(h[2])])
    assert math.isnan(store.get_run(run_id).data.metrics["loss"])  # step 4 is the latest


def test_a_replayed_bulk_batch_leaves_history_and_blocks_unchanged(store: SqlStore) -> None:
    """The tracking server's case: a 1,000-point batch (the column-by-column path) sent
    again after a lost response, then one that overlaps it by half."""
    run_id = _run(store)
    batch = [Metric(("loss", "acc")[i % 2], float(i % 97), T0 + i, i // 2) for i in range(1_000)]
    store.log_batch(run_id, metrics=batch, skip_logged_points=True)
    before = _tables(store.db, run_id)
    assert len(before["metrics"]) == 1_000 and before["metric_blocks"] == _recount(store.db, run_id)
    for flag in (True, False):
        store.log_batch(run_id, metrics=batch, skip_logged_points=flag)
        if store.db.dialect == "sqlite" or flag:
            assert _tables(store.db, run_id) == before
    overlapping = batch[500:] + [Metric(("loss", "acc")[i % 2], -1.0, T0 + i, i // 2) for i in range(1_000, 1_600)]
    store.log_batch(run_id, metrics=overlapping, skip_logged_points=True)
    after = _tables(store.db, run_id)
    stored = 1_600 if store.db.dialect == "sqlite" else 2_600  # PostgreSQL kept the unflagged replay
    assert len(after["metrics"]) == stored
    assert after["metric_blocks"] == _recount(store.db, run_id)
    assert [(key, step) for key, step, *_ in after["latest_metrics"]] == [("acc", 799), ("loss", 799)]


def _insert_history(db: Database, run_id: str) -> None:
    with db.engine.begin() as conn:
        insert_old_run(conn, run_id)
        # Logged in this order; a point logged twice; two values at one step and time; NaN.
        conn.execute(sa.text(
            "INSERT INTO metrics (run_uuid, key, value, is_nan, timestamp, step) VALUES "
            "(:r, 'loss', 3.0, false, 7, 2), (:r, 'loss', 1.0, false, 1, 0), (:r, 'loss', 2.0, false, 5, 1), "
            "(:r, 'loss', 1.0, false, 1, 0), (:r, 'loss', 9.0, false, 5, 1), (:r, 'loss', 0, true, 5, 1), "
            "(:r, 'loss', 4.0, false, 9, 1500), (:r, 'acc', 0.5, false, 1, 0)"
        ), {"r": run_id})


def test_0012_keeps_the_history_and_its_order_both_ways(db_uri: str) -> None:
    db = Database(db_uri)
    db.upgrade("0007_gc")
    run_id = "ef" * 16
    _insert_history(db, run_id)
    db.upgrade("0011_pg_metrics_without_run_fk")  # 0008 summarises the history, the repeat included
    db.upgrade()
    sqlite = db.dialect == "sqlite"
    store = SqlStore(db)
    # By (step, timestamp, value, is_nan): NaN is stored as value 0 with its flag.
    ordered = [(0, 1, 1.0), (0, 1, 1.0), (1, 5, math.nan), (1, 5, 2.0), (1, 5, 9.0), (2, 7, 3.0), (1500, 9, 4.0)]
    if sqlite:
        del ordered[1]  # the point logged twice is one point
    history = store.get_metric_history(run_id, "loss")
    got = [(m.step, m.timestamp, m.value) for m in history]
    assert [g for g in got if not math.isnan(g[2])] == [o for o in ordered if not math.isnan(o[2])]
    assert [i for i, g in enumerate(got) if math.isnan(g[2])] == [i for i, o in enumerate(ordered) if math.isnan(o[2])]
    assert _tables(db, run_id)["metric_blocks"] == _recount(db, run_id)  # recounted without the repeat
    if sqlite:
        with db.engine.connect() as conn:
            ddl = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'metrics'")).scalar_one()
            plan = " ".join(str(r[-1]) for r in conn.execute(sa.text(
                "EXPLAIN QUERY PLAN SELECT step, timestamp, value, is_nan FROM metrics "
                "WHERE run_uuid = 'x' AND key = 'y' ORDER BY step, timestamp, value, is_nan"
            )).all())
        assert "WITHOUT ROWID" in ddl and "ON DELETE CASCADE" in ddl and " id " not in ddl
        assert "PRIMARY KEY" in plan and "TEMP B-TREE" not in plan, plan  # read in key order, no sort
    # Logging goes on: a repeat of a migrated point changes nothing, a new one counts.
    store.log_batch(run_id, metrics=[Metric("loss", 2.0, 5, 1), Metric("loss", 5.0, 10, 1501)], skip_logged_points=True)
    assert len(store.get_metric_history(run_id, "loss")) == len(ordered) + 1
    assert _tables(db, run_id)["metric_blocks"] == _recount(db, run_id)

    before = _tables(db, run_id)
    with db._writer.connect() as conn, conn.begin():  # downgrade: every point kept
        command.downgrade(db._alembic_config(conn), "0011_pg_metrics_without_run_fk")
    with db.engine.connect() as conn:
        back = sorted(tuple(r) for r in conn.execute(sa.text(
            "SELECT key, step, timestamp, value, is_nan FROM metrics WHERE run_uuid = :r"), {"r": run_id}).all())
        columns = {c["name"] for c in sa.inspect(conn).get_columns("metrics")}
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("metrics")}
    assert back == before["metrics"] and "id" in columns and "ix_metrics_history" in indexes
    db.upgrade()
    assert _tables(db, run_id) == before
    # Deleting the run's row still takes its history with it on SQLite (the key's cascade).
    if sqlite:
        with db.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM runs WHERE run_uuid = :r"), {"r": run_id})
        assert _tables(db, run_id) == {"metrics": [], "metric_blocks": [], "latest_metrics": []}
    db.dispose()
