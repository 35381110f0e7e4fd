"""PostgreSQL helpers shared by both sides of ``bench/pg.py`` (stdlib + psycopg 3 only, so
they import in MLflow's venv too): bulk loads with ``COPY`` into a side's own schema."""

from __future__ import annotations

import time
from typing import Any, Iterable


def dsn(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://...``) as a libpq connection string."""
    return "postgresql://" + url.split("://", 1)[1]


def connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(dsn(url))


def columns(conn: Any, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


def copy_rows(conn: Any, table: str, cols: list[str], rows: Iterable[tuple[Any, ...]]) -> int:
    n = 0
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                n += 1
    return n


def analyze(conn: Any) -> None:
    """Commit, then ANALYZE (what autovacuum would do soon after a load this size) and
    VACUUM so index-only scans see an all-visible map on both sides alike."""
    conn.commit()
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE")
    conn.autocommit = False


def load_search_runs(url: str, experiment_id: int, rows: list[tuple[str, float, str]]) -> float:
    """``rows`` of (run_id, acc, model) as finished runs with param ``model``, metric ``acc``
    (history and latest) into the side's own tables; returns the load time in seconds."""
    started = time.perf_counter()
    now = int(time.time() * 1000)
    with connect(url) as conn:
        run_cols = set(columns(conn, "runs"))
        base = {
            "name": "r", "source_type": "LOCAL", "source_name": "", "entry_point_name": "", "user_id": "bench",
            "status": "FINISHED", "start_time": now, "end_time": now, "source_version": "",
            "lifecycle_stage": "active", "artifact_uri": "/tmp/a", "experiment_id": experiment_id,
        }
        cols = [c for c in ["run_uuid", *base] if c in run_cols]
        copy_rows(conn, "runs", cols, (
            tuple({**base, "run_uuid": rid, "start_time": now + i, "end_time": now + i}[c] for c in cols)
            for i, (rid, _, _) in enumerate(rows)
        ))
        copy_rows(conn, "params", ["run_uuid", "key", "value"], ((rid, "model", m) for rid, _, m in rows))
        metric_cols = ["run_uuid", "key", "value", "is_nan", "timestamp", "step"]
        for table in ("latest_metrics", "metrics"):
            copy_rows(conn, table, metric_cols, ((rid, "acc", a, False, now, 0) for rid, a, _ in rows))
        analyze(conn)
    return time.perf_counter() - started


def load_history(url: str, run_id: str, key: str, points: int) -> float:
    """``points`` points of ``key`` (steps 0..points-1) into a run's history."""
    started = time.perf_counter()
    now = int(time.time() * 1000)
    with connect(url) as conn:
        copy_rows(conn, "metrics", ["run_uuid", "key", "value", "is_nan", "timestamp", "step"],
                  ((run_id, key, float(i) / points, False, now + i, i) for i in range(points)))
        copy_rows(conn, "latest_metrics", ["run_uuid", "key", "value", "is_nan", "timestamp", "step"],
                  [(run_id, key, float(points - 1) / points, False, now + points - 1, points - 1)])
        analyze(conn)
    return time.perf_counter() - started


def count_points(url: str, run_ids: list[str]) -> dict[str, int]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT run_uuid, count(*) FROM metrics WHERE run_uuid = ANY(%s) GROUP BY run_uuid", (run_ids,)
        ).fetchall()
    found = {r[0]: int(r[1]) for r in rows}
    return {rid: found.get(rid, 0) for rid in run_ids}
