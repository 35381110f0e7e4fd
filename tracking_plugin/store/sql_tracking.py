# Over 600 lines on purpose: every tracking operation is one transaction written here beside
# the private helpers it shares with the others; its SQL (statements, planner) is in _sql_search.py.
"""``SqlTrackingStore``: experiments, runs, params, tags and metrics over SQLAlchemy Core.

Every public method opens exactly one transaction through ``self.db`` and shares work
with the others only through private helpers that take it (on PostgreSQL, a call whose
one write is one statement, such as ``create_run`` or ``log_param``, runs in autocommit:
see ``Database.transaction``). All SQL is SQLAlchemy Core
built from the tables of :mod:`~tracking_plugin.store.schema`, one way for both dialects.
The hot paths (``log_batch`` and so every ``log_*`` call, run create/update, ``get_run``
and all of search) run on the driver's connection through
:class:`~tracking_plugin.store.db.Transaction`, which costs a tenth of a SQLAlchemy
session per call: their statements are :class:`~tracking_plugin.store.statements.Statement`,
compiled once per dialect (and per shape: per set of updated columns, per ``IN`` list
length) into the driver's positional placeholders and run with plain tuples; search
statements are compiled once per distinct input. The rest runs Core statements in a
session. Writes are ``INSERT``/upserts of plain tuples or dicts (one ``executemany`` per
table), never ORM objects.

Rules (MLflow's unless said otherwise):

- ``log_batch`` validates every item before it touches the database and writes in one
  transaction: one bad metric, or a param whose value would change, writes nothing.
- A param, once logged, keeps its value: logging the same value again is a no-op, a
  different value is :class:`~tracking_plugin.errors.Conflict`.
- Metric history keeps every point. On SQLite a point identical to a stored one (key,
  step, timestamp, value) is that point, as in MLflow: the history is keyed by the point
  (migration 0012). PostgreSQL keeps a repeat unless ``skip_logged_points``. A history
  reads in (step, timestamp, value, is_nan) order. NaN is stored as ``is_nan`` with
  value 0 (SQLite turns NaN into NULL); +/-inf are stored as they are (MLflow clamps them).
- ``latest_metrics`` holds, per (run, key), the point with the greatest
  ``(step, timestamp, value)``, a non-NaN value beating NaN on a tie. It is maintained
  with dialect upserts whose ``WHERE`` keeps the greater point, so concurrent writers
  cannot move it backwards.
- Logging to, renaming or ending a deleted run is a Conflict; reading it is fine.
- Runs get a readable generated name (``adjective-noun-123``) when none is given and the
  system tags ``mlflow.runName``, ``mlflow.user`` and ``mlflow.parentRunId``.

The SQL of search and of the hot paths (row layout, statements compiled per dialect, the
SQLite compiler extensions and the search planner) lives in
:mod:`tracking_plugin.store._sql_search`. Search compiles filters (see
:mod:`tracking_plugin.search`) to ``run_uuid IN (SELECT
run_uuid FROM latest_metrics|params|tags WHERE key = :k AND value <op> :v)`` sub-selects
that the key/value indexes answer, then loads metrics, params and tags for the one page
of runs with ``IN`` queries. On SQLite, which keeps no statistics on values, ``_drivers``
counts matches first to pick the plan, and candidate runs are checked, ordered and read
from ``ix_runs_search_rows`` (which holds every run column) without touching ``runs``.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import gc
import math
import random
import sys
import time
import uuid
from contextlib import contextmanager
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tracking_plugin.entities import (
    Experiment,
    LifecycleStage,
    Metric,
    PagedList,
    Param,
    Run,
    RunData,
    RunInfo,
    RunStatus,
    RunTag,
    ViewType,
    _positional_builder,
)
from tracking_plugin.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from tracking_plugin.search import (
    EXPERIMENT_FILTER,
    RUN_FILTER,
    Comparison,
    check_max_results,
    compare,
    compile_filter,
    decode_page_after,
    decode_page_token,
    encode_page_token,
    key_value_filter,
    parse_filter,
)
from tracking_plugin.store.schema import METRIC_BLOCK_SHIFT, URI_LEN, ExperimentRow, MetricBlockRow, MetricRow
from tracking_plugin.store.schema_gc import GcTombstoneRow
from tracking_plugin.validation import (
    MAX_BATCH_METRICS,
    MAX_BATCH_PARAMS_TAGS,
    validate_experiment_name,
    validate_metric,
    validate_param,
    validate_run_id,
    validate_tag,
    validate_text,
    validate_timestamp,
)

from tracking_plugin.artifacts import join_artifact_uri
from tracking_plugin.store import _pg_bulk
from tracking_plugin.store._metric_batch import MetricColumns
from tracking_plugin.store.db import Statement, Transaction, in_list
from tracking_plugin.store.statements import DatabaseClockMs
from tracking_plugin.store._sql_search import (
    _CHUNK,
    _EXPERIMENT_TAGS,
    _INSERT_NEW_PARAM,
    _METRIC_COLUMNS,
    _PARAMS,
    _RUNS,
    _RUN_COLUMNS,
    _TAGS,
    _UPSERT_EXPERIMENT_TAG,
    _UPSERT_LATEST_METRIC,
    _UPSERT_RUN_TAG,
    _chunks,
    _drivers,
    _insert_for,
    _load_runs,
    _parse_orders,
    _pg_page,
    _run,
    _run_info,
    _search_sql,
)
from tracking_plugin.tags import TAG_PARENT_RUN_ID, TAG_RUN_NAME, TAG_USER

if TYPE_CHECKING:
    from tracking_plugin.store.db import Database

__all__ = ["MAX_SEARCH_RESULTS", "SqlTrackingStore", "generate_run_name"]

# MLflow's system tags, kept so MLflow-aware tools read our runs.

MAX_SEARCH_RESULTS = 50_000
MAX_EXPERIMENT_RESULTS = 50_000
MAX_HISTORY_RESULTS = 1_000_000
# From this many metric points a batch is written in bulk (see log_batch).
_BULK_METRICS = 1_000
# From this page size search_runs builds its Runs with the garbage collector paused.
_GC_PAUSE_RUNS = 100

_EXPERIMENTS = ExperimentRow.__table__
# runs.lifecycle_stage of a run prefect-mlops gc has started removing (never in a view type),
# and the states of its tombstone (tracking_plugin.store.schema_gc).
GC_PENDING = "gc_pending"
GC_DONE = "done"
_METRICS = MetricRow.__table__
_LIFECYCLE_INDEX = [c.name for c in _RUN_COLUMNS].index("lifecycle_stage")

# Statements of the Transaction hot paths (see tracking_plugin.store.statements.Statement).
_EXPERIMENT_FOR_RUN = Statement(
    sa.select(_EXPERIMENTS.c.lifecycle_stage, _EXPERIMENTS.c.name, _EXPERIMENTS.c.artifact_location).where(
        _EXPERIMENTS.c.experiment_id == sa.bindparam("experiment_id")
    ),
    ("experiment_id",),
)
_RUN_EXISTS = Statement(
    sa.select(sa.literal_column("1")).select_from(_RUNS).where(_RUNS.c.run_uuid == sa.bindparam("run_id")), ("run_id",)
)
_RUN_STAGE = Statement(
    sa.select(_RUNS.c.lifecycle_stage).where(_RUNS.c.run_uuid == sa.bindparam("run_id")), ("run_id",)
)
# log_batch's check of its run. On PostgreSQL it also locks the runs row FOR KEY SHARE
# until the batch commits: ``metrics`` has no foreign key there (migration 0011), and this
# is the lock that key's per-row trigger took, once per batch instead of once per point.
# gc marks a run with SELECT ... FOR UPDATE, which waits for the lock, before it deletes
# the run's rows; a batch that comes after the mark reads ``gc_pending`` (PostgreSQL
# re-reads a row it waited for). So no metric row ever names a missing run. Status and
# name updates (FOR NO KEY UPDATE) do not wait for it, as they did not for the trigger.
_RUN_STAGE_LOCKED = Statement(
    lambda dialect: _RUN_STAGE.build(dialect).with_for_update(read=True, key_share=True)
    if dialect == "postgresql"
    else _RUN_STAGE.build(dialect),
    ("run_id",),
)
_RUN_BY = {
    column: Statement(sa.select(*_RUN_COLUMNS).where(_RUNS.c[column] == sa.bindparam("value")), ("value",))
    for column in ("run_uuid", "prefect_flow_run_id", "prefect_task_run_id")
}
_RUN_ID_BY = {
    column: Statement(sa.select(_RUNS.c.run_uuid).where(_RUNS.c[column] == sa.bindparam("value")), ("value",))
    for column in ("prefect_flow_run_id", "prefect_task_run_id")
}
_HISTORY = (
    sa.select(_METRICS.c.step, _METRICS.c.timestamp, _METRICS.c.value, _METRICS.c.is_nan)
    .where(_METRICS.c.run_uuid == sa.bindparam("run_id"), _METRICS.c.key == sa.bindparam("key"))
    .order_by(_METRICS.c.step, _METRICS.c.timestamp, _METRICS.c.value, _METRICS.c.is_nan)
)
# PostgreSQL reads a history as three arrays (steps, timestamps, values with NaN put back)
# in one row, fetched in binary: the driver then decodes three lists in C instead of a
# tuple of four objects per point (a 1,000,000-point history: ~0.1 s of client CPU instead
# of ~0.35 s, and 70 MB less garbage). The rows come in the order of ix_metrics_history
# (step, timestamp, value, is_nan), so the plan is an index-only scan with no sort;
# ordering by ``id`` as well read the heap and sorted each (step, timestamp) group (a third
# of the statement's time). Points equal in all four columns are the same point to a
# reader. SQLite orders the same way: its history is keyed by these columns (migration
# 0012), so its reads are range scans in key order too.
# ``array_agg`` keeps the order of its sorted subquery (PostgreSQL's documented idiom).
_PG_HISTORY_ROWS = (
    sa.select(_METRICS.c.step, _METRICS.c.timestamp, _METRICS.c.value, _METRICS.c.is_nan)
    .where(
        _METRICS.c.run_uuid == sa.bindparam("run_id"),
        _METRICS.c.key == sa.bindparam("key"),
        _METRICS.c.step.between(sa.bindparam("step_from"), sa.bindparam("step_to")),
    )
    .order_by(_METRICS.c.step, _METRICS.c.timestamp, _METRICS.c.value, _METRICS.c.is_nan)
    .limit(sa.bindparam("limit"))
    .offset(sa.bindparam("offset"))
    .subquery()
)
_PG_HISTORY_ARRAYS = Statement(
    sa.select(
        sa.func.array_agg(_PG_HISTORY_ROWS.c.step),
        sa.func.array_agg(_PG_HISTORY_ROWS.c.timestamp),
        sa.func.array_agg(
            sa.case((_PG_HISTORY_ROWS.c.is_nan, sa.literal_column("'NaN'::float8")), else_=_PG_HISTORY_ROWS.c.value)
        ),
    ),
    ("run_id", "key", "step_from", "step_to", "limit", "offset"),
)
# An unpaged read comes in chunks of this many points, by step (each chunk starts at the
# step where the previous one was cut), all in one REPEATABLE READ snapshot, the next
# chunk read by a helper thread while this one becomes Metrics: the server's half of a
# 1,000,000-point read (~0.5 s of its CPU) runs beside the client's (~0.6 s).
_PG_HISTORY_CHUNK = 250_000
_STEP_MIN, _STEP_MAX = -(2**63), 2**63 - 1
# get_metric_history_columns: every point, a page (limit + offset), or the rest after an offset.
_HISTORY_COLUMNS = {
    "all": Statement(_HISTORY, ("run_id", "key")),
    "page": Statement(
        _HISTORY.limit(sa.bindparam("limit")).offset(sa.bindparam("offset")), ("run_id", "key", "limit", "offset")
    ),
    # SQLite has no OFFSET without LIMIT: SQLAlchemy adds ``LIMIT ?`` with a parameter of
    # its own (-1), which a Statement cannot take; LIMIT -1 (no limit) goes into the SQL.
    "rest": Statement(
        lambda dialect: (_HISTORY.limit(sa.literal_column("-1")) if dialect == "sqlite" else _HISTORY).offset(
            sa.bindparam("offset")
        ),
        ("run_id", "key", "offset"),
    ),
}
_TOMBSTONES = GcTombstoneRow.__table__
_TOMBSTONE = Statement(
    sa.select(_TOMBSTONES.c.state, _TOMBSTONES.c.gc_time).where(_TOMBSTONES.c.run_uuid == sa.bindparam("run_id")),
    ("run_id",),
)
_INSERT_RUN = Statement(sa.insert(_RUNS), tuple(c.name for c in _RUN_COLUMNS))
_INSERT_RUN_TAG = Statement(sa.insert(_TAGS), ("run_uuid", "key", "value"))
# PostgreSQL's create_run: the run row (``_RUN_COLUMNS``) and its tags (two arrays, keys
# sorted) in one statement; the tags' foreign key sees the run the CTE inserted.
_PG_INSERT_RUN_WITH_TAGS = Statement(
    sa.text(
        f"WITH run AS (INSERT INTO runs ({', '.join(c.name for c in _RUN_COLUMNS)}) "
        f"VALUES ({', '.join(':' + c.name for c in _RUN_COLUMNS)}) RETURNING run_uuid) "
        "INSERT INTO tags (run_uuid, key, value) SELECT run.run_uuid, t.key, t.value "
        "FROM run, unnest(CAST(:tag_keys AS VARCHAR[]), CAST(:tag_values AS VARCHAR[])) AS t(key, value)"
    ),
    (*(c.name for c in _RUN_COLUMNS), "tag_keys", "tag_values"),
)
# The hot path: the driver's executemany on plain tuples. SQLAlchemy's per-row parameter
# processing for a Core insert of dicts costs about as much as SQLite's own work.
# SQLite's history is keyed by the point (migration 0012): a point already stored (a
# replayed batch, or one logged twice) is ignored, and ``_log_batch`` recounts the blocks
# it touched (``_RECOUNT_METRIC_BLOCK``) when the count inserted says some were.
_INSERT_METRIC = Statement(
    lambda dialect: sa.insert(_METRICS).prefix_with("OR IGNORE") if dialect == "sqlite" else sa.insert(_METRICS),
    _METRIC_COLUMNS,
)
# PostgreSQL only, for this transaction (see search_runs): custom plans, and the cost of a
# random page read as a cached one. With the default (4.0, a spinning disk's) the planner
# read all of ``params``/``latest_metrics`` sequentially for a page's 1,000 run ids (= ANY)
# rather than probe their primary keys, and the filter's params by a sequential scan: over
# 100,000 runs the three page lookups took 8-12 ms each instead of 26-28 ms, the filter
# statement ~65 ms instead of ~86 ms (a loaded machine). One statement, one round trip.
_CUSTOM_PLANS = Statement(
    sa.text(
        "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
        "set_config('random_page_cost', '1.1', true)"
    )
)
_EXPERIMENT_ATTRIBUTE_COLUMNS = {
    "name": _EXPERIMENTS.c.name,
    "experiment_id": _EXPERIMENTS.c.experiment_id,
    "creation_time": _EXPERIMENTS.c.creation_time,
    "last_update_time": _EXPERIMENTS.c.last_update_time,
}

_ADJECTIVES = (
    "amazing", "bold", "brave", "bright", "calm", "capable", "clever", "crisp", "daring",
    "eager", "fearless", "gentle", "glowing", "graceful", "honest", "jolly", "keen",
    "lucky", "merry", "nimble", "polite", "quick", "quiet", "rare", "resilient", "serene",
    "sincere", "steady", "swift", "tidy", "valiant", "vivid", "wise", "witty", "zealous",
)
_NOUNS = (
    "ant", "badger", "bass", "bear", "bird", "cat", "colt", "crane", "deer", "dove", "eel",
    "elk", "fawn", "finch", "fox", "frog", "goat", "hare", "hawk", "heron", "horse", "ibis",
    "jay", "koi", "lark", "lynx", "mole", "moth", "newt", "owl", "panda", "robin", "seal",
    "shrike", "sloth", "snail", "stork", "swan", "toad", "trout", "wolf", "wren", "yak",
)


def generate_run_name() -> str:
    """A readable run name like MLflow's, e.g. ``'clever-owl-417'``."""
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(0, 999):03d}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _experiment_pk(experiment_id: Any) -> int:
    """Experiment ids are integers, passed around as strings (as in MLflow)."""
    if isinstance(experiment_id, bool):
        pass
    elif isinstance(experiment_id, int):
        return experiment_id
    elif isinstance(experiment_id, str) and experiment_id.strip().lstrip("-").isdigit():
        value = int(experiment_id)
        if -(2**31) <= value < 2**31:
            return value
    raise InvalidArgument(
        f"Invalid experiment id {experiment_id!r}: experiment ids are integers given as "
        "strings, e.g. '1' (Experiment.experiment_id)."
    )


