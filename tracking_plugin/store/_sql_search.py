"""How search and the hot paths talk SQL: the run row layout, the shared SQLAlchemy Core
statements (upserts per dialect; see :class:`~tracking_plugin.store.statements.Statement`), the
search statements compiled once per distinct input (with the SQLite join-order extension
here; the SQLite dialect of ``db.DIALECTS`` renders index hints), and the search planner
(which filter drives a query, how a page of runs is loaded). Split from
:mod:`tracking_plugin.store.sql_tracking`, which owns the store API and its transactions;
nothing here opens a transaction of its own."""

from __future__ import annotations

import functools
import itertools
import math
import operator
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.selectable import Join

from tracking_plugin.entities import (
    LifecycleStage,
    Run,
    RunData,
    RunInfo,
    RunStatus,
    _positional_builder,
)
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.search import (
    RUN_FILTER,
    And,
    Comparison,
    OrderBy,
    compare,
    key_value_filter,
    key_value_rows,
    parse_filter,
    parse_order_by,
)
from tracking_plugin.store.schema import (
    ExperimentTagRow,
    LatestMetricRow,
    ParamRow,
    RunRow,
    RunTagRow,
)

from tracking_plugin.store.db import DIALECTS, Statement, Transaction, in_list

if TYPE_CHECKING:
    from tracking_plugin.store.db import Database

__all__: list[str] = []  # private to the SQL store

# Rows per statement when a list goes into bound parameters (SQLite allows 32,766).
_CHUNK = 5_000
_EXPERIMENT_TAGS = ExperimentTagRow.__table__
_RUNS = RunRow.__table__
_PARAMS = ParamRow.__table__
_TAGS = RunTagRow.__table__
_LATEST = LatestMetricRow.__table__

_RUN_COLUMNS = (
    _RUNS.c.run_uuid,
    _RUNS.c.experiment_id,
    _RUNS.c.name,
    _RUNS.c.status,
    _RUNS.c.start_time,
    _RUNS.c.end_time,
    _RUNS.c.user_id,
    _RUNS.c.artifact_uri,
    _RUNS.c.lifecycle_stage,
    _RUNS.c.parent_run_id,
    _RUNS.c.prefect_flow_run_id,
    _RUNS.c.prefect_task_run_id,
)

_RUN_ATTRIBUTE_COLUMNS = {
    "run_id": _RUNS.c.run_uuid,
    "run_name": _RUNS.c.name,
    "status": _RUNS.c.status,
    "user_id": _RUNS.c.user_id,
    "artifact_uri": _RUNS.c.artifact_uri,
    "lifecycle_stage": _RUNS.c.lifecycle_stage,
    "start_time": _RUNS.c.start_time,
    "end_time": _RUNS.c.end_time,
}


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------ row -> entity


_STATUSES = {s.value: s for s in RunStatus}
_STAGES = {s.value: s for s in LifecycleStage}


_build_run_info = _positional_builder(RunInfo)
_build_run_data = _positional_builder(RunData)
_build_run = _positional_builder(Run)


def _run_info(row: Sequence[Any]) -> RunInfo:
    """RunInfo from a row of ``_RUN_COLUMNS`` (a SQLAlchemy Row or a driver tuple)."""
    return _build_run_info(
        row[0], str(row[1]), row[2], _STATUSES[row[3]], row[4], row[5], row[6], row[7], _STAGES[row[8]],
        row[9], row[10], row[11],
    )


def _insert_for(dialect: str, table: sa.Table) -> Any:
    module = pg_dialect if dialect == "postgresql" else sqlite_dialect
    return module.insert(table)


def _tag_upsert(table: sa.Table, keys: list[str]) -> Statement:
    def build(dialect: str) -> Any:
        stmt = _insert_for(dialect, table)
        return stmt.on_conflict_do_update(index_elements=keys, set_={"value": stmt.excluded.value})

    return Statement(build, (*keys, "value"))


