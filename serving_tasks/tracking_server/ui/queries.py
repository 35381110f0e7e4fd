"""Read-only queries the web UI needs beyond the store's public API.

They run on the store's own database (``store.db``, the process-wide engine), in one
read transaction each, with SQLAlchemy Core over the store's tables, so they work on
SQLite and PostgreSQL alike:

- :func:`experiments_overview`: experiments with run counts and last activity;
- :func:`downsampled_history`: one metric's history between two x values, reduced on the
  database to at most ``2 * buckets`` points by min/max buckets, which keeps every spike
  (the highest and lowest value of each bucket survive); a range holding no more points
  than the cap comes back exactly; ``total`` counts the range's points (NaN left out).
  On the step axis a range of at least 512 steps per bucket is reduced from
  ``metric_blocks`` (per-1,024-step summaries ``log_batch`` keeps), a narrower one by one
  range scan of the covering ``ix_metrics_history`` (SQLite: the history's key) per bucket;
- :func:`run_keys`: the metric/param/tag keys of some runs (the column chooser);
- :func:`child_counts`: how many active child runs each of some runs has (the runs
  table's expand controls);
- :func:`drift_reports`: the drift monitor's runs about one model version (the version
  page's drift charts).

Every result is bounded: a limit on rows, a cap on points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

import sqlalchemy as sa

from tracking_plugin.errors import InvalidArgument
from tracking_plugin.store.schema import (
    METRIC_BLOCK_SHIFT,
    ExperimentRow,
    LatestMetricRow,
    MetricBlockRow,
    MetricRow,
    ParamRow,
    RunRow,
    RunTagRow,
)
from tracking_plugin.store.sql import SqlStore
from tracking_plugin.tags import TAG_PARENT_RUN_ID

from serving_tasks.tracking_server.auth.permissions import EVERYTHING, Readable

__all__ = [
    "ExperimentOverview",
    "HistoryPoints",
    "MAX_BUCKETS",
    "bucket_statement",
    "downsampled_history",
    "experiments_overview",
    "history_lengths",
    "metric_sparkline",
    "sparkline_values",
    "run_keys",
    "child_counts",
    "drift_reports",
    "DriftReportRow",
]

MAX_BUCKETS = 2_000  # at most 4,000 points per series leave the server
_EXPERIMENTS = ExperimentRow.__table__
_RUNS = RunRow.__table__
_METRICS = MetricRow.__table__
_KEY_TABLES = {"metrics": LatestMetricRow.__table__, "params": ParamRow.__table__, "tags": RunTagRow.__table__}


@dataclass(frozen=True, slots=True)
class ExperimentOverview:
    experiment_id: str
    name: str
    run_count: int
    last_activity: int | None  # ms since the epoch: latest run start/end, else the experiment's update


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def experiments_overview(
    store: SqlStore, search: str = "", *, limit: int = 500, readable: Readable = EVERYTHING
) -> list[ExperimentOverview]:
    """Active experiments whose name contains ``search`` (case-insensitive) and that
    ``readable`` allows (in the query, so the limit counts only those), most recently
    active first, with their number of active runs."""
    e, r = _EXPERIMENTS.c, _RUNS.c
    runs = (
        sa.select(
            r.experiment_id,
            sa.func.count().label("n"),
            sa.func.max(sa.func.coalesce(r.end_time, r.start_time)).label("last"),
        )
        .where(r.lifecycle_stage == "active")
        .group_by(r.experiment_id)
        .subquery()
    )
    last = sa.func.coalesce(runs.c.last, e.last_update_time)
    stmt = (
        sa.select(e.experiment_id, e.name, sa.func.coalesce(runs.c.n, 0), last)
        .select_from(_EXPERIMENTS.outerjoin(runs, runs.c.experiment_id == e.experiment_id))
        .where(e.lifecycle_stage == "active")
        .order_by(last.desc(), e.experiment_id)
        .limit(limit)
    )
    if readable.default_reads and readable.denied:
        stmt = stmt.where(e.experiment_id.not_in([int(i) for i in readable.denied]))
    elif not readable.default_reads:
        stmt = stmt.where(e.experiment_id.in_([int(i) for i in readable.allowed]))
    if search:
        stmt = stmt.where(sa.func.lower(e.name).like(f"%{_escape_like(search.lower())}%", escape="\\"))
    with store.db.session(write=False) as session:
        rows = session.execute(stmt).all()
    return [ExperimentOverview(str(i), name, int(n), None if t is None else int(t)) for i, name, n, t in rows]


def history_lengths(store: SqlStore, run_ids: Sequence[str]) -> dict[str, int]:
    """Metric key -> the most non-NaN points any of ``run_ids`` logged for it (charts open
    on the longest history), summed from ``metric_blocks``: about one row per 1,024 points."""
    b = _BLOCKS.c
    per_run = (
        sa.select(b.key, sa.func.sum(b.n_points).label("n")).where(b.run_uuid.in_(list(run_ids)))
        .group_by(b.run_uuid, b.key).subquery()
    )
    with store.db.session(write=False) as session:
        rows = session.execute(sa.select(per_run.c.key, sa.func.max(per_run.c.n)).group_by(per_run.c.key)).all()
    return {key: int(n) for key, n in rows}


def run_keys(store: SqlStore, run_ids: Iterable[str], *, limit: int = 500) -> dict[str, list[str]]:
    """Sorted distinct metric, param and tag keys of ``run_ids`` (at most ``limit`` each)."""
    ids = list(run_ids)
    out: dict[str, list[str]] = {kind: [] for kind in _KEY_TABLES}
    if not ids:
        return out
    with store.db.session(write=False) as session:
        for kind, table in _KEY_TABLES.items():
            stmt = sa.select(table.c.key).where(table.c.run_uuid.in_(ids)).distinct().order_by(table.c.key).limit(limit)
            out[kind] = list(session.execute(stmt).scalars())
    return out


def child_counts(store: SqlStore, run_ids: Sequence[str]) -> dict[str, int]:
    """Run id -> number of its active child runs (runs tagged ``mlflow.parentRunId`` with
    it), for the ids that have any. One indexed query for a page of runs."""
    ids = list(run_ids)
    if not ids:
        return {}
    t, r = _KEY_TABLES["tags"].c, _RUNS.c
    stmt = (
        sa.select(t.value, sa.func.count())
        .select_from(_KEY_TABLES["tags"].join(_RUNS, r.run_uuid == t.run_uuid))
        .where(t.key == TAG_PARENT_RUN_ID, t.value.in_(ids), r.lifecycle_stage == "active")
        .group_by(t.value)
    )
    with store.db.session(write=False) as session:
        return {parent: int(n) for parent, n in session.execute(stmt).all()}


@dataclass(frozen=True, slots=True)
class DriftReportRow:
    """One drift-monitor run about a model version: its per-feature scores (metrics
    ``drift/<feature>``), verdict and drifted features (tags ``drift.drifted`` and
    ``drift.features``), method and thresholds (tag ``drift.method``, params)."""

    run_id: str
    run_name: str
    start_time: int
    scores: dict[str, float]
    drifted: bool
    drifted_features: list[str]
    method: str
    thresholds: dict[str, float]

    @property
    def score(self) -> float | None:
        finite = [v for v in self.scores.values() if math.isfinite(v)]
        return max(finite) if finite else None


DRIFT_PREFIX = "drift/"


def drift_reports(store: SqlStore, model_name: str, version: int | str, *, limit: int = 500) -> list[DriftReportRow]:
    """The latest ``limit`` active runs tagged ``model.name`` = ``model_name``,
    ``model.version`` = ``version`` and carrying a ``drift.method`` tag (what
    ``flows.drift_monitor`` records for each batch it scores), oldest first."""
    t, r = _KEY_TABLES["tags"].c, _RUNS.c
    def tagged(key: str, value: str | None = None) -> sa.Select:
        cond = [t.key == key] if value is None else [t.key == key, t.value == value]
        return sa.select(t.run_uuid).where(*cond)

    stmt = (
        sa.select(r.run_uuid, r.name, r.start_time)
        .where(r.lifecycle_stage == "active", r.run_uuid.in_(tagged("model.name", model_name)),
               r.run_uuid.in_(tagged("model.version", str(version))), r.run_uuid.in_(tagged("drift.method")))
        .order_by(r.start_time.desc(), r.run_uuid)
        .limit(limit)
    )
    lm, p = _KEY_TABLES["metrics"].c, _KEY_TABLES["params"].c
    with store.db.session(write=False) as session:
        runs = session.execute(stmt).all()
        ids = [row.run_uuid for row in runs]
        scores: dict[str, dict[str, float]] = {i: {} for i in ids}
        run_tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        params: dict[str, dict[str, float]] = {i: {} for i in ids}
        for start in range(0, len(ids), 200):  # bounded IN lists
            chunk = ids[start:start + 200]
            for rid, key, value, nan in session.execute(
                sa.select(lm.run_uuid, lm.key, lm.value, lm.is_nan)
                .where(lm.run_uuid.in_(chunk), lm.key.like(DRIFT_PREFIX + "%"))
            ).all():
                scores[rid][key[len(DRIFT_PREFIX):]] = math.nan if nan else float(value)
            for rid, key, value in session.execute(
                sa.select(t.run_uuid, t.key, t.value).where(t.run_uuid.in_(chunk), t.key.in_(
                    ["drift.drifted", "drift.features", "drift.method"]))
            ).all():
                run_tags[rid][key] = value
            for rid, key, value in session.execute(
                sa.select(p.run_uuid, p.key, p.value).where(p.run_uuid.in_(chunk), p.key.in_(
                    ["psi_threshold", "ks_threshold"]))
            ).all():
                try:
                    number = float(value)
                except ValueError:
                    continue
                if math.isfinite(number):
                    params[rid][key.removesuffix("_threshold")] = number
    return [
        DriftReportRow(
            rid, name or rid, int(start_time), scores[rid], run_tags[rid].get("drift.drifted") == "true",
            [f for f in run_tags[rid].get("drift.features", "").split(",") if f], run_tags[rid].get("drift.method", ""),
            params[rid],
        )
        for rid, name, start_time in reversed(runs)
    ]


@dataclass(frozen=True, slots=True)
class HistoryPoints:
    """Points of one series: ``x`` (step or ms timestamp) and ``y``; ``total`` points lie in
    the requested range, of which ``len(x)`` are returned (``sampled`` if reduced)."""

    run_id: str
    key: str
    x: list[float]
    y: list[float | None]
    total: int
    sampled: bool
    x_min: float | None
    x_max: float | None


BLOCK_STEPS = 1 << METRIC_BLOCK_SHIFT
_BLOCKS = MetricBlockRow.__table__


def _rows_from_blocks(conn: sa.Connection, exact: sa.Select, run_id: str, key: str, x_min: int, x_max: int,
                      buckets: int) -> list[tuple[int, int, int, float, float]]:
    """Min/max buckets of whole ``metric_blocks`` rows (``log_batch`` keeps them): about one
    row per 1,024 points is read, not every point. The two end blocks, which may hold
    points outside ``[x_min, x_max]``, are computed exactly from the index."""
    b = _BLOCKS.c
    first, last = x_min >> METRIC_BLOCK_SHIFT, x_max >> METRIC_BLOCK_SHIFT
    per_bucket = -(-(last - first + 1) // buckets)
    inner = conn.execute(
        sa.select(b.block, b.n_points, b.min_step, b.max_step, b.min_value, b.max_value)
        .where(b.run_uuid == run_id, b.key == key, b.block > first, b.block < last).order_by(b.block)
    ).all()
    ends = {}
    for block in {first, last}:
        lo, hi = max(x_min, block << METRIC_BLOCK_SHIFT), min(x_max + 1, (block + 1) << METRIC_BLOCK_SHIFT)
        ends[block] = conn.execute(exact, {"a": lo, "b": hi}).one()
    merged: dict[int, list[Any]] = {}

    def fold(block: int, n: int, s0: Any, s1: Any, v0: Any, v1: Any) -> None:
        if not n:
            return
        at = (block - first) // per_bucket
        m = merged.get(at)
        if m is None:
            merged[at] = [n, s0, s1, v0, v1]
        else:
            m[0] += n
            m[1], m[2], m[3], m[4] = min(m[1], s0), max(m[2], s1), min(m[3], v0), max(m[4], v1)

    fold(first, *ends[first])
    for row in inner:
        fold(*row)
    if last != first:
        fold(last, *ends[last])
    return [tuple(merged[at]) for at in sorted(merged)]  # type: ignore[misc]


# A history's order, as the store reads it: (step, timestamp, value, is_nan), the history's
# key on SQLite (migration 0012) and the order of ``ix_metrics_history``.
_POINT_ORDER = (_METRICS.c.step, _METRICS.c.timestamp, _METRICS.c.value, _METRICS.c.is_nan)


def bucket_statement(run_id: str, key: str) -> sa.Select:
    """count, first/last step and min/max value of ``key`` of ``run_id`` for steps in
    ``[:a, :b)``: one range scan of ``ix_metrics_history`` (SQLite: the table's key), which
    holds every column it reads (no table-row lookup per point; see migrations 0008, 0012)."""
    m = _METRICS.c
    return sa.select(
        sa.func.count(), sa.func.min(m.step), sa.func.max(m.step), sa.func.min(m.value), sa.func.max(m.value)
    ).where(
        # the bucket's bounds only: with the range's bounds too, SQLite may seek the
        # index from the range's start for every bucket
        m.run_uuid == run_id, m.key == key, m.is_nan == sa.false(), m.step >= sa.bindparam("a"), m.step < sa.bindparam("b")
    )


def downsampled_history(
    store: SqlStore,
    run_id: str,
    key: str,
    *,
    axis: Literal["step", "time"] = "step",
    lo: float | None = None,
    hi: float | None = None,
    buckets: int = 1000,
) -> HistoryPoints:
    """``key`` of ``run_id`` for ``lo <= x <= hi`` (``x`` = step or timestamp), at most
    ``2 * buckets`` points. NaN points are left out (they cannot be drawn)."""
    if axis not in ("step", "time"):
        raise InvalidArgument(f"Invalid x axis {axis!r}: use 'step' or 'time'.")
    if not 1 <= buckets <= MAX_BUCKETS:
        raise InvalidArgument(f"Invalid number of buckets {buckets}: use 1 to {MAX_BUCKETS}.")
    m = _METRICS.c
    x = m.step if axis == "step" else m.timestamp
    series = [m.run_uuid == run_id, m.key == key]
    if lo is not None and math.isfinite(lo):
        series.append(x >= math.floor(lo))
    if hi is not None and math.isfinite(hi):
        series.append(x <= math.ceil(hi))
    where = [*series, m.is_nan == sa.false()]
    cap = 2 * buckets
    with store.db.session(write=False) as session:
        # At most cap + 1 index entries read to learn whether the range fits as it is.
        capped = session.execute(
            sa.select(sa.func.count()).select_from(sa.select(m.step).where(*series).limit(cap + 1).subquery())
        ).scalar_one()
        if capped <= cap:
            rows = session.execute(sa.select(x, m.value).where(*where).order_by(x, *_POINT_ORDER)).all()
            xs = [float(a) for a, _ in rows]
            return HistoryPoints(run_id, key, xs, [float(v) for _, v in rows], len(rows), False,
                                 xs[0] if xs else None, xs[-1] if xs else None)
        if axis == "step":
            # Ends of the range from the (run, key, step) index, then one aggregate per
            # bucket over an index range: no sort of the whole series (SQLite would spill
            # a GROUP BY over a million rows to a temporary b-tree).
            x_min = session.execute(sa.select(sa.func.min(x)).where(*series)).scalar_one()
            x_max = session.execute(sa.select(sa.func.max(x)).where(*series)).scalar_one()
            conn = session.connection()  # Core: one cached compiled statement, little overhead per bucket
            stmt = bucket_statement(run_id, key)
            # From blocks once a bucket would span half a block or more (a million steps in
            # 1,000 buckets: 977 buckets of one block each); narrower, point by point.
            if (int(x_max) - int(x_min) + 1) >= buckets * BLOCK_STEPS // 2:
                rows = _rows_from_blocks(conn, stmt, run_id, key, int(x_min), int(x_max), buckets)
            else:
                edges = [int(x_min) + (int(x_max) - int(x_min) + 1) * b // buckets for b in range(buckets + 1)]
                rows = [conn.execute(stmt, {"a": a, "b": b}).one() for a, b in zip(edges, edges[1:]) if b > a]
        else:
            x_min, x_max = session.execute(sa.select(sa.func.min(x), sa.func.max(x)).where(*where)).one()
            # Integer floor division renders as plain `/` on both SQLite and PostgreSQL.
            bucket = (((x - int(x_min)) * buckets) // (int(x_max) - int(x_min) + 1)).label("b")
            rows = session.execute(
                sa.select(sa.func.count(), sa.func.min(x), sa.func.max(x), sa.func.min(m.value), sa.func.max(m.value))
                .where(*where).group_by(bucket).order_by(bucket)
            ).all()
    # Each bucket gives its lowest and highest value, drawn at the bucket's first and last
    # x, so the envelope (every spike) stays visible.
    xs: list[float] = []
    ys: list[float | None] = []
    total = 0
    for count, first_x, last_x, low, high in rows:
        if not count:
            continue
        total += count
        xs.append(float(first_x))
        ys.append(float(low))
        if last_x != first_x or high != low:
            xs.append(float(last_x) if last_x != first_x else float(first_x) + 1e-9)
            ys.append(float(high))
    return HistoryPoints(run_id, key, xs, ys, total, True, x_min, x_max)


def sparkline_values(store: SqlStore, run_id: str, key: str, *, points: int = 48) -> tuple[list[float | None], int]:
    """About ``points`` values of ``key`` at evenly spaced steps (one index lookup each, so a
    million-point history costs as little as a short one) and the history's length (capped
    at 10,000: the run page shows "10,000+"). A thumbnail: the chart is the exact view."""
    m = _METRICS.c
    series = [m.run_uuid == run_id, m.key == key]
    with store.db.session(write=False) as session:
        conn = session.connection()
        length = conn.execute(
            sa.select(sa.func.count()).select_from(sa.select(m.step).where(*series).limit(10_001).subquery())
        ).scalar_one()
        if length <= points:
            rows = conn.execute(sa.select(m.value, m.is_nan).where(*series).order_by(*_POINT_ORDER)).all()
            return [None if nan else float(v) for v, nan in rows], int(length)
        first = conn.execute(sa.select(sa.func.min(m.step)).where(*series)).scalar_one()
        last = conn.execute(sa.select(sa.func.max(m.step)).where(*series)).scalar_one()
        at = (
            sa.select(m.value, m.is_nan).where(*series, m.step >= sa.bindparam("s"))
            .order_by(*_POINT_ORDER).limit(1)
        )
        values: list[float | None] = []
        for i in range(points):
            row = conn.execute(at, {"s": first + (last - first) * i // (points - 1)}).first()
            values.append(None if row is None or row.is_nan else float(row.value))
    return values, int(length)


def metric_sparkline(values: Sequence[float | None], *, width: int = 120, height: int = 24) -> str:
    """SVG polyline points for ``values`` scaled to ``width`` x ``height`` ("" if < 2)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return ""
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    n = len(values) - 1
    points = []
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            continue
        points.append(f"{i * width / n:.1f},{height - 1 - (v - low) * (height - 2) / span:.1f}")
    return " ".join(points)