def _run_id(run_id: Any) -> str:
    return validate_run_id(run_id)


def _view_stages(view_type: Any) -> tuple[str, ...]:
    try:
        view = ViewType(view_type)
    except ValueError:
        raise InvalidArgument(
            f"Invalid view type {view_type!r}: use ViewType.ACTIVE_ONLY, DELETED_ONLY or ALL."
        ) from None
    if view is ViewType.ACTIVE_ONLY:
        return (LifecycleStage.ACTIVE.value,)
    if view is ViewType.DELETED_ONLY:
        return (LifecycleStage.DELETED.value,)
    return (LifecycleStage.ACTIVE.value, LifecycleStage.DELETED.value)


def _join_artifact_uri(base: str, *parts: str) -> str:
    return join_artifact_uri(base, *parts)


def _as_items(items: Any, kind: str) -> list[Any]:
    if items is None:
        return []
    if isinstance(items, (str, bytes, dict)):
        raise InvalidArgument(
            f"Invalid {kind}s {items!r}: pass a list of tracking_plugin.entities.{_ENTITY_NAMES[kind]} objects."
        )
    return list(items)


_ENTITY_NAMES = {"metric": "Metric", "param": "Param", "tag": "RunTag"}


def _field(item: Any, name: str, kind: str) -> Any:
    try:
        return getattr(item, name)
    except AttributeError:
        raise InvalidArgument(
            f"Invalid {kind} {item!r}: expected an object with .{name} "
            f"(tracking_plugin.entities.{_ENTITY_NAMES[kind]})."
        ) from None