def _build_latest_upsert(dialect: str) -> Any:
    # Replace the stored point only with a greater one: (step, timestamp), then a real value
    # over NaN, then the greater value. Concurrent writers therefore never move it back.
    stmt = _insert_for(dialect, _LATEST)
    new, old = stmt.excluded, _LATEST.c
    same_step = new.step == old.step
    same_time = sa.and_(same_step, new.timestamp == old.timestamp)
    greater = sa.or_(
        new.step > old.step,
        sa.and_(same_step, new.timestamp > old.timestamp),
        sa.and_(same_time, old.is_nan.is_(True), new.is_nan.is_(False)),
        sa.and_(same_time, old.is_nan == new.is_nan, new.value > old.value),
    )
    return stmt.on_conflict_do_update(
        index_elements=["run_uuid", "key"],
        set_={"value": new.value, "is_nan": new.is_nan, "timestamp": new.timestamp, "step": new.step},
        where=greater,
    )


# Metric points as tuples in this column order, for the history and latest-point writes.
_METRIC_COLUMNS = ("run_uuid", "key", "value", "is_nan", "timestamp", "step")

# Upserts are dialect constructs: each Statement builds its own per dialect, once
# (building one, ``excluded`` copies every column, costs more than executing it).
_UPSERT_RUN_TAG = _tag_upsert(_TAGS, ["run_uuid", "key"])
_UPSERT_EXPERIMENT_TAG = _tag_upsert(_EXPERIMENT_TAGS, ["experiment_id", "key"])
_UPSERT_LATEST_METRIC = Statement(_build_latest_upsert, _METRIC_COLUMNS)
_INSERT_NEW_PARAM = Statement(
    lambda dialect: _insert_for(dialect, _PARAMS).on_conflict_do_nothing(index_elements=["run_uuid", "key"]),
    ("run_uuid", "key", "value"),
)


_Compiled = tuple[str, tuple[Any, ...]]  # SQL in the driver's style, its parameters


def _compile(stmt: Any, dialect: str) -> _Compiled:
    """``stmt`` compiled for the driver with the values it binds, in the SQL's order.
    Search statements bind only plain strings and numbers, so no bind processing is
    needed."""
    compiled = stmt.compile(dialect=DIALECTS[dialect], compile_kwargs={"render_postcompile": True})
    params = compiled.params
    return compiled.string, tuple(params[k] for k in compiled.positiontup)  # type: ignore[union-attr]


def _run(tx: Transaction, statement: _Compiled, *, binary: bool = False) -> list[tuple[Any, ...]]:
    """Rows of a compiled statement, as plain tuples (a page of 1,000 runs as SQLAlchemy
    Rows costs as much as the page's SQL on SQLite). ``binary``: PostgreSQL sends the rows
    in binary (numbers decode without parsing text)."""
    sql, params = statement
    if binary:
        tx.cursor.execute(sql, params, binary=True)
        return tx.cursor.fetchall()  # type: ignore[no-any-return]
    return tx.execute_compiled(sql, params).fetchall()  # type: ignore[no-any-return]


def _comparisons(expr: Any) -> list[Comparison]:
    """The comparisons of a filter tree, in the order they were written."""
    if expr is None:
        return []
    if isinstance(expr, Comparison):
        return [expr]
    return [leaf for operand in expr.operands for leaf in _comparisons(operand)]


