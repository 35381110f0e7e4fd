"""``Statement``: SQLAlchemy Core compiled once per dialect into the driver's positional
placeholders, run on a ``Transaction`` with plain tuples in the declared parameter order."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tracking_plugin.entities import Metric
from tracking_plugin.store.db import Statement, in_list
from tracking_plugin.store.schema import RunRow, RunTagRow
from tracking_plugin.store.sql import SqlStore
from tracking_plugin.store.sql_tracking import _INSERT_METRIC, _INSERT_RUN, _update_run

_RUNS = RunRow.__table__
_TAGS = RunTagRow.__table__
T0 = 1_700_000_000_000


def _new_run(store: SqlStore) -> str:
    experiment_id = store.create_experiment("statements")
    return store.create_run(experiment_id, start_time=T0, user_id="u").info.run_id


def test_values_follow_the_declared_order_whatever_order_the_sql_wants(store: SqlStore) -> None:
    """The UPDATE's SQL binds the new name before the run id; the caller passes them the
    other way round, as declared, on both dialects."""
    run_id = _new_run(store)
    rename = Statement(
        sa.update(_RUNS).values(name=sa.bindparam("new_name")).where(_RUNS.c.run_uuid == sa.bindparam("run_id")),
        ("run_id", "new_name"),
    )
    with store.db.transaction() as tx:
        assert tx.execute(rename, (run_id, "renamed")).rowcount == 1
    assert store.get_run(run_id).info.run_name == "renamed"
    sql, order = rename.compiled[store.db.dialect]
    assert order == (1, 0)
    assert "?" in sql if store.db.dialect == "sqlite" else "%s" in sql


def test_executemany_inserts_rows_given_in_the_declared_column_order(store: SqlStore) -> None:
    run_id = _new_run(store)
    insert = Statement(sa.insert(_TAGS), ("value", "key", "run_uuid"))
    with store.db.transaction() as tx:
        tx.executemany(insert, [("v1", "k1", run_id), ("v2", "k2", run_id)])
    tags = store.get_run(run_id).data.tags
    assert (tags["k1"], tags["k2"]) == ("v1", "v2")


def test_a_statement_is_compiled_once_per_dialect(store: SqlStore) -> None:
    run_id = _new_run(store)
    select = Statement(sa.select(_RUNS.c.name).where(_RUNS.c.run_uuid == sa.bindparam("run_id")), ("run_id",))
    with store.db.transaction(write=False) as tx:
        assert tx.one(select, (run_id,)) is not None
        first = select.compiled[store.db.dialect]
        assert tx.all(select, ("0" * 32,)) == []
    assert select.compiled == {store.db.dialect: first}
    assert select.compiled[store.db.dialect] is first


def test_a_bind_parameter_missing_from_params_is_refused_with_its_name() -> None:
    """A constant bound in the statement would be silently dropped from the tuple the
    caller passes: the statement refuses to compile, naming the parameter."""
    constant = Statement(sa.select(_RUNS.c.run_uuid).where(_RUNS.c.name == sa.bindparam("wanted", "x")))
    for dialect in ("sqlite", "postgresql"):
        with pytest.raises(TypeError, match=r"\['wanted'\].*name them in params="):
            constant.compile(dialect)


def test_inserts_have_no_implicit_returning_on_postgresql() -> None:
    """An executemany of 100,000 metric points must not fetch 100,000 generated ids."""
    for statement in (_INSERT_METRIC, _INSERT_RUN):
        sql, _ = statement.compile("postgresql")
        assert sql.startswith("INSERT") and "RETURNING" not in sql
        assert "%s" in sql and "%(" not in sql  # positional, as the rows are tuples


def test_in_lists_come_in_a_few_lengths_and_keep_their_values() -> None:
    lengths = set()
    for n in range(1, 5_001):
        values = [f"v{i}" for i in range(n)]
        size, padded = in_list(values, 5_000)
        assert len(padded) == size >= n and set(padded) == set(values)
        lengths.add(size)
    assert len(lengths) == 14  # 1, 2, 4, ..., 4096 and the limit
    assert in_list(["a", "b", "c"], 5_000) == (4, ("a", "b", "c", "c"))


def test_run_updates_compile_one_statement_per_set_of_columns(store: SqlStore) -> None:
    """update_run_info's UPDATE has a shape per set of changed columns; each writes just
    those columns."""
    run_id = _new_run(store)
    store.update_run_info(run_id, run_name="a")
    store.update_run_info(run_id, end_time=T0 + 5)
    store.update_run_info(run_id, status="FINISHED", end_time=T0 + 9, run_name="b")
    info = store.get_run(run_id).info
    assert (info.run_name, info.end_time, info.status.value) == ("b", T0 + 9, "FINISHED")
    assert _update_run(("name",)) is _update_run(("name",))
    assert _update_run(("name",)) is not _update_run(("end_time",))


def test_params_read_back_through_padded_in_lists_still_refuse_a_changed_value(store: SqlStore) -> None:
    """Three stored params are read back with a four-long IN list (the last key repeated):
    the changed one is still found, and nothing of the batch is written."""
    from tracking_plugin.entities import Param
    from tracking_plugin.errors import Conflict

    run_id = _new_run(store)
    store.log_batch(run_id, params=[Param("a", "1"), Param("b", "2"), Param("c", "3")])
    with pytest.raises(Conflict, match="'c'"):
        store.log_batch(
            run_id, metrics=[Metric("m", 1.0, T0, 0)], params=[Param("a", "1"), Param("b", "2"), Param("c", "9")]
        )
    run = store.get_run(run_id)
    assert run.data.params == {"a": "1", "b": "2", "c": "3"} and run.data.metrics == {}