def _experiment(row: Any, tags: dict[str, str]) -> Experiment:
    return Experiment(
        experiment_id=str(row.experiment_id),
        name=row.name,
        artifact_location=row.artifact_location,
        lifecycle_stage=LifecycleStage(row.lifecycle_stage),
        tags=tags,
        creation_time=row.creation_time,
        last_update_time=row.last_update_time,
    )


class SqlTrackingStore:
    """The tracking half of :class:`~tracking_plugin.store.sql.SqlStore` (``self.db`` is set there)."""

    db: Database

    # ================================================================ experiments

    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: dict[str, str] | None = None
    ) -> str:
        """Create an experiment and return its id (a string). A taken name is AlreadyExists.

        ``artifact_location`` is where its runs' artifacts go (``<location>/<run_id>/artifacts``);
        the client passes ``<artifact root>/<experiment id>``-style locations, the store does
        not know the artifact root.
        """
        validate_experiment_name(name)
        location = "" if artifact_location is None else validate_text(
            artifact_location, "artifact location", limit=URI_LEN
        )
        tag_rows = [dict(zip(("key", "value"), validate_tag(k, v), strict=True)) for k, v in (tags or {}).items()]
        now = _now_ms()
        try:
            with self.db.session() as session:
                taken = session.execute(
                    sa.select(_EXPERIMENTS.c.experiment_id, _EXPERIMENTS.c.lifecycle_stage).where(
                        _EXPERIMENTS.c.name == name
                    )
                ).first()
                if taken is not None:
                    raise _experiment_exists(name, taken)
                result = session.execute(
                    sa.insert(_EXPERIMENTS).values(
                        name=name,
                        artifact_location=location,
                        lifecycle_stage=LifecycleStage.ACTIVE.value,
                        creation_time=now,
                        last_update_time=now,
                    )
                )
                experiment_id = result.inserted_primary_key[0]
                if tag_rows:
                    session.execute(
                        sa.insert(_EXPERIMENT_TAGS),
                        [{"experiment_id": experiment_id, **row} for row in tag_rows],
                    )
        except IntegrityError as exc:
            # Another process created the same name between our check and our insert.
            raise AlreadyExists(
                f"Experiment {name!r} already exists (created concurrently). Use "
                "get_experiment_by_name() to fetch it."
            ) from exc
        return str(experiment_id)

    def get_experiment(self, experiment_id: str) -> Experiment:
        """The experiment with this id (deleted ones too); NotFound if there is none."""
        pk = _experiment_pk(experiment_id)
        with self.db.session(write=False) as session:
            row = _experiment_row(session, pk)
            return _experiment(row, _experiment_tags(session, [pk]).get(pk, {}))

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """The experiment with this exact name (deleted ones too), or None."""
        validate_experiment_name(name)
        with self.db.session(write=False) as session:
            row = session.execute(sa.select(_EXPERIMENTS).where(_EXPERIMENTS.c.name == name)).first()
            if row is None:
                return None
            return _experiment(row, _experiment_tags(session, [row.experiment_id]).get(row.experiment_id, {}))

    def search_experiments(
        self,
        view_type: ViewType = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[Experiment]:
        """Experiments matching ``filter_string`` (``name LIKE 'x%'``, ``tags.team = 'a'``,
        ``creation_time > 1700000000000``, ``experiment_id IN ('1', '2')``; OR and
        parentheses too), by default newest first."""
        stages = _view_stages(view_type)
        check_max_results(max_results, limit=MAX_EXPERIMENT_RESULTS)
        offset = decode_page_token(page_token)
        expr = parse_filter(filter_string, EXPERIMENT_FILTER)
        orders = _parse_orders(order_by, EXPERIMENT_FILTER, default=["creation_time DESC"])
        dialect = self.db.dialect

        def leaf(cmp: Comparison) -> Any:
            if cmp.entity_type == "tag":
                return key_value_filter(
                    _EXPERIMENTS.c.experiment_id, _EXPERIMENT_TAGS, owner_fk="experiment_id",
                    comparison=cmp, dialect=dialect,
                )
            column = _EXPERIMENT_ATTRIBUTE_COLUMNS[cmp.key]
            value = cmp.value
            if cmp.key == "experiment_id":
                value = tuple(_experiment_pk(v) for v in value) if isinstance(value, tuple) else _experiment_pk(value)
            return compare(column, cmp.op, value, dialect=dialect)

        stmt = sa.select(_EXPERIMENTS).where(_EXPERIMENTS.c.lifecycle_stage.in_(stages))
        if expr is not None:
            stmt = stmt.where(compile_filter(expr, leaf))
        clauses: list[Any] = []
        for order in orders:
            column = _EXPERIMENT_ATTRIBUTE_COLUMNS[order.key]
            if dialect == "postgresql" and isinstance(column.type, sa.String):
                column = column.collate("C")
            clauses.append(column.asc() if order.ascending else column.desc())
        if not any(o.key == "experiment_id" for o in orders):
            clauses.append(_EXPERIMENTS.c.experiment_id.asc())
        stmt = stmt.order_by(*clauses).limit(max_results + 1).offset(offset)
        with self.db.session(write=False) as session:
            rows = session.execute(stmt).all()
            more = len(rows) > max_results
            rows = rows[:max_results]
            tags = _experiment_tags(session, [r.experiment_id for r in rows])
        items = [_experiment(r, tags.get(r.experiment_id, {})) for r in rows]
        return PagedList(items, encode_page_token(offset + max_results) if more else None)

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        """Rename an active experiment; a taken name is AlreadyExists."""
        pk = _experiment_pk(experiment_id)
        validate_experiment_name(new_name)
        try:
            with self.db.session() as session:
                row = _experiment_row(session, pk)
                if row.lifecycle_stage != LifecycleStage.ACTIVE.value:
                    raise Conflict(
                        f"Cannot rename experiment {experiment_id!r} ({row.name!r}): it is deleted. "
                        "Restore it first with restore_experiment()."
                    )
                if row.name == new_name:
                    return
                taken = session.execute(
                    sa.select(_EXPERIMENTS.c.experiment_id, _EXPERIMENTS.c.lifecycle_stage).where(
                        _EXPERIMENTS.c.name == new_name
                    )
                ).first()
                if taken is not None:
                    raise _experiment_exists(new_name, taken)
                session.execute(
                    sa.update(_EXPERIMENTS)
                    .where(_EXPERIMENTS.c.experiment_id == pk)
                    .values(name=new_name, last_update_time=_now_ms())
                )
        except IntegrityError as exc:
            raise AlreadyExists(f"Experiment {new_name!r} already exists (created concurrently).") from exc

    def delete_experiment(self, experiment_id: str) -> None:
        """Mark the experiment and all its runs deleted (restorable, as in MLflow)."""
        pk = _experiment_pk(experiment_id)
        with self.db.session() as session:
            row = _experiment_row(session, pk)
            if row.lifecycle_stage == LifecycleStage.DELETED.value:
                raise Conflict(f"Experiment {experiment_id!r} ({row.name!r}) is already deleted.")
            _set_experiment_lifecycle(session, pk, LifecycleStage.DELETED)

    def restore_experiment(self, experiment_id: str) -> None:
        """Mark a deleted experiment and all its runs active again."""
        pk = _experiment_pk(experiment_id)
        with self.db.session() as session:
            row = _experiment_row(session, pk)
            if row.lifecycle_stage == LifecycleStage.ACTIVE.value:
                raise Conflict(f"Experiment {experiment_id!r} ({row.name!r}) is not deleted; nothing to restore.")
            _set_experiment_lifecycle(session, pk, LifecycleStage.ACTIVE)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        """Set (or overwrite) a tag of an active experiment."""
        pk = _experiment_pk(experiment_id)
        key, value = validate_tag(key, value)
        with self.db.session() as session:
            row = _experiment_row(session, pk)
            if row.lifecycle_stage != LifecycleStage.ACTIVE.value:
                raise Conflict(
                    f"Cannot set tag {key!r} on experiment {experiment_id!r} ({row.name!r}): it is "
                    "deleted. Restore it first with restore_experiment()."
                )
            upsert = _UPSERT_EXPERIMENT_TAG.build(self.db.dialect)
            session.execute(upsert, [{"experiment_id": pk, "key": key, "value": value}])
            session.execute(
                sa.update(_EXPERIMENTS).where(_EXPERIMENTS.c.experiment_id == pk).values(last_update_time=_now_ms())
            )

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        """Remove a tag of an active experiment; NotFound if it has no such tag."""
        pk = _experiment_pk(experiment_id)
        key, _ = validate_tag(key, "")
        with self.db.session() as session:
            row = _experiment_row(session, pk)
            if row.lifecycle_stage != LifecycleStage.ACTIVE.value:
                raise Conflict(
                    f"Cannot delete tag {key!r} of experiment {experiment_id!r} ({row.name!r}): it is "
                    "deleted. Restore it first with restore_experiment()."
                )
            deleted = session.execute(
                sa.delete(_EXPERIMENT_TAGS).where(_EXPERIMENT_TAGS.c.experiment_id == pk, _EXPERIMENT_TAGS.c.key == key)
            ).rowcount
            if not deleted:
                raise NotFound(f"Experiment {experiment_id!r} has no tag {key!r}; nothing to delete.")
            session.execute(
                sa.update(_EXPERIMENTS).where(_EXPERIMENTS.c.experiment_id == pk).values(last_update_time=_now_ms())
            )

    # ======================================================================= runs

    def create_run(
        self,
        experiment_id: str,
        *,
        user_id: str,
        start_time: int,
        run_name: str | None = None,
        tags: Sequence[RunTag] = (),
        parent_run_id: str | None = None,
        prefect_flow_run_id: str | None = None,
        prefect_task_run_id: str | None = None,
    ) -> Run:
        """Create a RUNNING run. A taken Prefect flow-run/task-run id raises AlreadyExists.

        The run's artifact URI is ``<experiment artifact_location>/<run_id>/artifacts``.
        """
        pk = _experiment_pk(experiment_id)
        validate_text(user_id, "user id")
        start_time = validate_timestamp(start_time, "start_time")
        tag_values: dict[str, str] = {}
        for tag in _as_items(tags, "tag"):
            key, value = validate_tag(_field(tag, "key", "tag"), _field(tag, "value", "tag"))
            tag_values[key] = value
        if run_name is None:
            run_name = tag_values.get(TAG_RUN_NAME) or generate_run_name()
        else:
            validate_text(run_name, "run name")
            if tag_values.get(TAG_RUN_NAME, run_name) != run_name:
                raise InvalidArgument(
                    f"run_name {run_name!r} and tag {TAG_RUN_NAME} {tag_values[TAG_RUN_NAME]!r} "
                    "disagree: pass the name once (run_name=...)."
                )
        if parent_run_id is not None:
            _run_id(parent_run_id)
            tag_values[TAG_PARENT_RUN_ID] = parent_run_id
        for label, prefect_id in (("flow run", prefect_flow_run_id), ("task run", prefect_task_run_id)):
            if prefect_id is not None:
                validate_text(prefect_id, f"Prefect {label} id", limit=64)
        tag_values[TAG_RUN_NAME] = run_name
        tag_values.setdefault(TAG_USER, user_id)

        run_id = uuid.uuid4().hex
        try:
            # PostgreSQL writes the run and its tags with one statement: no BEGIN/COMMIT.
            with self.db.transaction(autocommit=True) as tx:
                experiment = tx.one(_EXPERIMENT_FOR_RUN, (pk,))
                if experiment is None:
                    raise _experiment_not_found(pk)
                stage, experiment_name, artifact_location = experiment
                if stage != LifecycleStage.ACTIVE.value:
                    raise Conflict(
                        f"Cannot create a run in experiment {experiment_id!r} ({experiment_name!r}): "
                        "it is deleted. Restore it or use another experiment."
                    )
                if parent_run_id is not None and tx.one(_RUN_EXISTS, (parent_run_id,)) is None:
                    raise NotFound(f"Parent run {parent_run_id!r} does not exist; start the parent run first.")
                _check_prefect_ids_free(tx, prefect_flow_run_id, prefect_task_run_id)
                artifact_uri = _join_artifact_uri(artifact_location, run_id, "artifacts")
                run_row = (
                    run_id, pk, run_name, RunStatus.RUNNING.value, start_time, None, user_id, artifact_uri,
                    LifecycleStage.ACTIVE.value, parent_run_id, prefect_flow_run_id, prefect_task_run_id,
                )
                keys = sorted(tag_values)
                if tx.postgres:  # the run and its tags in one statement (one round trip)
                    tx.execute(_PG_INSERT_RUN_WITH_TAGS, (*run_row, keys, [tag_values[k] for k in keys]))
                else:
                    tx.execute(_INSERT_RUN, run_row)
                    tx.executemany(_INSERT_RUN_TAG, [(run_id, k, tag_values[k]) for k in keys])
        except self.db.IntegrityError as exc:
            # Only the unique Prefect ids can collide (run ids are fresh uuid4s); this is the
            # race our check above cannot see on PostgreSQL: the unique index decides.
            raise _prefect_id_taken(exc, prefect_flow_run_id, prefect_task_run_id) from exc
        info = RunInfo(
            run_id=run_id,
            experiment_id=str(pk),
            run_name=run_name,
            status=RunStatus.RUNNING,
            start_time=start_time,
            end_time=None,
            user_id=user_id,
            artifact_uri=artifact_uri,
            lifecycle_stage=LifecycleStage.ACTIVE,
            parent_run_id=parent_run_id,
            prefect_flow_run_id=prefect_flow_run_id,
            prefect_task_run_id=prefect_task_run_id,
        )
        return Run(info=info, data=RunData(tags=tag_values))

    def get_run(self, run_id: str) -> Run:
        """The run with its latest metrics (NaN as ``float('nan')``), params and tags."""
        _run_id(run_id)
        with self.db.transaction(write=False) as tx:
            row = tx.one(_RUN_BY["run_uuid"], (run_id,))
            if row is None or row[_LIFECYCLE_INDEX] == GC_PENDING:
                raise _missing_run(tx, run_id)
            return _load_runs(tx, [row])[0]

    def get_run_by_prefect_id(
        self, *, flow_run_id: str | None = None, task_run_id: str | None = None
    ) -> Run | None:
        """The run keyed by a Prefect flow-run id or task-run id (exactly one), or None."""
        if (flow_run_id is None) == (task_run_id is None):
            raise InvalidArgument("Pass exactly one of flow_run_id= or task_run_id= to get_run_by_prefect_id().")
        if flow_run_id is not None:
            where, value = "prefect_flow_run_id", validate_text(flow_run_id, "Prefect flow run id", limit=64)
        else:
            where, value = "prefect_task_run_id", validate_text(task_run_id, "Prefect task run id", limit=64)
        with self.db.transaction(write=False) as tx:
            row = tx.one(_RUN_BY[where], (value,))
            if row is None or row[_LIFECYCLE_INDEX] == GC_PENDING:
                return None
            return _load_runs(tx, [row])[0]

    def update_run_info(
        self,
        run_id: str,
        *,
        status: RunStatus | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
    ) -> RunInfo:
        """Change status, end time and/or name (the ``mlflow.runName`` tag follows the name)."""
        _run_id(run_id)
        values: dict[str, Any] = {}
        if status is not None:
            try:
                values["status"] = RunStatus(status).value
            except ValueError:
                raise InvalidArgument(
                    f"Invalid run status {status!r}: use one of {', '.join(s.value for s in RunStatus)}."
                ) from None
        if end_time is not None:
            values["end_time"] = validate_timestamp(end_time, "end_time")
        if run_name is not None:
            values["name"] = validate_text(run_name, "run name")

        def update(_replay: bool) -> Any:  # setting the same values twice changes nothing
            # Without a new name the UPDATE is the one write: no BEGIN/COMMIT on PostgreSQL.
            with self.db.transaction(autocommit=run_name is None) as tx:
                # PostgreSQL: one statement, the UPDATE of an active run returns its row; only
                # when none came back is the run read, to say why (unknown, gc, deleted).
                statement = _update_run(tuple(values)) if values else None
                args = (*values.values(), run_id)
                row = tx.one(statement, args) if statement is not None and tx.postgres else None
                if row is None:
                    row = tx.one(_RUN_BY["run_uuid"], (run_id,))
                    if row is None or row[_LIFECYCLE_INDEX] == GC_PENDING:
                        raise _missing_run(tx, run_id)
                    if row[_LIFECYCLE_INDEX] != LifecycleStage.ACTIVE.value:
                        raise _run_deleted(run_id, "update")
                    if statement is not None:  # SQLite (under its write lock), or restored meanwhile
                        tx.execute(statement, args)
                if run_name is not None:
                    tx.execute(_UPSERT_RUN_TAG, (run_id, TAG_RUN_NAME, run_name))
                return row

        info = _run_info(self.db.replaying(update))
        return dataclasses.replace(
            info,
            status=RunStatus(values.get("status", info.status)),
            end_time=values.get("end_time", info.end_time),
            run_name=values.get("name", info.run_name),
        )

    def delete_run(self, run_id: str) -> None:
        """Mark a run deleted (restorable); its data stays."""
        _run_id(run_id)
        with self.db.session() as session:
            _set_run_lifecycle(session, run_id, LifecycleStage.DELETED)

    def restore_run(self, run_id: str) -> None:
        """Mark a deleted run active again."""
        _run_id(run_id)
        with self.db.session() as session:
            _set_run_lifecycle(session, run_id, LifecycleStage.ACTIVE)

    # ======================================================================= data

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] | MetricColumns = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
        *,
        skip_logged_points: bool = False,
    ) -> None:
        """Validate everything, then write all of it in one transaction, or nothing.

        ``metrics`` may also be a ``MetricColumns`` (``_metric_batch``: points as parallel
        lists whose types ``MetricColumns.checked`` accepted), as the tracking server's
        log-batch fast path passes them.

        ``skip_logged_points``: a metric point identical to one already in the history
        (key, value, timestamp and step) is not written again, so a client replaying a
        batch whose response it lost leaves the history as it was (MLflow's rule, which
        the tracking server applies to every call). On SQLite that holds whatever it
        says: the history is keyed by the point (migration 0012).

        >>> store.log_batch(run.info.run_id, metrics=[Metric("loss", 0.3, 1700000000000, 1)],
        ...                 params=[Param("lr", "0.01")])  # doctest: +SKIP
        """
        _run_id(run_id)
        metric_items = metrics if isinstance(metrics, MetricColumns) else _as_items(metrics, "metric")
        param_items = _as_items(params, "param")
        tag_items = _as_items(tags, "tag")
        if len(metric_items) > MAX_BATCH_METRICS:
            raise InvalidArgument(
                f"A batch may hold at most {MAX_BATCH_METRICS} metrics, got {len(metric_items)}; "
                "split it into several log_batch calls."
            )
        if len(param_items) + len(tag_items) > MAX_BATCH_PARAMS_TAGS:
            raise InvalidArgument(
                f"A batch may hold at most {MAX_BATCH_PARAMS_TAGS} params and tags together, got "
                f"{len(param_items) + len(tag_items)}; split it into several log_batch calls."
            )
        # A large batch builds its rows with the collector paused and is written as a bulk
        # transaction (Database.transaction). Skipping SQLite's per-row foreign-key lookup
        # there is safe: the run is checked first, under the write lock, and only gc deletes
        # runs rows, in a write transaction of its own after marking the run gc_pending
        # (PostgreSQL: see _RUN_STAGE_LOCKED).
        bulk = len(metric_items) >= _BULK_METRICS
        with _gc_paused(bulk):
            # A replay after a lost connection skips the points already stored: the lost
            # transaction may have committed before the connection went.
            self.db.replaying(
                lambda replay: self._log_batch(
                    run_id, metric_items, param_items, tag_items, bulk, skip_logged_points or replay
                )
            )

    def _log_batch(
        self,
        run_id: str,
        metric_items: list[Any] | MetricColumns,
        param_items: list[Any],
        tag_items: list[Any],
        bulk: bool,
        skip_logged_points: bool,
    ) -> None:
        # A large batch of plain points is handled column by column (_metric_batch).
        if isinstance(metric_items, MetricColumns):
            columns: MetricColumns | None = metric_items.validated()
        else:
            columns = MetricColumns.of(metric_items) if bulk else None
        flags = _NAN_FLAGS[self.db.dialect]
        metric_rows = columns.rows(run_id, flags[0]) if columns else _metric_rows(run_id, metric_items, flags)
        param_values: dict[str, str] = {}
        for param in param_items:
            key, value = validate_param(_field(param, "key", "param"), _field(param, "value", "param"))
            if param_values.get(key, value) != value:
                raise InvalidArgument(
                    f"Param {key!r} appears twice in one batch with different values "
                    f"({param_values[key]!r} and {value!r}); a param has one value per run."
                )
            param_values[key] = value
        tag_values: dict[str, str] = {}
        for tag in tag_items:
            key, value = validate_tag(_field(tag, "key", "tag"), _field(tag, "value", "tag"))
            tag_values[key] = value  # the last value of a repeated tag wins, as in MLflow

        write = bool(metric_rows or param_values or tag_values)
        # log_param (one param, nothing else) writes with one INSERT: no BEGIN/COMMIT on
        # PostgreSQL (params keep their foreign key to the run).
        single = len(param_values) == 1 and not metric_rows and not tag_values
        with self.db.transaction(write=write, bulk=bulk, rows=len(metric_rows), autocommit=single) as tx:
            _check_run_active(tx, run_id, "log to", lock=bool(metric_rows))
            if param_values:
                _write_params(tx, run_id, param_values)
            # SQLite ignores stored points itself (its history is keyed by the point), so
            # only PostgreSQL reads them first.
            if metric_rows and skip_logged_points and tx.postgres:
                fresh = _unlogged_points(tx, run_id, metric_rows)
                if len(fresh) != len(metric_rows):  # some dropped: the columns no longer match
                    columns = None
                metric_rows = fresh
            if metric_rows:
                ignored = False  # whether SQLite left out points it holds already
                if tx.postgres and len(metric_rows) >= _pg_bulk.COPY_MIN_POINTS:
                    _pg_bulk.copy_metrics(tx.cursor, metric_rows)
                else:
                    inserted = _write(tx, _INSERT_METRIC, metric_rows)  # log_metric: one execute
                    ignored = not tx.postgres and inserted < len(metric_rows)
                # Blocks and latest points of the whole batch: a point SQLite ignored is
                # stored already, so the latest points and the blocks' bounds are the same
                # with it, only the counts are not.
                summaries = columns.summaries(run_id) if columns else None
                blocks, latest = summaries or (_fold_blocks(metric_rows), _latest_points(metric_rows))
                if blocks and ignored:  # count the stored points of the blocks the batch touched
                    _write(tx, _RECOUNT_METRIC_BLOCK, [_block_span(block) for block in blocks])
                elif blocks:  # in key order, so concurrent PostgreSQL writers lock in one order
                    _write(tx, _UPSERT_METRIC_BLOCK, blocks)
                _write(tx, _UPSERT_LATEST_METRIC, latest)
            if tag_values:
                _write(tx, _UPSERT_RUN_TAG, [(run_id, k, v) for k, v in sorted(tag_values.items())])

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove a tag of an active run; NotFound if the run has no such tag."""
        _run_id(run_id)
        key, _ = validate_tag(key, "")
        with self.db.session() as session:
            _active_run_row(session, run_id, "delete a tag of", columns=(_RUNS.c.lifecycle_stage,))
            deleted = session.execute(
                sa.delete(_TAGS).where(_TAGS.c.run_uuid == run_id, _TAGS.c.key == key)
            ).rowcount
            if not deleted:
                raise NotFound(f"Run {run_id!r} has no tag {key!r}; nothing to delete.")

    def _history_rows(
        self, run_id: str, key: str, max_results: int | None, page_token: str | None
    ) -> tuple[list[tuple[Any, ...]], int, bool]:
        """One page of ``(step, timestamp, value, is_nan)`` driver rows of a history, its
        offset and whether more follow (SQLite's reader for both history methods)."""
        offset = self._check_history_call(run_id, key, max_results, page_token)
        if max_results is not None:
            statement, params = _HISTORY_COLUMNS["page"], (run_id, key, max_results + 1, offset)
        elif offset:
            statement, params = _HISTORY_COLUMNS["rest"], (run_id, key, offset)
        else:
            statement, params = _HISTORY_COLUMNS["all"], (run_id, key)
        with self.db.transaction(write=False) as tx:
            _check_run_readable(tx, run_id)
            rows = tx.all(statement, params)
        more = max_results is not None and len(rows) > max_results
        return (rows[:max_results] if more else rows), offset, more

    def _check_history_call(self, run_id: str, key: str, max_results: int | None, page_token: str | None) -> int:
        """Validate a history read's arguments; returns the page token's offset."""
        _run_id(run_id)
        validate_metric(key, 0.0, 0, 0)
        if max_results is not None:
            check_max_results(max_results, limit=MAX_HISTORY_RESULTS)
        return decode_page_token(page_token)

    def _pg_history_chunks(
        self, run_id: str, key: str, max_results: int | None, page_token: str | None
    ) -> tuple[Iterator[tuple[list[int], list[int], list[float]]], int]:
        """PostgreSQL's reader for both history methods: one page as chunks of columns
        ``(steps, timestamps, values)`` (NaN as ``float('nan')``) and its offset. A page of
        ``max_results`` is one chunk of up to ``max_results + 1`` points (the last one only
        says that more follow: the caller cuts it). Called eagerly: the arguments are
        checked and the run looked up before it returns."""
        offset = self._check_history_call(run_id, key, max_results, page_token)
        if max_results is not None:
            with self.db.transaction(write=False) as tx:
                _check_run_readable(tx, run_id)
                page = _pg_history_read(tx, run_id, key, _STEP_MIN, _STEP_MAX, max_results + 1, offset)
            return iter([page]), offset
        return _pg_history_whole(self.db, run_id, key, offset), offset

    def _pg_history_page(
        self, run_id: str, key: str, max_results: int | None, page_token: str | None
    ) -> tuple[list[int], list[int], list[float], int, bool]:
        """:meth:`_pg_history_chunks` joined into one page: columns, offset, more follow."""
        chunks, offset = self._pg_history_chunks(run_id, key, max_results, page_token)
        steps: list[int] = []
        timestamps: list[int] = []
        values: list[float] = []
        for s, t, v in chunks:
            steps += s
            timestamps += t
            values += v
        more = max_results is not None and len(steps) > max_results
        if more:
            del steps[max_results:], timestamps[max_results:], values[max_results:]
        return steps, timestamps, values, offset, more

    def get_metric_history(
        self, run_id: str, key: str, max_results: int | None = None, page_token: str | None = None
    ) -> PagedList[Metric]:
        """Every logged point of ``key``, ordered by (step, timestamp, value), repeats
        included where the backend keeps them (see the module's rules).

        Without ``max_results`` the whole history comes back in one page.
        """
        # Driver rows and the positional Metric builder: a 1,000,000-point history as
        # SQLAlchemy Rows read by attribute into dataclass __init__ took ~4x as long.
        # The collector paused while a long history becomes objects (see _gc_paused): a
        # million rows and points set off collections that walk them all, again and again.
        build = _build_metric
        with _gc_paused(max_results is None or max_results >= _BULK_METRICS):
            if self.db.dialect == "postgresql":
                chunks, offset = self._pg_history_chunks(run_id, key, max_results, page_token)
                items = []
                for steps, timestamps, values in chunks:  # the next chunk is read meanwhile
                    items += map(build, repeat(key), values, timestamps, steps)
                    del steps, timestamps, values
                more = max_results is not None and len(items) > max_results
                if more:
                    del items[max_results:]
            else:
                rows, offset, more = self._history_rows(run_id, key, max_results, page_token)
                nan = math.nan
                items = [build(key, nan if is_nan else v, t, step) for step, t, v, is_nan in rows]
                del rows
        token = encode_page_token(offset + len(items)) if more else None
        return PagedList(items, token)

    def get_metric_history_columns(
        self, run_id: str, key: str, max_results: int | None = None, page_token: str | None = None
    ) -> tuple[list[int], list[int], list[float], str | None]:
        """:meth:`get_metric_history` as three columns ``(steps, timestamps, values, token)``
        (NaN as ``float('nan')``), read on the driver's cursor without an object per point:
        what the tracking server sends for a large history, a tenth of the cost."""
        if self.db.dialect == "postgresql":
            steps, timestamps, values, offset, more = self._pg_history_page(run_id, key, max_results, page_token)
            return steps, timestamps, values, (encode_page_token(offset + len(steps)) if more else None)
        rows, offset, more = self._history_rows(run_id, key, max_results, page_token)
        if not rows:
            return [], [], [], None
        # A column at a time at C speed (zip(*rows) would take one argument per row).
        steps, timestamps, values, nans = (list(map(itemgetter(i), rows)) for i in range(4))
        if any(nans):
            nan = math.nan
            values = [nan if flag else v for v, flag in zip(values, nans)]
        token = encode_page_token(offset + len(rows)) if more else None
        return steps, timestamps, values, token

    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str = "",
        run_view_type: ViewType = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[Run]:
        """Runs of ``experiment_ids`` matching ``filter_string``, one page at a time.

        Filters use MLflow's grammar plus OR and parentheses (see :mod:`tracking_plugin.search`);
        ``order_by`` items look like ``"metrics.acc DESC"``, ``"params.lr"`` or
        ``"attributes.start_time ASC"``. Runs lacking an ordering metric/param/tag come
        last, NaN metrics just before them. Default order: ``start_time DESC, run_id``.

        >>> store.search_runs(["1"], "metrics.acc > 0.9 and (params.model = 'rf' or "
        ...                   "params.model = 'gb')", order_by=["metrics.acc DESC"])  # doctest: +SKIP
        """
        if isinstance(experiment_ids, (str, int)):
            experiment_ids = [experiment_ids]  # type: ignore[list-item]
        experiment_pks = sorted({_experiment_pk(e) for e in experiment_ids})
        stages = _view_stages(run_view_type)
        check_max_results(max_results, limit=MAX_SEARCH_RESULTS)
        offset = decode_page_token(page_token)
        expr = parse_filter(filter_string, RUN_FILTER)
        orders = _parse_orders(order_by, RUN_FILTER)
        # PostgreSQL, default order: the next page starts after the last run's sort key
        # (keyset) instead of skipping ``offset`` runs, so page N costs what page 1 does.
        keyset = self.db.dialect == "postgresql" and not orders
        after = decode_page_after(page_token) if keyset else None
        if not experiment_pks:
            return PagedList([], None)
        # The collector paused while the page becomes Runs (see _gc_paused): a page of
        # 1,000 runs is ~15,000 new objects, and the collections they set off walked every
        # object of the process (a third of a 100,000-run search's client CPU, measured).
        with _gc_paused(max_results >= _GC_PAUSE_RUNS), self.db.transaction(write=False) as tx:
            if tx.postgres:
                # psycopg prepares statements it has seen 5 times; PostgreSQL may then switch
                # to a generic plan that ignores the filter values (a 5 ms search took 1 s).
                tx.execute(_CUSTOM_PLANS)
            drivers = _drivers(tx, filter_string, expr, orders, offset + max_results + 1)
            order_key = (order_by,) if isinstance(order_by, str) else tuple(order_by or ())
            statement = _search_sql(
                self.db.dialect, filter_string, order_key, tuple(experiment_pks), stages, drivers,
                max_results + 1, 0 if after else offset, after,
            )
            if tx.postgres:  # the runs with their metrics, params and tags: one statement
                rows, runs = _pg_page(_run(tx, statement, binary=True), max_results)
            else:
                rows = _run(tx, statement)
                runs = _load_runs(tx, rows[:max_results])
            more = len(rows) > max_results
        if not more:
            return PagedList(runs, None)
        last = rows[max_results - 1]  # _RUN_COLUMNS: run_uuid first, start_time fifth
        return PagedList(runs, encode_page_token(offset + max_results, (last[4], last[0]) if keyset else None))


# ====================================================================== helpers
# Private helpers take the caller's session or transaction; they never open one.


def _experiment_exists(name: str, taken: Any) -> AlreadyExists:
    hint = (
        " It is deleted: restore it with restore_experiment() or choose another name."
        if taken.lifecycle_stage == LifecycleStage.DELETED.value
        else " Use get_experiment_by_name() to fetch it, or choose another name."
    )
    return AlreadyExists(f"Experiment {name!r} already exists (id {taken.experiment_id}).{hint}")


def _run_not_found(run_id: str) -> NotFound:
    return NotFound(f"Run {run_id!r} does not exist. Check the run id (search_runs() lists runs).")


def run_garbage_collected(run_id: str, gc_time: int | None) -> NotFound:
    """The NotFound of a run ``prefect-mlops gc`` removed (or is removing: no time yet)."""
    when = (
        "is being garbage-collected"
        if gc_time is None
        else f"was garbage-collected at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(gc_time / 1000))}"
    )
    return NotFound(
        f"Run {run_id!r} {when} (prefect-mlops gc): its data and artifacts are permanently removed. "
        "A deleted run can be restored only before gc removes it."
    )


def _missing_run(handle: Transaction | Session, run_id: str) -> NotFound:
    """NotFound for a run with no readable row: garbage-collected (tombstone) or unknown."""
    if isinstance(handle, Session):
        found = handle.execute(_TOMBSTONE.build(handle.get_bind().dialect.name), {"run_id": run_id}).first()
    else:
        found = handle.one(_TOMBSTONE, (run_id,))
    if found is None:
        return _run_not_found(run_id)
    return run_garbage_collected(run_id, found[1] if found[0] == GC_DONE else None)


def _run_deleted(run_id: str, action: str) -> Conflict:
    return Conflict(f"Cannot {action} run {run_id!r}: it is deleted. Restore it first with restore_run().")


def _experiment_not_found(pk: int) -> NotFound:
    return NotFound(
        f"Experiment {str(pk)!r} does not exist. Check the id, or look it up by name with "
        "get_experiment_by_name()."
    )


def _experiment_row(session: Session, pk: int) -> Any:
    row = session.execute(sa.select(_EXPERIMENTS).where(_EXPERIMENTS.c.experiment_id == pk)).first()
    if row is None:
        raise _experiment_not_found(pk)
    return row


def _experiment_tags(session: Session, pks: Sequence[int]) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    t = _EXPERIMENT_TAGS.c
    for chunk in _chunks(list(pks)):
        for pk, key, value in session.execute(
            sa.select(t.experiment_id, t.key, t.value).where(t.experiment_id.in_(chunk))
        ):
            out.setdefault(pk, {})[key] = value
    return out


def _set_experiment_lifecycle(session: Session, pk: int, stage: LifecycleStage) -> None:
    now = _now_ms()
    session.execute(
        sa.update(_EXPERIMENTS)
        .where(_EXPERIMENTS.c.experiment_id == pk)
        .values(lifecycle_stage=stage.value, last_update_time=now)
    )
    session.execute(
        sa.update(_RUNS)
        .where(_RUNS.c.experiment_id == pk, _RUNS.c.lifecycle_stage != GC_PENDING)
        .values(
            lifecycle_stage=stage.value,
            deleted_time=DatabaseClockMs() if stage == LifecycleStage.DELETED else None,
        )
    )


def _active_run_row(session: Session, run_id: str, action: str, columns: Sequence[Any] = _RUN_COLUMNS) -> Any:
    row = session.execute(sa.select(*columns).where(_RUNS.c.run_uuid == run_id)).first()
    if row is None or row.lifecycle_stage == GC_PENDING:
        raise _missing_run(session, run_id)
    if row.lifecycle_stage != LifecycleStage.ACTIVE.value:
        raise _run_deleted(run_id, action)
    return row


def _set_run_lifecycle(session: Session, run_id: str, stage: LifecycleStage) -> None:
    # A run gc has marked is not brought back: its files may already be gone.
    result = session.execute(
        sa.update(_RUNS)
        .where(_RUNS.c.run_uuid == run_id, _RUNS.c.lifecycle_stage != GC_PENDING)
        .values(
            lifecycle_stage=stage.value,
            deleted_time=DatabaseClockMs() if stage == LifecycleStage.DELETED else None,
        )
    )
    if not result.rowcount:
        raise _missing_run(session, run_id)


def _check_prefect_ids_free(tx: Transaction, flow_run_id: str | None, task_run_id: str | None) -> None:
    for column, value, label in (
        ("prefect_flow_run_id", flow_run_id, "flow_run_id"),
        ("prefect_task_run_id", task_run_id, "task_run_id"),
    ):
        if value is None:
            continue
        existing = tx.one(_RUN_ID_BY[column], (value,))
        if existing is not None:
            raise AlreadyExists(
                f"A run for Prefect {label.replace('_id', '').replace('_', ' ')} {value!r} already "
                f"exists (run {existing[0]!r}); fetch it with "
                f"get_run_by_prefect_id({label}={value!r})."
            )


def _prefect_id_taken(exc: Exception, flow_run_id: str | None, task_run_id: str | None) -> AlreadyExists:
    orig = getattr(exc, "orig", exc)  # SQLAlchemy's wrapper or the driver's own error
    constraint = getattr(getattr(orig, "diag", None), "constraint_name", None) or str(orig)
    if task_run_id is not None and (flow_run_id is None or "task_run" in constraint):
        label, value = "task_run_id", task_run_id
    elif flow_run_id is not None:
        label, value = "flow_run_id", flow_run_id
    else:  # pragma: no cover - nothing else is unique
        return AlreadyExists(f"The run collides with an existing one: {orig}")
    return AlreadyExists(
        f"A run for Prefect {label.replace('_id', '').replace('_', ' ')} {value!r} already exists "
        f"(created concurrently); fetch it with get_run_by_prefect_id({label}={value!r})."
    )


_METRIC_COLUMNS = ("run_uuid", "key", "value", "is_nan", "timestamp", "step")


# ``is_nan`` as bound per dialect: SQLite binds an exact int without the adapter lookup a
# bool costs it (about a sixth of a 100,000-point insert); PostgreSQL's column is boolean.
_NAN_FLAGS: dict[str, tuple[Any, Any]] = {"sqlite": (0, 1), "postgresql": (False, True)}


def _metric_rows(
    run_id: str, metrics: Sequence[Any], flags: tuple[Any, Any] = (False, True)
) -> list[tuple[str, str, float, bool, int, int]]:
    """Validate metric points into insert tuples (``_METRIC_COLUMNS`` order); ``flags``:
    the (not NaN, NaN) values of ``is_nan`` (``_NAN_FLAGS``)."""
    real, nan = flags
    rows: list[tuple[str, str, float, bool, int, int]] = []
    append = rows.append
    valid_keys: set[str] = set()
    int64 = 2**63
    for metric in metrics:
        try:
            key, value, timestamp, step = metric.key, metric.value, metric.timestamp, metric.step
        except AttributeError:
            raise InvalidArgument(
                f"Invalid metric {metric!r}: expected tracking_plugin.entities.Metric(key, value, "
                "timestamp, step)."
            ) from None
        # Fast path for the common exact types of an already validated key (same checks as
        # validate_metric); anything else goes through validate_metric.
        if not (
            key in valid_keys
            and type(value) is float
            and type(timestamp) is int
            and type(step) is int
            and -int64 <= timestamp < int64
            and -int64 <= step < int64
        ):
            key, value, timestamp, step = validate_metric(key, value, timestamp, step)
            valid_keys.add(key)
        if value != value:  # NaN: SQLite would store NULL, so keep a flag and a 0
            append((run_id, key, 0.0, nan, timestamp, step))
        else:
            append((run_id, key, value, real, timestamp, step))
    return rows


def _unlogged_points(
    tx: Transaction, run_id: str, rows: list[tuple[str, str, float, bool, int, int]]
) -> list[tuple[str, str, float, bool, int, int]]:
    """``rows`` without the points already in the run's history (and without repeats).

    One range read on the (run_uuid, key, step) index for the whole batch (per 500 keys).
    """
    steps = [row[5] for row in rows]
    stamps = [row[4] for row in rows]
    bounds = (min(steps), max(steps), min(stamps), max(stamps))
    logged: set[tuple[str, float, bool, int, int]] = set()
    for keys in _chunks(sorted({row[1] for row in rows}), 512):
        size, padded = in_list(keys, 512)
        logged.update(
            (key, value, bool(is_nan), timestamp, step)
            for key, value, is_nan, timestamp, step in tx.all(_logged_points(size), (run_id, *padded, *bounds))
        )
    if not logged:  # the usual case, nothing of it stored yet: only repeats within the batch go
        return list(dict.fromkeys(rows))  # (the run id is the same in every row)
    fresh = []
    for row in rows:
        identity = (row[1], row[2], row[3], row[4], row[5])
        if identity not in logged:
            logged.add(identity)
            fresh.append(row)
    return fresh


@contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    """Keep Python's cyclic garbage collector off while a large batch becomes rows.

    Each point is a new tuple the collector tracks, and 100,000 of them set off full
    collections over every object of the process (30-100 ms a batch here, a fifth of its
    cost). The rows hold no cycles; the collector is switched back on afterwards, and left
    alone if the caller had turned it off. It stays off until the rows are written and
    freed: switched on while they live, its next collection would walk them all.
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _latest_points(
    rows: Sequence[tuple[str, str, float, bool, int, int]],
) -> list[tuple[str, str, float, bool, int, int]]:
    """The greatest point of each key of a batch, sorted by key (see the "latest" upsert)."""
    # MLflow's rule: greatest (step, timestamp, value) wins; a real value beats NaN on a tie.
    # Steps usually grow within a batch, so most rows are decided by the step alone.
    best: dict[str, tuple[str, str, float, bool, int, int]] = {}
    get = best.get
    for row in rows:
        current = get(row[1])
        if (
            current is None
            or row[5] > current[5]
            or (row[5] == current[5] and _rank(row) > _rank(current))
        ):
            best[row[1]] = row
    return [best[key] for key in sorted(best)]


def _rank(row: tuple[str, str, float, bool, int, int]) -> tuple[int, int, int, float]:
    return (row[5], row[4], 0 if row[3] else 1, row[2])


def _build_block_upsert(dialect: str) -> Any:
    stmt = _insert_for(dialect, _BLOCKS)
    new, old = stmt.excluded, _BLOCKS.c
    low, high = (sa.func.least, sa.func.greatest) if dialect == "postgresql" else (sa.func.min, sa.func.max)
    return stmt.on_conflict_do_update(
        index_elements=["run_uuid", "key", "block"],
        set_={"n_points": old.n_points + new.n_points, "min_step": low(old.min_step, new.min_step),
              "max_step": high(old.max_step, new.max_step), "min_value": low(old.min_value, new.min_value),
              "max_value": high(old.max_value, new.max_value)},
    )


_BLOCKS = MetricBlockRow.__table__
_BLOCK_COLUMNS = ("run_uuid", "key", "block", "n_points", "min_step", "max_step", "min_value", "max_value")
_UPSERT_METRIC_BLOCK = Statement(_build_block_upsert, _BLOCK_COLUMNS)


def _build_block_recount(dialect: str) -> Any:
    m = _METRICS.c
    counted = (
        sa.select(
            m.run_uuid, m.key, sa.bindparam("block", type_=sa.BigInteger), sa.func.count(), sa.func.min(m.step),
            sa.func.max(m.step), sa.func.min(m.value), sa.func.max(m.value),
        )
        .where(
            m.run_uuid == sa.bindparam("run_id"),
            m.key == sa.bindparam("key"),
            m.step.between(sa.bindparam("low"), sa.bindparam("high")),
            m.is_nan == sa.false(),
        )
        .group_by(m.run_uuid, m.key)
    )
    stmt = _insert_for(dialect, _BLOCKS).from_select(list(_BLOCK_COLUMNS), counted)
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=["run_uuid", "key", "block"], set_={name: new[name] for name in _BLOCK_COLUMNS[3:]}
    )


# A block's row counted again from the history (a range scan of its key): for a batch
# some of whose points SQLite ignored as stored already (see _INSERT_METRIC).
_RECOUNT_METRIC_BLOCK = Statement(_build_block_recount, ("block", "run_id", "key", "low", "high"))


def _block_span(block: tuple[Any, ...]) -> tuple[Any, ...]:
    """A ``metric_blocks`` row as ``_RECOUNT_METRIC_BLOCK``'s values: its steps' range."""
    low = block[2] << METRIC_BLOCK_SHIFT
    return (block[2], block[0], block[1], low, low + (1 << METRIC_BLOCK_SHIFT) - 1)


def _fold_blocks(rows: list[tuple[str, str, float, bool, int, int]]) -> list[tuple[Any, ...]]:
    """The ``metric_blocks`` rows of the batch's non-NaN points (count, first/last step,
    lowest/highest value per run, key and block of 1,024 steps), sorted by (run, key,
    block): one upsert per block the batch touches."""
    blocks: dict[tuple[str, str, int], list[Any]] = {}
    for run_uuid, key, value, is_nan, _, step in rows:
        if is_nan:
            continue
        at = (run_uuid, key, step >> METRIC_BLOCK_SHIFT)
        b = blocks.get(at)
        if b is None:
            blocks[at] = [1, step, step, value, value]
        else:
            b[0] += 1
            if step < b[1]:
                b[1] = step
            if step > b[2]:
                b[2] = step
            if value < b[3]:
                b[3] = value
            if value > b[4]:
                b[4] = value
    return [(*at, *b) for at, b in sorted(blocks.items())]


_build_metric = _positional_builder(Metric)


def _pg_history_read(
    tx: Transaction, run_id: str, key: str, step_from: int, step_to: int, limit: int, offset: int
) -> tuple[list[int], list[int], list[float]]:
    """Up to ``limit`` points of a history with steps in [step_from, step_to] after
    ``offset`` of them, as three columns in one binary row."""
    row = tx.one(_PG_HISTORY_ARRAYS, (run_id, key, step_from, step_to, limit, offset), binary=True)
    steps, timestamps, values = row if row is not None else (None, None, None)
    return steps or [], timestamps or [], values or []


def _pg_history_whole(
    db: Any, run_id: str, key: str, offset: int
) -> Iterator[tuple[list[int], list[int], list[float]]]:
    """Every point of a history from ``offset`` on, in chunks of up to
    ``_PG_HISTORY_CHUNK`` (see there), in one snapshot. The run is checked before the first
    chunk is yielded; a history of one chunk is read in this thread, a longer one by a
    helper thread one chunk ahead of the consumer."""
    import queue
    import threading

    size = _PG_HISTORY_CHUNK
    tx_context = db.transaction(write=False, snapshot=True)
    tx = tx_context.__enter__()
    try:
        _check_run_readable(tx, run_id)
        first = _pg_history_read(tx, run_id, key, _STEP_MIN, _STEP_MAX, size, offset)
    except BaseException:
        tx_context.__exit__(*sys.exc_info())  # rolls back; raises its own error if it has one
        raise

    def chunks(start: tuple[list[int], list[int], list[float]]) -> Iterator[tuple[list[int], list[int], list[float]]]:
        """Each read is ``size`` points from (step >= ``step_from``, after ``skip``). A full
        one is cut before its last step, whose points may go on past it, and the next read
        starts at that step; a read holding one step only goes on within it by offset."""
        chunk, step_from, skip = start, _STEP_MIN, offset
        while True:
            steps, timestamps, values = chunk
            if len(steps) < size:
                yield chunk
                return
            last = steps[-1]
            cut = bisect.bisect_left(steps, last)
            if cut:  # every point of step `last` is at or after this chunk's start
                yield steps[:cut], timestamps[:cut], values[:cut]
                step_from, skip = last, 0
            else:
                yield chunk
                skip += size
            del chunk, steps, timestamps, values
            chunk = _pg_history_read(tx, run_id, key, step_from, _STEP_MAX, size, skip)

    def generate() -> Iterator[tuple[list[int], list[int], list[float]]]:
        try:
            if len(first[0]) < size:  # one chunk: no thread
                yield first
            else:
                ahead: queue.Queue[Any] = queue.Queue(maxsize=1)
                stop = threading.Event()

                def produce() -> None:
                    try:
                        for chunk in chunks(first):
                            if stop.is_set():
                                return
                            ahead.put(chunk)
                        ahead.put(None)
                    except BaseException as exc:  # handed to the consumer
                        ahead.put(exc)

                worker = threading.Thread(target=produce, name="mlops-history-read", daemon=True)
                worker.start()
                try:
                    while True:
                        item = ahead.get()
                        if item is None:
                            break
                        if isinstance(item, BaseException):
                            raise item
                        yield item
                finally:
                    stop.set()
                    while worker.is_alive():  # unblock a put() the consumer left waiting
                        try:
                            ahead.get(timeout=0.05)
                        except queue.Empty:
                            pass
                    worker.join()
        except BaseException:
            tx_context.__exit__(*sys.exc_info())
            raise
        else:
            tx_context.__exit__(None, None, None)

    return generate()


def _check_run_readable(tx: Transaction, run_id: str) -> None:
    """NotFound unless the run exists and is not being garbage-collected."""
    found = tx.one(_RUN_STAGE, (run_id,))
    if found is None or found[0] == GC_PENDING:
        raise _missing_run(tx, run_id)


def _check_run_active(tx: Transaction, run_id: str, action: str, *, lock: bool = False) -> None:
    """``_active_run_row`` for the logging hot path. ``lock``: the transaction writes
    metric points; on PostgreSQL the run then stays locked (FOR KEY SHARE) until it ends,
    see ``_RUN_STAGE_LOCKED``."""
    row = tx.one(_RUN_STAGE_LOCKED if lock else _RUN_STAGE, (run_id,))
    if row is None or row[0] == GC_PENDING:
        raise _missing_run(tx, run_id)
    if row[0] != LifecycleStage.ACTIVE.value:
        raise _run_deleted(run_id, action)


def _write(tx: Transaction, statement: Statement, rows: Sequence[Sequence[Any]]) -> int:
    """One ``execute`` for one row (cheaper than ``executemany``), else ``executemany``;
    returns the driver's count of rows written."""
    if len(rows) == 1:
        return int(tx.execute(statement, rows[0]).rowcount)
    return tx.executemany(statement, rows)


