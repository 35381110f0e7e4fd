"""search_runs on PostgreSQL at scale: a constant number of statements per page, whatever
the page size, and query plans that use the indexes meant for each search shape.

Runs are bulk-loaded with COPY into the store's own tables (as bench/pg.py does), then
ANALYZEd, so the planner sees the statistics of a real experiment. Statements are counted
at the driver: the search runs on the DB-API cursor (``Database.transaction``), below
SQLAlchemy's events, so every new connection of the store's engine gets a counting cursor
class.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from support import create_pg_database
from tracking_plugin.store.db import Database
from tracking_plugin.store.sql import SqlStore

N_RUNS = 20_000
MODELS = 100  # params.model takes 100 values: an equality filter keeps 1% of the runs


class _Counting(psycopg.Cursor):  # type: ignore[type-arg]
    """A psycopg cursor that records every statement it sends (SQL, params)."""

    log: list[tuple[str, Any]] = []

    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
        _Counting.log.append((str(query), params))
        return super().execute(query, params, **kw)

    def executemany(self, query: Any, params_seq: Any, **kw: Any) -> Any:
        _Counting.log.append((str(query), params_seq))
        return super().executemany(query, params_seq, **kw)


def _dsn(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


def _load(url: str, experiment_id: int, n_runs: int) -> None:
    """``n_runs`` finished runs: param ``model`` (m0..m99), tag ``team``, metric ``acc``
    (latest and history, uniform in [0, 1) by a fixed rule), plus ``loss`` on every run."""
    now = int(time.time() * 1000)
    ids = [f"{i:032x}" for i in range(n_runs)]
    acc = [((i * 7919) % n_runs) / n_runs for i in range(n_runs)]
    with psycopg.connect(_dsn(url)) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY runs (run_uuid, name, experiment_id, user_id, status, start_time, end_time, artifact_uri, "
            "lifecycle_stage) FROM STDIN"
        ) as copy:
            for i, rid in enumerate(ids):
                copy.write_row((rid, f"r{i}", experiment_id, "u", "FINISHED", now + i, now + i, "/tmp/a", "active"))
        with cur.copy("COPY params (run_uuid, key, value) FROM STDIN") as copy:
            for i, rid in enumerate(ids):
                copy.write_row((rid, "model", f"m{i % MODELS}"))
        with cur.copy("COPY tags (run_uuid, key, value) FROM STDIN") as copy:
            for i, rid in enumerate(ids):
                copy.write_row((rid, "team", f"t{i % 7}"))
        for table in ("latest_metrics", "metrics"):
            with cur.copy(f"COPY {table} (run_uuid, key, value, is_nan, timestamp, step) FROM STDIN") as copy:
                for i, rid in enumerate(ids):
                    copy.write_row((rid, "acc", acc[i], False, now, 0))
                    copy.write_row((rid, "loss", 1 - acc[i], False, now, 0))
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE")


@pytest.fixture(scope="module")
def big_store(pg_server: str) -> Iterator[tuple[SqlStore, str]]:
    """A PostgreSQL store holding N_RUNS runs in one experiment, its connections counting
    statements; yields (store, experiment id)."""
    url = create_pg_database(pg_server)
    db = Database(url)
    db.upgrade()
    db.engine.dispose()

    @event.listens_for(db.engine, "connect")
    def _counting(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.cursor_factory = _Counting

    with SqlStore(db) as store:
        exp = store.create_experiment("scale")
        _load(url, int(exp), N_RUNS)
        yield store, exp


def _statements(fn: Any) -> list[tuple[str, Any]]:
    _Counting.log = []
    fn()
    return list(_Counting.log)


@pytest.mark.parametrize(
    "filter_string", ["", "metrics.acc > 0.5", "params.model = 'm7' and metrics.acc > 0.1", "tags.team = 't3'"]
)
def test_statements_per_search_page_do_not_grow_with_the_page(big_store: tuple[SqlStore, str], filter_string: str) -> None:
    store, exp = big_store
    counts = {}
    for page in (1, 10, 1000, 6000, 12_000):
        statements = _statements(lambda: store.search_runs([exp], filter_string, max_results=page))
        counts[page] = [sql.split()[0] for sql, _ in statements if sql.strip() != ";"]  # no idle ping
    # Page one of 12,000 runs and page one of 1 run cost the same statements: the search
    # settings, then one statement returning the page's runs with their metrics, params
    # and tags (it was four: the runs, then one lookup per table).
    assert all(c == ["SELECT", "WITH"] for c in counts.values()), counts
    # The next page (page token) too.
    first = store.search_runs([exp], filter_string, max_results=6000)
    if first.token:
        following = _statements(lambda: store.search_runs([exp], filter_string, max_results=6000, page_token=first.token))
        assert [sql.split()[0] for sql, _ in following if sql.strip() != ";"] == ["SELECT", "WITH"]


def test_a_big_page_loads_every_runs_data(big_store: tuple[SqlStore, str]) -> None:
    """The batched lookups return the same data as a run-by-run read (no run is left
    without its metrics, params or tags)."""
    store, exp = big_store
    page = store.search_runs([exp], "metrics.acc >= 0", max_results=12_000)
    assert len(page) == 12_000
    assert all(set(r.data.metrics) == {"acc", "loss"} for r in page)
    assert all(r.data.params["model"].startswith("m") and r.data.tags["team"].startswith("t") for r in page)
    sample = page[5_555]
    assert store.get_run(sample.info.run_id).data == sample.data


def _plan_nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def _search_settings(conn: psycopg.Connection) -> None:  # type: ignore[type-arg]
    """What search_runs sets for its transaction (custom plans, cached page costs), on a
    connection that then EXPLAINs the store's statements in the same transaction."""
    from tracking_plugin.store.sql_tracking import _CUSTOM_PLANS

    conn.execute(_CUSTOM_PLANS.compile("postgresql")[0])