# Building and compiling a search statement costs ~2 ms; a repeated search (a dashboard
# polling, the next page) reuses it. Keys are the statement's inputs, so entries never go
# stale; filters and orders are re-parsed here, which is cheap and keeps the key hashable.
@functools.lru_cache(maxsize=256)
def _search_sql(
    dialect: str, filter_string: str, order_by: tuple[str, ...], experiment_pks: tuple[int, ...],
    stages: tuple[str, ...], drivers: tuple[int, ...] | None, limit: int, offset: int,
    after: tuple[int, str] | None = None,
) -> _Compiled:
    """The page's statement, selecting ``_RUN_COLUMNS`` (from ``ix_runs_search_rows`` on
    SQLite when drivers supply the candidate runs). ``after``: (start_time, run_uuid) of
    the previous page's last run in the default order (start_time DESC, run_uuid): the
    page starts after it (keyset pagination; PostgreSQL reads it from
    ``ix_runs_experiment_start``)."""
    expr = parse_filter(filter_string, RUN_FILTER)
    orders = _parse_orders(list(order_by), RUN_FILTER)
    leaves = _comparisons(expr)
    ids = None if drivers is None else {id(leaves[i]) for i in drivers}
    covering = dialect == "sqlite" and bool(ids)
    stmt = _runs_query(expr, orders, experiment_pks, stages, dialect, drivers=ids, covering=covering)
    if after is not None:
        start = _RUNS.c.start_time
        # ``start <= t`` is implied by the OR; said alone it bounds the index range scan.
        stmt = stmt.where(start <= after[0], sa.or_(start < after[0], _RUNS.c.run_uuid > after[1]))
    sql, params = _compile(stmt.limit(limit).offset(offset), dialect)
    if dialect == "postgresql":
        sql = _PG_PAGE_SQL.format(runs=sql, size=int(limit) - 1)
    return sql, params


# PostgreSQL: the page's statement also returns the latest metrics, params and tags of its
# runs, in one round trip (see _pg_page). ``runs``: the search statement, whose rows come
# ordered (row_number() over its sorted rows numbers them in that order: the idiom
# _PG_HISTORY_ARRAYS relies on too); ``size``: the page size (the statement reads one run
# more, to tell whether another page follows; that run's data is not read). Each row is
# (kind, n, run_uuid, then the other ``_RUN_COLUMNS`` or a key/value row laid over them):
# kind 0 = a run (n: its place), 1 = a latest metric (key, timestamp, step in the name,
# start_time, end_time columns; value and is_nan last), 2 = a param, 3 = a tag (key and
# value in the name and status columns). Before, the page's run ids went back to the
# server as an array three times (= ANY lookups): three round trips, and encoding the
# array cost the client more than building the page.
_PG_PAGE_SQL = (
    "WITH page AS (SELECT row_number() OVER () AS n, p.* FROM ({runs}) AS p) "
    "SELECT 0 AS kind, page.n, page.run_uuid, page.experiment_id, page.name, page.status, page.start_time, "
    "page.end_time, page.user_id, page.artifact_uri, page.lifecycle_stage, page.parent_run_id, "
    "page.prefect_flow_run_id, page.prefect_task_run_id, CAST(NULL AS FLOAT8) AS value, "
    "CAST(NULL AS BOOLEAN) AS is_nan FROM page "
    "UNION ALL SELECT 1, NULL, m.run_uuid, NULL, m.key, NULL, m.timestamp, m.step, NULL, NULL, NULL, NULL, NULL, "
    "NULL, m.value, m.is_nan FROM page JOIN latest_metrics AS m ON m.run_uuid = page.run_uuid WHERE page.n <= {size} "
    "UNION ALL SELECT 2, NULL, kv.run_uuid, NULL, kv.key, kv.value, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL FROM page JOIN params AS kv ON kv.run_uuid = page.run_uuid WHERE page.n <= {size} "
    "UNION ALL SELECT 3, NULL, kv.run_uuid, NULL, kv.key, kv.value, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL FROM page JOIN tags AS kv ON kv.run_uuid = page.run_uuid WHERE page.n <= {size}"
)


_PLACE = operator.itemgetter(1)