@functools.lru_cache(maxsize=8)  # one per subset of (status, end_time, name)
def _update_run(columns: tuple[str, ...]) -> Statement:
    """``UPDATE runs SET <columns> WHERE run_uuid AND active``: the new values, then the
    run id. PostgreSQL returns the run's ``_RUN_COLUMNS`` (no row: not active, or unknown);
    SQLite before 3.35 has no RETURNING."""
    names = tuple(f"new_{column}" for column in columns)
    stmt = (
        sa.update(_RUNS)
        .values({_RUNS.c[column]: sa.bindparam(name) for column, name in zip(columns, names, strict=True)})
        .where(
            _RUNS.c.run_uuid == sa.bindparam("run_id"),
            _RUNS.c.lifecycle_stage == sa.literal_column(f"'{LifecycleStage.ACTIVE.value}'"),
        )
    )
    return Statement(
        lambda dialect: stmt.returning(*_RUN_COLUMNS) if dialect == "postgresql" else stmt, (*names, "run_id")
    )


@functools.lru_cache(maxsize=16)  # one per in_list() length up to 512
def _logged_points(size: int) -> Statement:
    """A run's points of ``size`` keys within step and timestamp bounds."""
    m = _METRICS.c
    keys = tuple(f"key{i}" for i in range(size))
    stmt = sa.select(m.key, m.value, m.is_nan, m.timestamp, m.step).where(
        m.run_uuid == sa.bindparam("run_id"),
        m.key.in_([sa.bindparam(k) for k in keys]),
        m.step.between(sa.bindparam("min_step"), sa.bindparam("max_step")),
        m.timestamp.between(sa.bindparam("min_time"), sa.bindparam("max_time")),
    )
    return Statement(stmt, ("run_id", *keys, "min_step", "max_step", "min_time", "max_time"))