def _search_statement(statements: list[tuple[str, Any]]) -> tuple[str, Any]:
    """The page's statement (the runs, then their metrics, params and tags) of a search."""
    found = [s for s in statements if s[0].lstrip().startswith("WITH page AS")]
    assert len(found) == 1, [s[0][:80] for s in statements]
    return found[0]


def test_a_pages_lookups_probe_the_primary_keys(big_store: tuple[SqlStore, str]) -> None:
    """The page's metrics/params/tags (read in the page's own statement, joined to its
    runs) are read by primary-key probes, not by reading the whole table (the planner's
    choice with PostgreSQL's default random_page_cost for a page of 250 of 20,000 runs)."""
    store, exp = big_store
    sql, params = _search_statement(
        _statements(lambda: store.search_runs([exp], "metrics.acc > 0.5", max_results=250))
    )
    with psycopg.connect(_dsn(store.db.uri)) as conn:
        _search_settings(conn)
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()[0][0]["Plan"]
    nodes = list(_plan_nodes(plan))
    seq = [n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan"]
    assert not seq, f"sequential scan of {seq}:\n{json.dumps(plan, indent=1)[:3000]}"
    used = {n.get("Index Name") for n in nodes if "Index" in n["Node Type"]}
    assert {"pk_latest_metrics", "pk_params", "pk_tags"} <= used, json.dumps(plan, indent=1)[:3000]


def test_a_page_statement_returns_the_same_runs_as_run_by_run_reads(big_store: tuple[SqlStore, str]) -> None:
    """Every run of a page, in every order, carries exactly what get_run reads for it; the
    run past the page (read to know another page follows) is not returned."""
    store, exp = big_store
    for order_by in (None, ["metrics.acc DESC"], ["params.model"], ["tags.team DESC", "attributes.run_name"]):
        page = store.search_runs([exp], "params.model = 'm3'", max_results=150, order_by=order_by)
        assert len(page) == 150 and page.token
        for run in page[::37] + [page[-1]]:
            assert store.get_run(run.info.run_id) == run
        rest = store.search_runs([exp], "params.model = 'm3'", max_results=150, order_by=order_by, page_token=page.token)
        assert len(rest) == N_RUNS // MODELS - 150
        assert not {r.info.run_id for r in rest} & {r.info.run_id for r in page}


# shape -> (filter, order_by, page, indexes the plan must use)
SHAPES = {
    "metric filter": ("metrics.acc > 0.995", None, 1, {"ix_latest_metrics_key_value"}),
    "param filter": ("params.model = 'm7'", None, 1, {"ix_params_key_value_prefix"}),
    "metric + param": ("metrics.acc > 0.9 and params.model = 'm7'", None, 1, {"ix_params_key_value_prefix"}),
    "order by metric": ("params.model = 'm7'", ["metrics.acc DESC"], 1, {"ix_params_key_value_prefix"}),
    "page token": ("metrics.acc > 0.99", None, 2, {"ix_latest_metrics_key_value"}),
}
KV_TABLES = {"metrics", "latest_metrics", "params", "tags"}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_search_shapes_use_their_indexes(big_store: tuple[SqlStore, str], shape: str) -> None:
    store, exp = big_store
    filter_string, order_by, page, wanted = SHAPES[shape]
    token = None
    for _ in range(page - 1):
        token = store.search_runs([exp], filter_string, max_results=50, order_by=order_by).token
        assert token is not None
    statements = _statements(
        lambda: store.search_runs([exp], filter_string, max_results=50, order_by=order_by, page_token=token)
    )
    sql, params = _search_statement(statements)
    with psycopg.connect(_dsn(store.db.uri)) as conn:
        _search_settings(conn)
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()[0][0]["Plan"]
    nodes = list(_plan_nodes(plan))
    seq = [n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in KV_TABLES]
    assert not seq, f"{shape}: sequential scan of {seq}:\n{json.dumps(plan, indent=1)[:4000]}"
    used = {n.get("Index Name") for n in nodes if "Index" in n["Node Type"]}
    assert wanted <= used, f"{shape}: indexes used {used}, wanted {wanted}:\n{json.dumps(plan, indent=1)[:4000]}"


@pytest.mark.parametrize(("filter_string", "page"), [("", 6000), ("params.model = 'm7'", 50)])
def test_keyset_pages_return_every_run_once_in_order(
    big_store: tuple[SqlStore, str], filter_string: str, page: int
) -> None:
    """Page tokens in the default order carry the last run's (start_time, run_id); walking
    them returns exactly the runs of one big page, in its order."""
    from tracking_plugin.search import decode_page_after

    store, exp = big_store
    everything = [r.info.run_id for r in store.search_runs([exp], filter_string, max_results=50_000)]
    walked: list[str] = []
    token = None
    while True:
        result = store.search_runs([exp], filter_string, max_results=page, page_token=token)
        walked.extend(r.info.run_id for r in result)
        token = result.token
        if not token:
            break
        last = result[-1].info
        assert decode_page_after(token) == (last.start_time, last.run_id)
    assert walked == everything
    assert len(everything) == (N_RUNS if not filter_string else N_RUNS // MODELS)


def test_a_keyset_page_starts_in_the_index_at_the_token(big_store: tuple[SqlStore, str]) -> None:
    """Page 40 of 50 runs in the default order reads about 50 runs, not 2,000: the token's
    start_time bounds the index range scan (no OFFSET, no sort of every run)."""
    store, exp = big_store
    token = None
    for _ in range(39):
        token = store.search_runs([exp], "", max_results=50, page_token=token).token
    statements = _statements(lambda: store.search_runs([exp], "", max_results=50, page_token=token))
    sql, params = _search_statement(statements)
    with psycopg.connect(_dsn(store.db.uri)) as conn:
        _search_settings(conn)
        plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()[0][0]["Plan"]
    nodes = list(_plan_nodes(plan))
    # An Incremental Sort (ties of start_time ordered by run id) is fine; a full Sort is not.
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Seq Scan")], json.dumps(plan)
    scans = [n for n in nodes if n.get("Relation Name") == "runs"]
    assert len(scans) == 1 and "start_time" in scans[0].get("Index Cond", ""), json.dumps(plan)
    read = scans[0]["Actual Rows"] + scans[0].get("Rows Removed by Filter", 0)
    assert read <= 60, json.dumps(plan)


def test_a_forged_keyset_token_is_refused() -> None:
    import base64

    from tracking_plugin.errors import InvalidArgument
    from tracking_plugin.search import decode_page_after, decode_page_token

    forged = base64.urlsafe_b64encode(b'{"offset": 10, "after": ["x", 3]}').decode()
    assert decode_page_token(forged) == 10
    with pytest.raises(InvalidArgument, match="Invalid page_token"):
        decode_page_after(forged)