def _pg_page(rows: Sequence[Any], size: int) -> tuple[list[tuple[Any, ...]], list[Run]]:
    """The rows of a PostgreSQL page statement (``_PG_PAGE_SQL``) as its run rows (of
    ``_RUN_COLUMNS``, in the search's order, up to ``size + 1``) and the Runs of the first
    ``size`` of them."""
    ordered: list[tuple[Any, ...]] = []
    metrics: dict[str, dict[str, float]] = {}
    points: dict[str, dict[str, tuple[int, int]]] = {}
    params: dict[str, dict[str, str]] = {}
    tags: dict[str, dict[str, str]] = {}
    nan = math.nan
    for row in rows:
        kind = row[0]
        if kind == 0:
            ordered.append(row)
            continue
        run_uuid, key = row[2], row[4]
        if kind == 1:
            metrics.setdefault(run_uuid, {})[key] = nan if row[15] else row[14]
            points.setdefault(run_uuid, {})[key] = (row[6], row[7])
        elif kind == 2:
            params.setdefault(run_uuid, {})[key] = row[5]
        else:
            tags.setdefault(run_uuid, {})[key] = row[5]
    ordered.sort(key=_PLACE)
    run_rows = [row[2:14] for row in ordered]
    runs = [
        _build_run(
            _run_info(r),
            _build_run_data(metrics.get(r[0], {}), params.get(r[0], {}), tags.get(r[0], {}), points.get(r[0], {})),
        )
        for r in run_rows[:size]
    ]
    return run_rows, runs


@functools.lru_cache(maxsize=256)
def _count_sql(filter_string: str, threshold: int) -> tuple[tuple[int, ...], _Compiled | None]:
    """One SQLite statement counting, up to ``threshold``, the key/value rows matching each
    selective comparison of the filter; returns their positions and the statement."""
    leaves = _comparisons(parse_filter(filter_string, RUN_FILTER))
    positions = tuple(
        i for i, cmp in enumerate(leaves)
        if cmp.entity_type != "attribute" and cmp.op not in ("!=", "NOT IN", "IS NULL")
    )
    if not positions:
        return positions, None
    counts = []
    for i in positions:
        table = _KV_TABLES[leaves[i].entity_type]
        matching = sa.select(sa.literal(1)).select_from(table).where(key_value_rows(table, leaves[i], dialect="sqlite"))
        counts.append(sa.select(sa.func.count()).select_from(matching.limit(threshold).subquery()).scalar_subquery())
    return positions, _compile(sa.select(*counts), "sqlite")


@functools.lru_cache(maxsize=32)  # one entry per in_list() length
def _page_statements(size: int) -> tuple[Statement, Statement, Statement]:
    """The latest metrics, params and tags of ``size`` runs (parameters ``id0``...)."""
    names = tuple(f"id{i}" for i in range(size))
    ids = [sa.bindparam(name) for name in names]
    latest, params, tags = _LATEST.c, _PARAMS.c, _TAGS.c
    return (
        Statement(
            sa.select(latest.run_uuid, latest.key, latest.value, latest.is_nan, latest.timestamp, latest.step)
            .where(latest.run_uuid.in_(ids)),
            names,
        ),
        Statement(sa.select(params.run_uuid, params.key, params.value).where(params.run_uuid.in_(ids)), names),
        Statement(sa.select(tags.run_uuid, tags.key, tags.value).where(tags.run_uuid.in_(ids)), names),
    )


def _page_statements_any() -> tuple[Statement, Statement, Statement]:
    """PostgreSQL: the same three lookups with one array parameter (``run_uuid =
    ANY(:run_ids)``), so a page costs one statement per table whatever its size."""
    latest, params, tags = _LATEST.c, _PARAMS.c, _TAGS.c
    ids = sa.any_(sa.bindparam("run_ids"))
    return (
        Statement(sa.select(latest.run_uuid, latest.key, latest.value, latest.is_nan, latest.timestamp, latest.step)
                  .where(latest.run_uuid == ids), ("run_ids",)),
        Statement(sa.select(params.run_uuid, params.key, params.value).where(params.run_uuid == ids), ("run_ids",)),
        Statement(sa.select(tags.run_uuid, tags.key, tags.value).where(tags.run_uuid == ids), ("run_ids",)),
    )


