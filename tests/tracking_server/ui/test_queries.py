"""The UI's own queries on both databases: run counts, downsampling on the step and time
axes (the SQL differs: per-bucket range aggregates vs one GROUP BY), sparklines."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import pytest

from serving_tasks.tracking_server.ui import queries
from tracking_plugin.entities import Metric, Param
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.store.sql import SqlStore


@pytest.fixture
def store(db_uri: str) -> Iterator[SqlStore]:
    s = SqlStore.from_uri(db_uri)
    s.db.upgrade()
    yield s
    s.close()


def test_chart_buckets_are_served_by_the_covering_index_alone(store: SqlStore, tmp_path: Path) -> None:
    """Each bucket of a dense chart is a range scan that reads no other table row
    (SQLite: of the history's primary key, the table itself being WITHOUT ROWID keyed by
    the point, migration 0012; PostgreSQL: Index Only Scan of ix_metrics_history)."""
    exp = store.create_experiment("plan", str(tmp_path / "artifacts"))
    run = store.create_run(exp, user_id="u", start_time=1_000, run_name="r").info.run_id
    for lo in range(0, 5_000, 1_000):
        store.log_batch(run, metrics=[Metric("loss", s / 10, 1_000 + s, s) for s in range(lo, lo + 1_000)])
    stmt = queries.bucket_statement(run, "loss")
    if store.db.engine.dialect.name == "postgresql":
        with store.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE metrics")  # the visibility map an index-only scan needs
    with store.db.engine.connect() as conn:
        compiled = stmt.compile(conn, compile_kwargs={"render_postcompile": True})
        params = {**compiled.params, "a": 1_000, "b": 2_000}
        if conn.dialect.name == "sqlite":
            plan = " | ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled),
                                                                            tuple(params[k] for k in compiled.positiontup)))
            assert "SEARCH metrics USING PRIMARY KEY (run_uuid=? AND key=? AND step>? AND step<?)" in plan, plan
        else:
            # A table this small may be scanned whole; forbid that to see what the index alone can do.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + str(compiled), params))
            assert "Index Only Scan using ix_metrics_history" in plan, plan
        count, first, last, low, high = conn.execute(stmt, {"a": 1_000, "b": 2_000}).one()
    assert (count, first, last, low, high) == (1_000, 1_000, 1_999, 100.0, 199.9)


def test_downsampling_keeps_spikes_on_both_axes_and_counts_every_point(store: SqlStore, tmp_path: Path) -> None:
    exp = store.create_experiment("q", str(tmp_path / "artifacts"))
    run = store.create_run(exp, user_id="u", start_time=1_000, run_name="r").info.run_id
    n = 9_000
    points = [Metric("loss", 1.0 + math.sin(s / 50), 1_000 + 7 * s, s) for s in range(n)]
    points[4321] = Metric("loss", 99.0, 1_000 + 7 * 4321, 4321)
    points[77] = Metric("loss", -42.0, 1_000 + 7 * 77, 77)
    points.append(Metric("loss", float("nan"), 1_000 + 7 * n, n))  # left out
    for i in range(0, len(points), 1_000):
        store.log_batch(run, metrics=points[i:i + 1_000], params=[Param("p", "1")] if i == 0 else [])
    for axis in ("step", "time"):
        h = queries.downsampled_history(store, run, "loss", axis=axis, buckets=100)  # type: ignore[arg-type]
        assert h.sampled and h.total == n and len(h.x) <= 200, axis
        assert max(h.y) == 99.0 and min(h.y) == -42.0, axis  # type: ignore[type-var]
        assert h.x == sorted(h.x), axis
    exact = queries.downsampled_history(store, run, "loss", lo=4300, hi=4350)
    assert not exact.sampled and exact.x == [float(s) for s in range(4300, 4351)] and 99.0 in exact.y
    values, length = queries.sparkline_values(store, run, "loss")
    assert length == n + 1 and len(values) == 48 and values[0] == pytest.approx(1.0)
    [overview] = [e for e in queries.experiments_overview(store, "q") if e.experiment_id == exp]
    assert overview.run_count == 1 and overview.last_activity == 1_000
    keys = queries.run_keys(store, [run])
    assert keys["metrics"] == ["loss"] and keys["params"] == ["p"]
    with pytest.raises(InvalidArgument, match="buckets"):
        queries.downsampled_history(store, run, "loss", buckets=queries.MAX_BUCKETS + 1)


def test_long_ranges_are_reduced_from_block_summaries_kept_by_log_batch(store: SqlStore, tmp_path: Path) -> None:
    """At >= 1,024 steps per bucket the chart reads metric_blocks: the same counts and
    extremes as the points themselves, batches folded in any order, end blocks exact."""
    exp = store.create_experiment("blocks", str(tmp_path / "artifacts"))
    run = store.create_run(exp, user_id="u", start_time=0, run_name="r").info.run_id
    n = 20_000
    values = {s: math.cos(s / 300) for s in range(n)}
    values[2_500] = 50.0  # in block 2 (steps 2,048-3,071), left of a zoom starting at 3,000
    values[3_333] = -60.0
    values[17_000] = 70.0
    steps = list(range(n))
    steps = steps[10_000:] + steps[:10_000]  # the second half logged first
    for i in range(0, n, 1_000):
        store.log_batch(run, metrics=[Metric("loss", values[s], s, s) for s in steps[i:i + 1_000]])
    # a later batch raises an already summarised block's maximum, and a NaN is left out
    store.log_batch(run, metrics=[Metric("loss", 80.0, 5, 12_345), Metric("loss", float("nan"), 6, 12_346)])
    with store.db.engine.connect() as conn:
        blocks = conn.exec_driver_sql("SELECT count(*), sum(n_points) FROM metric_blocks").one()
    assert tuple(blocks) == (20, n + 1)
    whole = queries.downsampled_history(store, run, "loss", buckets=10)
    assert whole.sampled and whole.total == n + 1 and len(whole.x) <= 20
    assert max(whole.y) == 80.0 and min(whole.y) == -60.0  # type: ignore[type-var]
    assert whole.x == sorted(whole.x) and whole.x[0] == 0 and whole.x[-1] == n - 1
    zoom = queries.downsampled_history(store, run, "loss", lo=3_000, hi=15_000, buckets=5)
    assert zoom.total == 12_001 + 1  # steps 3,000-15,000 and the second point at 12,345
    assert 50.0 not in zoom.y and max(zoom.y) == 80.0 and min(zoom.y) == -60.0  # type: ignore[type-var]
    assert zoom.x[0] == 3_000 and zoom.x[-1] == 15_000
    # the same range reduced point by point (narrow buckets) agrees on count and extremes
    exact = queries.downsampled_history(store, run, "loss", lo=3_000, hi=15_000, buckets=2_000)
    assert exact.total == zoom.total and max(exact.y) == max(zoom.y) and min(exact.y) == min(zoom.y)  # type: ignore[type-var]


def test_child_counts_and_drift_reports_on_both_databases(store: SqlStore, tmp_path: Path) -> None:
    from tracking_plugin.entities import RunTag

    exp = store.create_experiment("kids", str(tmp_path / "artifacts"))
    parent = store.create_run(exp, user_id="u", start_time=1, run_name="p").info.run_id
    lone = store.create_run(exp, user_id="u", start_time=2, run_name="lone").info.run_id
    kids = [store.create_run(exp, user_id="u", start_time=3 + i, run_name=f"k{i}", parent_run_id=parent).info.run_id
            for i in range(3)]
    store.delete_run(kids[0])  # deleted children are not counted
    assert queries.child_counts(store, [parent, lone]) == {parent: 2}
    assert queries.child_counts(store, []) == {}
    for day, (score, drifted) in enumerate([(0.1, False), (0.5, True)]):
        run = store.create_run(exp, user_id="m", start_time=100 + day, run_name=f"d{day}").info.run_id
        store.log_batch(run, metrics=[Metric("drift/age", score, 1, 0), Metric("drift/plan", float("nan"), 1, 0)],
                        params=[Param("psi_threshold", "0.2"), Param("ks_threshold", "inf")],
                        tags=[RunTag("drift.method", "psi"), RunTag("drift.drifted", str(drifted).lower()),
                              RunTag("drift.features", "age" if drifted else ""), RunTag("model.name", "m"),
                              RunTag("model.version", "2")])
    other = store.create_run(exp, user_id="m", start_time=200, run_name="other-version").info.run_id
    store.log_batch(other, tags=[RunTag("drift.method", "psi"), RunTag("model.name", "m"), RunTag("model.version", "3")])
    reports = queries.drift_reports(store, "m", 2)
    assert [r.run_name for r in reports] == ["d0", "d1"]  # oldest first
    assert [r.drifted for r in reports] == [False, True] and reports[1].drifted_features == ["age"]
    assert reports[1].scores["age"] == 0.5 and math.isnan(reports[1].scores["plan"]) and reports[1].score == 0.5
    assert reports[0].thresholds == {"psi": 0.2}  # an infinite threshold is left out (JSON has no Infinity)
    assert [r.run_name for r in queries.drift_reports(store, "m", 3)] == ["other-version"]
    assert queries.drift_reports(store, "m", 4) == [] and queries.drift_reports(store, "m", 2, limit=1)[0].run_name == "d1"
