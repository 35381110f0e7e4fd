"""PostgreSQL connection checkout: a pooled connection used a moment ago goes out without
a ping round trip, and a connection the server ended (a restart, pg_terminate_backend) is
still never handed out (the pool replaces it, as SQLAlchemy's pool_pre_ping did).

Statements are counted at the driver (a counting cursor class on every connection of the
store's engine): the ping is a statement like any other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from support import create_pg_database
from tracking_plugin.entities import Param, RunStatus, RunTag
from tracking_plugin.errors import Conflict
from tracking_plugin.store import db as db_module
from tracking_plugin.store.db import Database
from tracking_plugin.store.sql import SqlStore


class _Counting(psycopg.Cursor):  # type: ignore[type-arg]
    log: list[str] = []

    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
        _Counting.log.append(str(query))
        return super().execute(query, params, **kw)

    def executemany(self, query: Any, params_seq: Any, **kw: Any) -> Any:
        _Counting.log.append(str(query))
        return super().executemany(query, params_seq, **kw)


@pytest.fixture
def counted(pg_server: str) -> Iterator[tuple[SqlStore, str]]:
    url = create_pg_database(pg_server)
    db = Database(url, pool_size=1, max_overflow=0)
    db.upgrade()
    db.engine.dispose()

    @event.listens_for(db.engine, "connect")
    def _counting(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.cursor_factory = _Counting

    with SqlStore(db) as store:
        yield store, url


def _statements(fn: Any) -> list[str]:
    _Counting.log = []
    fn()
    return list(_Counting.log)


def test_a_connection_used_a_moment_ago_is_not_pinged(counted: tuple[SqlStore, str]) -> None:
    store, _ = counted
    exp = store.create_experiment("e")
    run_id = store.create_run(exp, user_id="u", start_time=1_700_000_000_000).info.run_id
    sent = _statements(lambda: store.log_batch(run_id, params=[Param("a", "1")]))
    # The run check and the insert (what log_param sends): no ";" ping before them.
    assert [s for s in sent if s.strip() == ";"] == []
    assert len(sent) == 2, sent


def test_an_idle_connection_is_pinged(counted: tuple[SqlStore, str], monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = counted
    exp = store.create_experiment("e")
    run_id = store.create_run(exp, user_id="u", start_time=1_700_000_000_000).info.run_id
    monkeypatch.setattr(db_module, "_PG_PING_AFTER_IDLE", 0.05)
    time.sleep(0.2)
    sent = _statements(lambda: store.log_batch(run_id, params=[Param("a", "1")]))
    assert [s.strip() for s in sent][0] == ";" and len(sent) == 3, sent


def test_a_connection_the_server_ended_is_replaced_not_handed_out(counted: tuple[SqlStore, str]) -> None:
    store, url = counted
    exp = store.create_experiment("e")
    run_id = store.create_run(exp, user_id="u", start_time=1_700_000_000_000).info.run_id
    # The pool's one connection is ended by the server while it sits in the pool.
    with psycopg.connect("postgresql://" + url.split("://", 1)[1], autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    assert ended and all(row[0] for row in ended)
    time.sleep(0.2)  # the termination notice reaches the client's socket
    # A read first (writes would also survive by replaying on a fresh connection): the
    # checkout must not hand out the ended connection.
    assert store.get_run(run_id).info.run_id == run_id
    for i in range(3):
        store.log_batch(run_id, params=[Param(f"p{i}", str(i))])
    assert set(store.get_run(run_id).data.params) >= {"p0", "p1", "p2"}


def test_a_run_lifecycle_sends_eleven_statements(pg_server: str, tmp_path: Any) -> None:
    """create_run, two log_param, one log_metric, set_terminated through TrackingClient:
    eleven statements (each call one transaction; psycopg adds BEGIN and COMMIT). The run
    goes in with its tags in one statement, a param with one execute, and the end is one
    UPDATE ... RETURNING of the active run (no SELECT of the run first): 13 before."""
    from tracking_plugin.client import TrackingClient

    url = create_pg_database(pg_server)
    with TrackingClient(url, artifact_root=str(tmp_path)) as client:
        exp = client.create_experiment("e")
        db = client.store.db  # type: ignore[attr-defined]
        db.engine.dispose()
        event.listen(db.engine, "connect", lambda dbapi_conn, _record: setattr(dbapi_conn, "cursor_factory", _Counting))
        client.set_terminated(client.create_run(exp).info.run_id)  # connect while not counting
        calls: dict[str, list[str]] = {}
        run_id = ""

        def create() -> None:
            nonlocal run_id
            run_id = client.create_run(exp).info.run_id

        def sent(fn: Any) -> list[str]:  # a ping after an idle spell (a loaded machine) is not the call's
            return [s for s in _statements(fn) if s.strip() != ";"]

        calls["create_run"] = sent(create)
        calls["log_param"] = sent(lambda: client.log_param(run_id, "a", 1))
        calls["log_param b"] = sent(lambda: client.log_param(run_id, "b", "x"))
        calls["log_metric"] = sent(lambda: client.log_metric(run_id, "m", 0.5, synchronous=True))
        calls["set_terminated"] = sent(lambda: client.set_terminated(run_id))
        first = {name: [s.split()[0] for s in sent] for name, sent in calls.items()}
        assert first["create_run"] == ["SELECT", "WITH"], calls["create_run"]
        assert first["log_param"] == first["log_param b"] == ["SELECT", "INSERT"], calls["log_param"]
        assert first["set_terminated"] == ["UPDATE"], calls["set_terminated"]
        assert sum(len(sent) for sent in calls.values()) == 11, calls
        run = client.get_run(run_id)
    assert run.info.status.value == "FINISHED" and run.info.end_time is not None
    assert run.data.params == {"a": "1", "b": "x"} and run.data.metrics == {"m": 0.5}
    assert set(run.data.tags) >= {"mlflow.runName", "mlflow.user"}


def test_a_connection_goes_back_to_the_pool_in_transaction_mode(counted: tuple[SqlStore, str]) -> None:
    """log_param and ending a run run without BEGIN/COMMIT (autocommit: one write each) on
    the pool's one connection; the next call of several writes is still all or nothing."""
    store, url = counted
    exp = store.create_experiment("e")
    run_id = store.create_run(exp, user_id="u", start_time=1_700_000_000_000).info.run_id
    store.log_batch(run_id, params=[Param("a", "1")])
    store.update_run_info(run_id, status=RunStatus.FINISHED, end_time=1_700_000_000_500)
    with pytest.raises(Conflict, match="'a'"):
        store.log_batch(run_id, params=[Param("new", "1"), Param("a", "2")], tags=[RunTag("t", "v")])
    run = store.get_run(run_id)
    assert run.data.params == {"a": "1"} and "t" not in run.data.tags
    assert (run.info.status, run.info.end_time) == (RunStatus.FINISHED, 1_700_000_000_500)
    # The same connection served every call (pool of one) and is back in transaction mode.
    with store.db.engine.connect() as conn:
        assert conn.connection.driver_connection.autocommit is False