_PG_PAGE_STATEMENTS = _page_statements_any()


def _load_runs(tx: Transaction, rows: Sequence[Any]) -> list[Run]:
    """Build Run entities for ``rows`` (of ``_RUN_COLUMNS``), loading their latest
    metrics, params and tags."""
    if not rows:
        return []
    ids = [r[0] for r in rows]
    metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
    points: dict[str, dict[str, tuple[int, int]]] = {i: {} for i in ids}
    params: dict[str, dict[str, str]] = {i: {} for i in ids}
    tags: dict[str, dict[str, str]] = {i: {} for i in ids}
    nan = math.nan
    # PostgreSQL: one statement per table for the whole page (an array parameter).
    for chunk in [ids] if tx.postgres else _chunks(ids):
        # Driver-level queries returning plain tuples: building SQLAlchemy rows for a page of
        # 1,000 runs costs as much as the lookups themselves.
        if tx.postgres:
            latest, params_of, tags_of = _PG_PAGE_STATEMENTS
            args: tuple[Any, ...] = (list(chunk),)
        else:
            size, args = in_list(chunk, _CHUNK)
            latest, params_of, tags_of = _page_statements(size)
        for run_uuid, key, value, is_nan, timestamp, step in tx.all(latest, args):
            metrics[run_uuid][key] = nan if is_nan else value
            points[run_uuid][key] = (timestamp, step)
        for run_uuid, key, value in tx.all(params_of, args):
            params[run_uuid][key] = value
        for run_uuid, key, value in tx.all(tags_of, args):
            tags[run_uuid][key] = value
    return [
        _build_run(_run_info(r), _build_run_data(metrics[r[0]], params[r[0]], tags[r[0]], points[r[0]])) for r in rows
    ]


_KV_TABLES = {"metric": _LATEST, "param": _PARAMS, "tag": _TAGS}