@functools.lru_cache(maxsize=16)  # one per in_list() length up to _CHUNK
def _stored_params(size: int) -> Statement:
    """The stored values of ``size`` params of a run."""
    keys = tuple(f"key{i}" for i in range(size))
    stmt = sa.select(_PARAMS.c.key, _PARAMS.c.value).where(
        _PARAMS.c.run_uuid == sa.bindparam("run_id"), _PARAMS.c.key.in_([sa.bindparam(k) for k in keys])
    )
    return Statement(stmt, ("run_id", *keys))


def _write_params(tx: Transaction, run_id: str, values: dict[str, str]) -> None:
    """Insert new params; equal values are no-ops, changed values are a Conflict.

    ``INSERT ... ON CONFLICT DO NOTHING`` first: when every row went in (the usual case:
    new keys) there is nothing to compare. Otherwise some keys existed, and the stored
    values are read and compared; a changed one raises, which rolls the whole batch back.
    Rows are sorted by key so concurrent PostgreSQL writers take locks in the same order.
    """
    keys = sorted(values)
    if len(keys) == 1:  # log_param: one execute (an executemany costs a pipeline on PostgreSQL)
        inserted = int(tx.execute(_INSERT_NEW_PARAM, (run_id, keys[0], values[keys[0]])).rowcount)
    else:
        inserted = tx.executemany(_INSERT_NEW_PARAM, [(run_id, k, values[k]) for k in keys])
    if inserted == len(keys):
        return
    for chunk in _chunks(keys):
        size, padded = in_list(chunk, _CHUNK)
        for key, old in sorted(tx.all(_stored_params(size), (run_id, *padded))):
            if values[key] != old:
                raise Conflict(
                    f"Param {key!r} of run {run_id!r} already has the value {_clip(old)}; it cannot "
                    f"change to {_clip(values[key])}. Params are immutable: log the new value "
                    "under another key or in a new run. Nothing of this batch was written."
                )


def _clip(value: str, limit: int = 200) -> str:
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"