def _runs_query(
    expr: Any, orders: Sequence[OrderBy], experiment_pks: Sequence[int], stages: Sequence[str], dialect: str,
    *, drivers: set[int] | None, covering: bool = False,
) -> Any:
    """SELECT runs matching ``expr`` in ``orders`` (then start_time DESC, run_uuid).

    ``covering`` reads the runs through SQLite's ``ix_runs_search_rows`` (run_uuid,
    start_time, experiment_id, lifecycle_stage, then every other run column): candidate
    runs coming from the drivers are looked up, checked, ordered and returned from that
    index alone, one B-tree lookup each (through the primary key, SQLite would look up the
    run's rowid and then its row).

    Key/value comparisons whose ``id()`` is in ``drivers`` (all of them when ``drivers``
    is None) compile to ``run_uuid IN (SELECT ...)``, the others to correlated EXISTS
    probes (see ``_drivers``).
    """

    def leaf(cmp: Comparison) -> Any:
        if cmp.entity_type == "attribute":
            return compare(_RUN_ATTRIBUTE_COLUMNS[cmp.key], cmp.op, cmp.value, dialect=dialect)
        table = _KV_TABLES[cmp.entity_type]
        return key_value_filter(
            _RUNS.c.run_uuid, table, owner_fk="run_uuid", comparison=cmp, dialect=dialect,
            prefix_indexed=table is not _LATEST, correlated=drivers is not None and id(cmp) not in drivers,
        )

    def fold(node: Any) -> Any:
        if isinstance(node, Comparison):
            return leaf(node)
        if isinstance(node, And) and drivers:
            joined = _joined_driver(node, drivers, dialect)
            if joined is not None:
                condition, done = joined
                return sa.and_(condition, *(fold(op) for op in node.operands if id(op) not in done))
        parts = [fold(operand) for operand in node.operands]
        return sa.and_(*parts) if isinstance(node, And) else sa.or_(*parts)

    stmt = sa.select(*_RUN_COLUMNS)
    if covering:
        # The runs come from the drivers' IN lists; without statistics SQLite would rather
        # walk the experiment index over every run.
        stmt = stmt.with_hint(_RUNS, "INDEXED BY ix_runs_search_rows", "sqlite")
    stmt = stmt.where(_RUNS.c.experiment_id.in_(experiment_pks), _RUNS.c.lifecycle_stage.in_(stages))
    if expr is not None:
        stmt = stmt.where(fold(expr))
    clauses: list[Any] = []
    for number, order in enumerate(orders):
        if order.entity_type == "attribute":
            column = _RUN_ATTRIBUTE_COLUMNS[order.key]
            missing_rank: Any = sa.case((column.is_(None), 1), else_=0)
        else:
            table = _KV_TABLES[order.entity_type]
            joined = table.alias(f"order_{number}")
            stmt = stmt.outerjoin(joined, sa.and_(joined.c.run_uuid == _RUNS.c.run_uuid, joined.c.key == order.key))
            column = joined.c.value
            if table is _LATEST:
                missing_rank = sa.case((joined.c.run_uuid.is_(None), 2), (joined.c.is_nan.is_(True), 1), else_=0)
            else:
                missing_rank = sa.case((joined.c.run_uuid.is_(None), 1), else_=0)
        if dialect == "postgresql" and isinstance(column.type, sa.String):
            # Byte order, as SQLite: the server's locale must not change the order.
            column = column.collate("C")
        # Missing values sort last in both directions (MLflow's rule).
        clauses.append(missing_rank)
        clauses.append(column.asc() if order.ascending else column.desc())
    if not any(o.entity_type == "attribute" and o.key == "start_time" for o in orders):
        clauses.append(_RUNS.c.start_time.desc())
    clauses.append(_RUNS.c.run_uuid.asc())
    return stmt.order_by(*clauses)


class _OrderedJoin(Join):
    """An inner join that SQLite must run in the written order (``CROSS JOIN ... ON``)."""

    inherit_cache = True


@compiles(_OrderedJoin)
def _compile_ordered_join(
    join: _OrderedJoin, compiler: Any, asfrom: bool = False, from_linter: Any = None, **kw: Any
) -> str:
    if from_linter is not None:  # as SQLAlchemy's visit_join: the two sides are joined
        from_linter.edges.update(itertools.product(join.left._from_objects, join.right._from_objects))
    keyword = " CROSS JOIN " if compiler.dialect.name == "sqlite" else " JOIN "
    return (
        join.left._compiler_dispatch(compiler, asfrom=True, from_linter=from_linter, **kw)
        + keyword
        + join.right._compiler_dispatch(compiler, asfrom=True, from_linter=from_linter, **kw)
        + " ON "
        + join.onclause._compiler_dispatch(compiler, from_linter=from_linter, **kw)
    )


def _joined_driver(node: And, drivers: set[int], dialect: str) -> tuple[Any, set[int]] | None:
    """``run_uuid IN (SELECT ... FROM driver CROSS JOIN probe1 ON ... CROSS JOIN ...)``.

    The AND's driver comparison is scanned through its key/value index and every other
    key/value comparison of the AND is joined to it on (run, key), in that order: a join
    probe reads the (key, value, run) index or the primary key, where a correlated EXISTS
    per candidate costs SQLite about three times as much. ``IS NULL`` (a NOT EXISTS)
    stays a probe. None when the AND has no such pair. Returns the condition and the ids
    of the operands it covers.
    """
    kv = [op for op in node.operands if isinstance(op, Comparison) and op.entity_type != "attribute"]
    driver = next((op for op in kv if id(op) in drivers), None)
    probes = [op for op in kv if op is not driver and id(op) not in drivers and op.op != "IS NULL"]
    if driver is None or not probes:
        return None
    source = _KV_TABLES[driver.entity_type].alias("f0")
    joined: Any = source
    for number, probe in enumerate(probes, start=1):
        table = _KV_TABLES[probe.entity_type].alias(f"f{number}")
        on = sa.and_(table.c.run_uuid == source.c.run_uuid, key_value_rows(table, probe, dialect=dialect))
        joined = _OrderedJoin(joined, table, on)
    subquery = sa.select(source.c.run_uuid).select_from(joined).where(key_value_rows(source, driver, dialect=dialect))
    return _RUNS.c.run_uuid.in_(subquery), {id(driver), *(id(p) for p in probes)}


# SQLite only (PostgreSQL has no rowid): every run ever created has a rowid up to this.
_MAX_RUN_ROWID = Statement(sa.text("SELECT max(rowid) FROM runs"))


def _drivers(
    tx: Transaction, filter_string: str, expr: Any, orders: Sequence[OrderBy], needed: int
) -> tuple[int, ...] | None:
    """Choose, on SQLite, which comparisons drive the search (their positions in
    :func:`_comparisons` order); None means all of them.

    SQLite keeps no statistics on values, and left alone it builds every ``IN`` list in
    full (one table lookup per matching row). So we count matching key/value rows with
    index-only queries (one statement), capped at a threshold, and pick one of two plans:

    - few matches: start from the rarest comparison of each AND (``IN``) and probe the
      other comparisons per candidate run (joined, or ``EXISTS``);
    - many matches (``matches**2 >= needed * runs``) and a page ordered by run
      attributes: walk runs in order and probe every comparison (all ``EXISTS``); the
      page fills after about ``needed * runs / matches`` runs.

    PostgreSQL has statistics and plans semi-joins itself: it gets plain ``IN``.
    """
    if tx.postgres or expr is None:
        return None
    # An upper bound on the runs searched (all runs ever created), read in O(log n).
    runs = tx.one(_MAX_RUN_ROWID)[0] or 0  # type: ignore[index]
    threshold = math.isqrt(needed * runs) + 1
    positions, statement = _count_sql(filter_string, threshold)
    leaves = _comparisons(expr)
    estimates: dict[int, int] = {}
    if statement is not None:
        estimates = {id(leaves[i]): count for i, count in zip(positions, _run(tx, statement)[0])}

    def estimate(node: Any) -> int:
        if isinstance(node, Comparison):
            count = estimates.get(id(node), threshold)  # attributes and negations: assume many
        else:
            counts = [estimate(operand) for operand in node.operands]
            count = min(counts) if isinstance(node, And) else min(threshold, sum(counts))
        estimates[id(node)] = count
        return count

    def choose(node: Any) -> set[int]:
        if isinstance(node, Comparison):
            return {id(node)} if node.entity_type != "attribute" else set()
        if isinstance(node, And):
            return choose(min(node.operands, key=lambda operand: estimates[id(operand)]))
        return set().union(*(choose(operand) for operand in node.operands))

    if estimate(expr) >= threshold and all(o.entity_type == "attribute" for o in orders):
        chosen: set[int] = set()
    else:
        chosen = choose(expr)
    return tuple(i for i, leaf in enumerate(leaves) if id(leaf) in chosen)


def _parse_orders(order_by: Sequence[str] | None, spec: Any, default: Sequence[str] = ()) -> list[OrderBy]:
    if order_by is None or len(order_by) == 0:
        order_by = list(default)
    if isinstance(order_by, str):
        order_by = [order_by]
    orders: list[OrderBy] = []
    seen: set[tuple[str, str]] = set()
    for clause in order_by:
        order = parse_order_by(clause, spec)
        if (order.entity_type, order.key) in seen:
            raise InvalidArgument(
                f"order_by names {clause!r} twice ({list(order_by)!r}); give each key once."
            )
        seen.add((order.entity_type, order.key))
        orders.append(order)
    return orders
