"""The SQL tracking store on SQLite and PostgreSQL: experiments, runs, log_batch, history."""

from __future__ import annotations

import gc
import math
import random
import re
import shutil
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracking_plugin.artifacts import join_artifact_uri
from tracking_plugin.entities import (
    LifecycleStage,
    Metric,
    Param,
    RunStatus,
    RunTag,
    ViewType,
)
from tracking_plugin.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from tracking_plugin.store.db import Database, Statement
from tracking_plugin.store.sql import SqlStore

T0 = 1_700_000_000_000
TRACKING_TABLES = ("experiments", "experiment_tags", "runs", "params", "tags", "metrics", "latest_metrics")


def snapshot(store: SqlStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every tracking table, sorted: equal snapshots mean nothing changed."""
    with store.db.engine.connect() as conn:
        return {
            name: sorted((tuple(row) for row in conn.execute(sa.text(f"SELECT * FROM {name}"))), key=repr)
            for name in TRACKING_TABLES
        }


def new_run(store: SqlStore, experiment_id: str | None = None, **kwargs: Any) -> str:
    if experiment_id is None:
        existing = store.get_experiment_by_name("runs")
        experiment_id = existing.experiment_id if existing else store.create_experiment("runs", "/tmp/runs")
    kwargs.setdefault("user_id", "ada")
    kwargs.setdefault("start_time", T0)
    return store.create_run(experiment_id, **kwargs).info.run_id


# ------------------------------------------------------------------ experiments


def test_experiment_crud(store: SqlStore) -> None:
    exp_id = store.create_experiment("fraud", "s3://bucket/mlops/fraud", tags={"team": "risk"})
    assert isinstance(exp_id, str) and exp_id.isdigit()
    exp = store.get_experiment(exp_id)
    assert (exp.name, exp.artifact_location, exp.lifecycle_stage, exp.tags) == (
        "fraud",
        "s3://bucket/mlops/fraud",
        LifecycleStage.ACTIVE,
        {"team": "risk"},
    )
    assert exp.creation_time and exp.last_update_time
    assert store.get_experiment_by_name("fraud") == exp
    assert store.get_experiment_by_name("nope") is None

    store.set_experiment_tag(exp_id, "team", "fraud-ops")
    store.set_experiment_tag(exp_id, "owner", "ada")
    assert store.get_experiment(exp_id).tags == {"team": "fraud-ops", "owner": "ada"}

    store.rename_experiment(exp_id, "fraud-v2")
    assert store.get_experiment(exp_id).name == "fraud-v2"
    assert store.get_experiment_by_name("fraud") is None

    store.delete_experiment(exp_id)
    assert store.get_experiment(exp_id).lifecycle_stage is LifecycleStage.DELETED
    assert store.get_experiment_by_name("fraud-v2").lifecycle_stage is LifecycleStage.DELETED  # type: ignore[union-attr]
    store.restore_experiment(exp_id)
    assert store.get_experiment(exp_id).lifecycle_stage is LifecycleStage.ACTIVE


def test_experiment_refusals_name_the_problem_and_change_nothing(store: SqlStore) -> None:
    exp_id = store.create_experiment("a", "/tmp/a")
    other = store.create_experiment("b", "/tmp/b")
    before = snapshot(store)
    with pytest.raises(AlreadyExists, match="'a' already exists"):
        store.create_experiment("a")
    with pytest.raises(AlreadyExists, match="'b' already exists"):
        store.rename_experiment(exp_id, "b")
    with pytest.raises(NotFound, match="'999' does not exist"):
        store.get_experiment("999")
    with pytest.raises(InvalidArgument, match="'abc'"):
        store.get_experiment("abc")
    with pytest.raises(InvalidArgument, match="experiment name"):
        store.create_experiment("")
    with pytest.raises(InvalidArgument, match="tag name"):
        store.set_experiment_tag(exp_id, "bad key!", "v")
    with pytest.raises(Conflict, match="not deleted"):
        store.restore_experiment(other)
    assert snapshot(store) == before

    store.delete_experiment(other)
    deleted = snapshot(store)
    with pytest.raises(Conflict, match="deleted"):
        store.rename_experiment(other, "c")
    with pytest.raises(Conflict, match="already deleted"):
        store.delete_experiment(other)
    with pytest.raises(Conflict, match="deleted"):
        store.set_experiment_tag(other, "k", "v")
    with pytest.raises(Conflict, match="deleted"):
        store.create_run(other, user_id="u", start_time=T0)
    with pytest.raises(AlreadyExists, match="restore"):
        store.create_experiment("b")
    assert snapshot(store) == deleted


def test_concurrent_create_experiment_one_wins(store: SqlStore) -> None:
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def create() -> None:
        barrier.wait()
        try:
            outcomes.append(store.create_experiment("race", "/tmp/race"))
        except AlreadyExists as exc:
            outcomes.append(f"exists: {exc}")

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [o for o in outcomes if not o.startswith("exists")]
    assert len(created) == 1 and len(outcomes) == 6
    assert all("'race'" in o for o in outcomes if o.startswith("exists"))


def test_delete_experiment_deletes_its_runs_and_restore_brings_them_back(store: SqlStore) -> None:
    exp_id = store.create_experiment("e", "/tmp/e")
    run_ids = {new_run(store, exp_id) for _ in range(3)}
    store.delete_experiment(exp_id)
    assert {store.get_run(r).info.lifecycle_stage for r in run_ids} == {LifecycleStage.DELETED}
    assert len(store.search_runs([exp_id])) == 0
    assert {
        r.info.run_id for r in store.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)
    } == run_ids
    store.restore_experiment(exp_id)
    assert {r.info.run_id for r in store.search_runs([exp_id])} == run_ids


def test_search_experiments(store: SqlStore) -> None:
    ids = [
        store.create_experiment(f"team-{i}", f"/tmp/{i}", tags={"parity": "even" if i % 2 == 0 else "odd"})
        for i in range(7)
    ]
    store.create_experiment("Other", "/tmp/o")
    store.delete_experiment(ids[6])

    def names(**kwargs: Any) -> list[str]:
        return [e.name for e in store.search_experiments(**kwargs)]

    assert set(names()) == {f"team-{i}" for i in range(6)} | {"Other"}
    assert names(view_type=ViewType.DELETED_ONLY) == ["team-6"]
    assert len(names(view_type=ViewType.ALL)) == 8
    assert names(filter_string="name LIKE 'team-%' and tags.parity = 'odd'", order_by=["name"]) == [
        "team-1",
        "team-3",
        "team-5",
    ]
    assert names(filter_string="name = 'Other' or tags.parity = 'even'", order_by=["name DESC"]) == [
        "team-4",
        "team-2",
        "team-0",
        "Other",
    ]
    assert names(filter_string="name ILIKE 'OTHER'") == ["Other"]
    assert names(filter_string=f"experiment_id IN ('{ids[0]}', '{ids[1]}')", order_by=["experiment_id"]) == [
        "team-0",
        "team-1",
    ]
    assert names(filter_string="creation_time > 0 and name LIKE 'Oth%'") == ["Other"]
    assert names(filter_string="tags.parity IS NULL") == ["Other"]
    # Paging: pages concatenate to the full, duplicate-free listing.
    pages, token = [], None
    while True:
        page = store.search_experiments(max_results=3, order_by=["name"], page_token=token)
        pages.extend(e.name for e in page)
        token = page.token
        if token is None:
            break
    assert pages == sorted(names())
    with pytest.raises(InvalidArgument, match="experiment_id"):
        store.search_experiments(filter_string="experiment_id > '3'")
    with pytest.raises(InvalidArgument, match="metrics"):
        store.search_experiments(filter_string="metrics.acc > 1")
    with pytest.raises(InvalidArgument, match="max_results"):
        store.search_experiments(max_results=0)


# ------------------------------------------------------------------------- runs


def test_create_run_defaults_and_system_tags(store: SqlStore) -> None:
    exp_id = store.create_experiment("e", "s3://bucket/mlops/e")
    run = store.create_run(exp_id, user_id="ada", start_time=T0, tags=[RunTag("team", "risk")])
    info = run.info
    assert re.fullmatch(r"[0-9a-f]{32}", info.run_id)
    assert re.fullmatch(r"[a-z]+-[a-z]+-\d{3}", info.run_name)
    assert (info.experiment_id, info.status, info.start_time, info.end_time, info.user_id) == (
        exp_id,
        RunStatus.RUNNING,
        T0,
        None,
        "ada",
    )
    assert info.artifact_uri == join_artifact_uri("s3://bucket/mlops/e", info.run_id, "artifacts")
    assert info.artifact_uri == f"s3://bucket/mlops/e/{info.run_id}/artifacts"
    assert run.data.tags == {"team": "risk", "mlflow.runName": info.run_name, "mlflow.user": "ada"}
    assert store.get_run(info.run_id) == run

    named = store.create_run(exp_id, user_id="ada", start_time=T0, run_name="baseline")
    assert named.info.run_name == "baseline" and named.data.tags["mlflow.runName"] == "baseline"
    from_tag = store.create_run(
        exp_id, user_id="ada", start_time=T0, tags=[RunTag("mlflow.runName", "tagged")]
    )
    assert from_tag.info.run_name == "tagged"
    with pytest.raises(InvalidArgument, match="disagree"):
        store.create_run(
            exp_id, user_id="ada", start_time=T0, run_name="x", tags=[RunTag("mlflow.runName", "y")]
        )

    child = store.create_run(exp_id, user_id="bob", start_time=T0 + 1, parent_run_id=info.run_id)
    assert child.info.parent_run_id == info.run_id
    assert store.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == info.run_id


def test_create_run_refusals_change_nothing(store: SqlStore) -> None:
    exp_id = store.create_experiment("e", "/tmp/e")
    before = snapshot(store)
    with pytest.raises(NotFound, match="'4242'"):
        store.create_run("4242", user_id="u", start_time=T0)
    with pytest.raises(NotFound, match="Parent run 'f00'"):
        store.create_run(exp_id, user_id="u", start_time=T0, parent_run_id="f00")
    with pytest.raises(InvalidArgument, match="start_time"):
        store.create_run(exp_id, user_id="u", start_time="yesterday")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="start_time"):
        store.create_run(exp_id, user_id="u", start_time=2**70)
    with pytest.raises(InvalidArgument, match="tag name"):
        store.create_run(exp_id, user_id="u", start_time=T0, tags=[RunTag("a/../b", "x")])
    with pytest.raises(InvalidArgument, match="run name"):
        store.create_run(exp_id, user_id="u", start_time=T0, run_name="x" * 300)
    assert snapshot(store) == before


def test_get_run_unknown_and_invalid_ids(store: SqlStore) -> None:
    with pytest.raises(NotFound, match="'0123456789abcdef0123456789abcdef'"):
        store.get_run("0123456789abcdef0123456789abcdef")
    with pytest.raises(InvalidArgument, match="run id"):
        store.get_run("../../etc/passwd")


def test_update_delete_restore_run(store: SqlStore) -> None:
    run_id = new_run(store)
    info = store.update_run_info(run_id, status=RunStatus.FINISHED, end_time=T0 + 500, run_name="final")
    assert (info.status, info.end_time, info.run_name) == (RunStatus.FINISHED, T0 + 500, "final")
    run = store.get_run(run_id)
    assert run.info == info
    assert run.data.tags["mlflow.runName"] == "final"
    # Logging to a finished (not deleted) run is allowed, as in MLflow.
    store.log_batch(run_id, metrics=[Metric("late", 1.0, T0, 0)])

    store.delete_run(run_id)
    assert store.get_run(run_id).info.lifecycle_stage is LifecycleStage.DELETED
    frozen = snapshot(store)
    with pytest.raises(Conflict, match=f"run '{run_id}'.*deleted.*restore_run"):
        store.log_batch(run_id, metrics=[Metric("m", 1.0, T0, 0)])
    with pytest.raises(Conflict, match="deleted"):
        store.update_run_info(run_id, status=RunStatus.FAILED)
    with pytest.raises(Conflict, match="deleted"):
        store.delete_tag(run_id, "mlflow.runName")
    with pytest.raises(InvalidArgument, match="status"):
        store.update_run_info(run_id, status="DONE")  # type: ignore[arg-type]
    assert snapshot(store) == frozen
    store.restore_run(run_id)
    assert store.get_run(run_id).info.lifecycle_stage is LifecycleStage.ACTIVE
    with pytest.raises(NotFound):
        store.delete_run("ffffffffffffffffffffffffffffffff")


def test_prefect_ids_are_unique_and_findable(store: SqlStore) -> None:
    exp_id = store.create_experiment("e", "/tmp/e")
    flow = store.create_run(exp_id, user_id="u", start_time=T0, prefect_flow_run_id="flow-1")
    task = store.create_run(
        exp_id, user_id="u", start_time=T0, prefect_task_run_id="task-1", parent_run_id=flow.info.run_id
    )
    assert store.get_run_by_prefect_id(flow_run_id="flow-1") == store.get_run(flow.info.run_id)
    assert store.get_run_by_prefect_id(task_run_id="task-1").info.run_id == task.info.run_id  # type: ignore[union-attr]
    assert store.get_run_by_prefect_id(flow_run_id="nope") is None
    before = snapshot(store)
    with pytest.raises(AlreadyExists, match="'flow-1'.*get_run_by_prefect_id"):
        store.create_run(exp_id, user_id="u", start_time=T0, prefect_flow_run_id="flow-1")
    with pytest.raises(AlreadyExists, match="'task-1'"):
        store.create_run(
            exp_id, user_id="u", start_time=T0, prefect_flow_run_id="flow-2", prefect_task_run_id="task-1"
        )
    with pytest.raises(InvalidArgument, match="exactly one"):
        store.get_run_by_prefect_id()
    assert snapshot(store) == before


def test_concurrent_runs_for_one_prefect_flow_run_one_wins(store: SqlStore) -> None:
    """The unique index decides races: exactly one run per flow-run id, the rest AlreadyExists."""
    exp_id = store.create_experiment("e", "/tmp/e")
    barrier = threading.Barrier(8)
    outcomes: list[Any] = []

    def create() -> None:
        barrier.wait()
        try:
            outcomes.append(
                store.create_run(exp_id, user_id="u", start_time=T0, prefect_flow_run_id="flow-x")
            )
        except AlreadyExists as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if not isinstance(o, AlreadyExists)]
    assert len(outcomes) == 8 and len(winners) == 1
    assert all("'flow-x'" in str(o) for o in outcomes if isinstance(o, AlreadyExists))
    assert store.get_run_by_prefect_id(flow_run_id="flow-x").info.run_id == winners[0].info.run_id  # type: ignore[union-attr]
    assert len(store.search_runs([exp_id])) == 1


# ------------------------------------------------------------------- log_batch


def test_log_batch_writes_metrics_params_tags(store: SqlStore) -> None:
    run_id = new_run(store)
    store.log_batch(
        run_id,
        metrics=[Metric("loss", 0.5, T0, 0), Metric("loss", 0.25, T0 + 1, 1), Metric("acc", 0.9, T0, 0)],
        params=[Param("lr", "0.01"), Param("model", "rf")],
        tags=[RunTag("team", "risk"), RunTag("team", "fraud")],  # the last value of a repeated tag wins
    )
    data = store.get_run(run_id).data
    assert data.metrics == {"loss": 0.25, "acc": 0.9}
    assert data.params == {"lr": "0.01", "model": "rf"}
    assert data.tags["team"] == "fraud"
    # Same param value again: fine (idempotent); tags may change.
    store.log_batch(run_id, params=[Param("lr", "0.01")], tags=[RunTag("team", "ops")])
    assert store.get_run(run_id).data.tags["team"] == "ops"
    # An empty batch checks the run and writes nothing.
    store.log_batch(run_id)
    with pytest.raises(NotFound):
        store.log_batch("ffffffffffffffffffffffffffffffff")


def test_one_bad_metric_writes_nothing(store: SqlStore) -> None:
    run_id = new_run(store)
    store.log_batch(run_id, metrics=[Metric("loss", 1.0, T0, 0)], params=[Param("a", "1")])
    before = snapshot(store)
    good = [Metric("loss", 0.1 * i, T0 + i, i) for i in range(1, 500)]
    for bad in (
        Metric("loss", "0.3", T0, 3),  # type: ignore[arg-type]
        Metric("bad key!", 0.3, T0, 3),
        Metric("../escape", 0.3, T0, 3),
        Metric("loss", 0.3, T0 + 0.5, 3),  # type: ignore[arg-type]
        Metric("loss", 0.3, T0, 2**64),
        Metric("loss", True, T0, 3),
        "loss=0.3",
    ):
        with pytest.raises(InvalidArgument):
            store.log_batch(
                run_id,
                metrics=[*good[:250], bad, *good[250:]],  # type: ignore[list-item]
                params=[Param("b", "2")],
                tags=[RunTag("t", "x")],
            )
        assert snapshot(store) == before


def test_bad_param_or_tag_writes_nothing(store: SqlStore) -> None:
    run_id = new_run(store)
    before = snapshot(store)
    metrics = [Metric("m", 1.0, T0, i) for i in range(100)]
    with pytest.raises(InvalidArgument, match="6000"):
        store.log_batch(run_id, metrics=metrics, params=[Param("p", "x" * 6001)])
    with pytest.raises(InvalidArgument, match="tag name"):
        store.log_batch(run_id, metrics=metrics, tags=[RunTag("/abs", "x")])
    with pytest.raises(InvalidArgument, match="twice"):
        store.log_batch(run_id, metrics=metrics, params=[Param("p", "1"), Param("p", "2")])
    with pytest.raises(InvalidArgument, match="list"):
        store.log_batch(run_id, params={"p": "1"})  # type: ignore[arg-type]
    assert snapshot(store) == before


def test_changed_param_is_a_conflict_and_nothing_of_the_batch_is_written(store: SqlStore) -> None:
    run_id = new_run(store)
    store.log_batch(run_id, params=[Param("lr", "0.01")])
    before = snapshot(store)
    with pytest.raises(Conflict) as err:
        store.log_batch(
            run_id,
            metrics=[Metric("loss", 0.5, T0, 0)],
            params=[Param("new", "x"), Param("lr", "0.02")],
            tags=[RunTag("t", "v")],
        )
    message = str(err.value)
    assert "'lr'" in message and "'0.01'" in message and "'0.02'" in message
    assert snapshot(store) == before


def test_log_batch_limits(store: SqlStore) -> None:
    run_id = new_run(store)
    from tracking_plugin.validation import MAX_BATCH_METRICS

    with pytest.raises(InvalidArgument, match="at most"):
        store.log_batch(run_id, metrics=[Metric("m", 0.0, T0, 0)] * (MAX_BATCH_METRICS + 1))
    store.log_batch(run_id, metrics=[Metric(f"m{i % 7}", float(i), T0 + i, i) for i in range(20_000)])
    assert sum(len(store.get_metric_history(run_id, f"m{k}")) for k in range(7)) == 20_000
    assert store.get_run(run_id).data.metrics["m6"] == 19_998.0


def test_bulk_batches_keep_refusals_and_foreign_keys(store: SqlStore) -> None:
    """Large metric batches skip SQLite's per-row foreign-key lookups (the run is checked
    first); refusals still change nothing and the database still enforces its keys after."""
    run_id = new_run(store)
    store.log_batch(run_id, params=[Param("lr", "0.01")])
    bulk = [Metric("m", float(i), T0, i) for i in range(5_000)]
    before = snapshot(store)
    with pytest.raises(NotFound):
        store.log_batch("f" * 32, metrics=bulk)
    with pytest.raises(Conflict):
        store.log_batch(run_id, metrics=bulk, params=[Param("lr", "0.02")])
    assert snapshot(store) == before
    store.log_batch(run_id, metrics=bulk)
    assert len(store.get_metric_history(run_id, "m")) == 5_000
    # PostgreSQL has no key on metrics (migration 0011: log_batch checks the run once per
    # batch); latest_metrics keeps its key there.
    table = "metrics" if store.db.dialect == "sqlite" else "latest_metrics"
    orphan = Statement(
        sa.text(f"INSERT INTO {table} (run_uuid, key, value, is_nan, timestamp, step) VALUES (:run, 'm', 0, :nan, 0, 0)"),
        ("run", "nan"),
    )
    for _ in range(3):  # the pooled connection(s) the bulk batches used
        with pytest.raises(store.db.IntegrityError):
            with store.db.transaction() as tx:
                tx.execute(orphan, ("0" * 32, False))
            if store.db.dialect == "sqlite":  # and SQLite checkpoints at commit again
                assert tx.one(Statement(sa.text("PRAGMA wal_autocheckpoint"))) == (1000,)
    assert len(snapshot(store)["metrics"]) == 5_000


@pytest.mark.parametrize("collector_on", [True, False])
def test_bulk_batches_leave_the_garbage_collector_as_they_found_it(store: SqlStore, collector_on: bool) -> None:
    """A large batch keeps Python's collector off while it builds its rows; afterwards it
    is on again, also after a refusal, unless the caller had turned it off."""
    run_id = new_run(store)
    bulk = [Metric("m", float(i), T0, i) for i in range(5_000)]
    was = gc.isenabled()
    (gc.enable if collector_on else gc.disable)()
    try:
        store.log_batch(run_id, metrics=bulk)
        assert gc.isenabled() is collector_on
        with pytest.raises(InvalidArgument, match="'oops'"):
            store.log_batch(run_id, metrics=[*bulk, Metric("m", "oops", T0, 0)])  # type: ignore[arg-type]
        assert gc.isenabled() is collector_on
    finally:
        (gc.enable if was else gc.disable)()
    assert len(store.get_metric_history(run_id, "m")) == 5_000


def test_bulk_batches_are_checkpointed_into_the_database_file(tmp_path: Path) -> None:
    """SQLite (WAL checkpoints are its own): a large batch commits without its checkpoint,
    which a background thread runs instead. The points still reach the database file
    itself, and back-to-back batches do not make the WAL grow: each waits for the
    previous checkpoint."""
    db_file = tmp_path / "bulk.db"
    db = Database(f"sqlite:///{db_file}")
    db.upgrade()
    store = SqlStore(db)
    run_id = new_run(store)
    batch = 20_000
    batches = [[Metric(f"m{i % 4}", float(i), T0, b * batch + i) for i in range(batch)] for b in range(12)]
    for metrics in batches:  # back to back
        store.log_batch(run_id, metrics=metrics)
    wal = db_file.with_name(db_file.name + "-wal")
    # One batch is ~3.5 MB of WAL; without the checkpoints the WAL would hold all twelve.
    assert wal.stat().st_size < 3 * 4 * 1024 * 1024, wal.stat().st_size
    copy = tmp_path / "file-only.db"  # the database file alone, without its WAL
    deadline = time.monotonic() + 30
    while True:
        shutil.copyfile(db_file, copy)
        try:
            with closing(sqlite3.connect(copy)) as conn:
                count = conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
        except sqlite3.DatabaseError:  # copied while the checkpoint was writing the file
            count = -1
        if count == 12 * batch or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert count == 12 * batch
    assert sum(len(store.get_metric_history(run_id, f"m{k}")) for k in range(4)) == 12 * batch
    db.dispose()


def test_back_to_back_small_bulk_batches_keep_the_wal_bounded(tmp_path: Path) -> None:
    """1,000-point batches (a tracking server's log-batch calls) are bulk too, but ask for
    a checkpoint only every ~20,000 points: the WAL still stays bounded and the points
    still reach the database file."""
    db_file = tmp_path / "small-bulk.db"
    db = Database(f"sqlite:///{db_file}")
    db.upgrade()
    store = SqlStore(db)
    run_id = new_run(store)
    for b in range(60):  # 60,000 points, back to back
        store.log_batch(run_id, metrics=[Metric("m", float(i), T0, b * 1000 + i) for i in range(1000)],
                        skip_logged_points=True)
    wal = db_file.with_name(db_file.name + "-wal")
    # 60,000 points are ~10 MB of WAL; checkpoints every ~20,000 keep it near a third.
    assert wal.stat().st_size < 7 * 1024 * 1024, wal.stat().st_size
    copy = tmp_path / "file-only.db"
    deadline = time.monotonic() + 30
    while True:
        shutil.copyfile(db_file, copy)
        try:
            with closing(sqlite3.connect(copy)) as conn:
                count = conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
        except sqlite3.DatabaseError:  # copied while the checkpoint was writing the file
            count = -1
        if count >= 40_000 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert count >= 40_000, count
    assert len(store.get_metric_history(run_id, "m")) == 60_000
    db.dispose()


def test_nan_and_infinities_round_trip(store: SqlStore) -> None:
    run_id = new_run(store)
    store.log_batch(
        run_id,
        metrics=[
            Metric("nan", math.nan, T0, 0),
            Metric("pinf", math.inf, T0, 0),
            Metric("ninf", -math.inf, T0, 0),
            Metric("tiny", 5e-324, T0, 0),
            Metric("huge", 1.7976931348623157e308, T0, 0),
            Metric("neg_zero", -0.0, T0, 0),
        ],
    )
    metrics = store.get_run(run_id).data.metrics
    assert math.isnan(metrics["nan"])
    assert metrics["pinf"] == math.inf and metrics["ninf"] == -math.inf
    assert metrics["tiny"] == 5e-324 and metrics["huge"] == 1.7976931348623157e308
    assert metrics["neg_zero"] == 0.0
    history = store.get_metric_history(run_id, "nan")
    assert len(history) == 1 and math.isnan(history[0].value)
    assert [m.value for m in store.get_metric_history(run_id, "pinf")] == [math.inf]
    assert [m.value for m in store.get_metric_history(run_id, "ninf")] == [-math.inf]


def test_latest_metric_rules(store: SqlStore) -> None:
    run_id = new_run(store)

    def latest(key: str) -> float:
        return store.get_run(run_id).data.metrics[key]

    # Greatest step wins, even when a smaller step is logged later.
    store.log_batch(run_id, metrics=[Metric("a", 1.0, T0, 5)])
    store.log_batch(run_id, metrics=[Metric("a", 2.0, T0 + 100, 4)])
    assert latest("a") == 1.0
    # Same step: greater timestamp wins.
    store.log_batch(run_id, metrics=[Metric("a", 3.0, T0 + 1, 5)])
    assert latest("a") == 3.0
    # Same step and timestamp: greater value wins, either order.
    store.log_batch(run_id, metrics=[Metric("a", 2.5, T0 + 1, 5)])
    assert latest("a") == 3.0
    store.log_batch(run_id, metrics=[Metric("a", 4.0, T0 + 1, 5)])
    assert latest("a") == 4.0
    # NaN as the newest point is the latest value; a real value beats NaN on a tie.
    store.log_batch(run_id, metrics=[Metric("b", 1.0, T0, 0), Metric("b", math.nan, T0, 1)])
    assert math.isnan(latest("b"))
    store.log_batch(run_id, metrics=[Metric("b", -7.0, T0, 1)])
    assert latest("b") == -7.0
    # Within one batch the same rule applies, whatever the order of the points.
    store.log_batch(
        run_id, metrics=[Metric("c", 9.0, T0 + 9, 9), Metric("c", 1.0, T0, 1), Metric("c", 5.0, T0 + 9, 9)]
    )
    assert latest("c") == 9.0
    # Negative steps are valid and order below zero.
    store.log_batch(run_id, metrics=[Metric("d", 1.0, T0, -3), Metric("d", 2.0, T0 - 5, 0)])
    assert latest("d") == 2.0


def stored(store: SqlStore, points: list[Metric]) -> list[Metric]:
    """The points of ``points`` a history holds: all of them on PostgreSQL; on SQLite a
    point identical to an earlier one (key, step, timestamp, value; NaN equal to NaN) is
    the same point, as in MLflow (the history is keyed by the point, migration 0012)."""
    if store.db.dialect != "sqlite":
        return list(points)
    first: dict[tuple[Any, ...], Metric] = {}
    for m in points:
        first.setdefault((m.key, m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value), m)
    return list(first.values())


def blocks_and_recount(store: SqlStore, run_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The run's ``metric_blocks`` rows, and the same summaries counted from its history."""
    with store.db.engine.connect() as conn:
        blocks = conn.execute(sa.text(
            "SELECT key, block, n_points, min_step, max_step, min_value, max_value FROM metric_blocks "
            "WHERE run_uuid = :r ORDER BY key, block"
        ), {"r": run_id}).all()
        recount = conn.execute(sa.text(
            "SELECT key, step >> 10 AS b, count(*), min(step), max(step), min(value), max(value) FROM metrics "
            "WHERE run_uuid = :r AND is_nan = false GROUP BY key, b ORDER BY key, b"
        ), {"r": run_id}).all()
    return [tuple(r) for r in blocks], [tuple(r) for r in recount]


def _rank(m: Metric) -> tuple[int, int, int, float]:
    nan = math.isnan(m.value)
    return (m.step, m.timestamp, 0 if nan else 1, 0.0 if nan else m.value)


points = st.builds(
    Metric,
    key=st.sampled_from(["x", "y"]),
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5).map(float)),
    timestamp=st.integers(0, 3),
    step=st.integers(-2, 2),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(points, min_size=1, max_size=6), min_size=1, max_size=4))
def test_latest_metric_matches_a_reference_model(store: SqlStore, batches: list[list[Metric]]) -> None:
    run_id = new_run(store)
    for batch in batches:
        store.log_batch(run_id, metrics=batch)
    logged = [m for batch in batches for m in batch]
    metrics = store.get_run(run_id).data.metrics
    for key in {m.key for m in logged}:
        expected = max((m for m in logged if m.key == key), key=_rank)
        got = metrics[key]
        assert (math.isnan(got) and math.isnan(expected.value)) or got == expected.value
        history = store.get_metric_history(run_id, key)
        assert len(history) == sum(1 for m in stored(store, logged) if m.key == key)
    blocks, recount = blocks_and_recount(store, run_id)
    assert blocks == recount  # the chart's summaries count exactly the stored points


def _bulk_shapes() -> dict[str, list[Metric]]:
    rng = random.Random(7)
    n = 3_000
    return {
        # several metrics per step, logged in a fixed cycle (a typical training loop)
        "cycle": [Metric(("loss", "acc", "lr")[i % 3], rng.random(), T0 + i // 3, i // 3) for i in range(n)],
        # one key; the last step logged three times: greatest timestamp, then value, wins
        "one key, tied top step": [Metric("loss", float(i % 17), T0, min(i, 2_000)) for i in range(n)]
        + [Metric("loss", -1.0, T0 + 5, 2_000), Metric("loss", 3.0, T0 + 5, 2_000)],
        "one key, steps out of order": [Metric("loss", float(s), T0, s) for s in rng.sample(range(-1_500, 9_000), n)],
        "keys in no order": [Metric(rng.choice("abcd"), rng.uniform(-5, 5), T0 + i, i) for i in range(n)],
        "cycle with a NaN": [Metric(("x", "y")[i % 2], float("nan") if i == 1_001 else float(i), T0, i // 2)
                             for i in range(n)],
    }


@pytest.mark.parametrize("shape", list(_bulk_shapes()))
def test_bulk_batches_keep_latest_values_and_chart_blocks_exact(store: SqlStore, shape: str) -> None:
    """Batches of 1,000+ points are summarised column by column when their keys allow it;
    whatever the shape, the latest value per key and the chart's block summaries are the
    ones the points themselves give, and the history holds every point."""
    points = _bulk_shapes()[shape]
    run_id = new_run(store)
    store.log_batch(run_id, metrics=points)
    metrics = store.get_run(run_id).data.metrics
    expected_blocks = {}
    for key in {m.key for m in points}:
        mine = [m for m in stored(store, points) if m.key == key]
        best = max(mine, key=_rank)
        assert (math.isnan(metrics[key]) and math.isnan(best.value)) or metrics[key] == best.value, key
        assert len(store.get_metric_history(run_id, key)) == len(mine)
        for m in mine:
            if not math.isnan(m.value):
                b = expected_blocks.setdefault((key, m.step >> 10), [0, m.step, m.step, m.value, m.value])
                b[0] += 1
                b[1], b[2], b[3], b[4] = min(b[1], m.step), max(b[2], m.step), min(b[3], m.value), max(b[4], m.value)
    with store.db.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT key, block, n_points, min_step, max_step, min_value, max_value FROM metric_blocks "
            f"WHERE run_uuid = '{run_id}'"
        ).all()
    assert {(r[0], r[1]): list(r[2:]) for r in rows} == expected_blocks


# --------------------------------------------------------------------- history


def test_metric_history_order_duplicates_and_paging(store: SqlStore) -> None:
    run_id = new_run(store)
    store.log_batch(run_id, metrics=[Metric("loss", float(s), T0 + s, s) for s in (3, 1, 2)])
    store.log_batch(
        run_id, metrics=[Metric("loss", 1.0, T0 + 1, 1), Metric("loss", 0.5, T0 + 9, 0)]
    )  # a duplicate point: kept on PostgreSQL, one point on SQLite (as in MLflow)
    store.log_batch(run_id, metrics=[Metric("other", 1.0, T0, 0)])
    history = list(store.get_metric_history(run_id, "loss"))
    twice = [(1, T0 + 1, 1.0)] if store.db.dialect == "postgresql" else []
    assert [(m.step, m.timestamp, m.value) for m in history] == [
        (0, T0 + 9, 0.5),
        (1, T0 + 1, 1.0),
        *twice,
        (2, T0 + 2, 2.0),
        (3, T0 + 3, 3.0),
    ]
    assert all(m.key == "loss" for m in history)
    pages, token, page_sizes = [], None, []
    while True:
        page = store.get_metric_history(run_id, "loss", max_results=2, page_token=token)
        pages.extend(page)
        page_sizes.append(len(page))
        token = page.token
        if token is None:
            break
    assert pages == history and page_sizes == ([2, 2, 1] if twice else [2, 2])
    assert list(store.get_metric_history(run_id, "never-logged")) == []
    with pytest.raises(InvalidArgument, match="page_token"):
        store.get_metric_history(run_id, "loss", max_results=2, page_token="garbage!")
    with pytest.raises(InvalidArgument, match="max_results"):
        store.get_metric_history(run_id, "loss", max_results=0)
    with pytest.raises(NotFound):
        store.get_metric_history("ffffffffffffffffffffffffffffffff", "loss")


def test_metric_history_longer_than_one_read_comes_whole(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # PostgreSQL reads an unpaged history in chunks of _PG_HISTORY_CHUNK points (arrays,
    # one snapshot, cut at step edges); a chunk of 3 makes 16 points take several reads,
    # duplicates and NaN across the chunk edges, one step longer than a chunk (no two points of one step and timestamp differ in value:
    # their order is the backend's, see _PG_HISTORY_ROWS). SQLite reads it in one statement.
    from tracking_plugin.store import sql_tracking

    monkeypatch.setattr(sql_tracking, "_PG_HISTORY_CHUNK", 3)
    run_id = new_run(store)
    points = [Metric("loss", float(s % 4), T0 + s, s // 2) for s in range(8)]
    points += [Metric("loss", 2.0, T0 + 2, 1), Metric("loss", math.nan, T0 + 9, 4), Metric("loss", 2.0, T0 + 2, 1)]
    points += [Metric("loss", 7.0, T0 + 20 + i, 7) for i in range(5)]  # one step longer than a chunk
    store.log_batch(run_id, metrics=points)
    store.log_batch(run_id, metrics=[Metric("other", 5.0, T0, 0)])
    want = sorted(((m.step, m.timestamp, m.value) for m in stored(store, points)),
                  key=lambda p: (p[0], p[1], math.isnan(p[2]), p[2]))
    got = store.get_metric_history(run_id, "loss")
    assert got.token is None
    assert [(m.step, m.timestamp, m.value) for m in got if not math.isnan(m.value)] == [p for p in want if not math.isnan(p[2])]
    assert [(m.step, m.timestamp) for m in got if math.isnan(m.value)] == [(4, T0 + 9)]
    assert all(m.key == "loss" for m in got) and len(got) == len(stored(store, points))  # 16, or 15 on SQLite
    steps, timestamps, values, token = store.get_metric_history_columns(run_id, "loss")
    assert token is None and (steps, timestamps) == ([m.step for m in got], [m.timestamp for m in got])
    assert [v for v in values if not math.isnan(v)] == [m.value for m in got if not math.isnan(m.value)]
    # From an offset (a page token) to the end: also chunked, from within a step too.
    for first in (4, 12, 13, len(got) - 1):
        page = store.get_metric_history(run_id, "loss", max_results=first)
        rest = store.get_metric_history(run_id, "loss", page_token=page.token)
        assert [(m.step, m.timestamp) for m in [*page, *rest]] == [(m.step, m.timestamp) for m in got], first
        assert rest.token is None


def test_metric_history_columns_match_the_entities_page_by_page(store: SqlStore) -> None:
    # The tracking server's columnar read: the same points, order, NaN/inf and pages.
    run_id = new_run(store)
    values = [0.5, math.nan, math.inf, -math.inf, 1e-300, 0.1 + 0.2, -2.0]
    store.log_batch(run_id, metrics=[Metric("loss", v, T0 + i % 3, 6 - i) for i, v in enumerate(values)])
    # beside the first point: the same step and timestamp, another value
    store.log_batch(run_id, metrics=[Metric("loss", 0.25, T0, 6), Metric("other", 1.0, T0, 0)])

    def as_columns(metrics: list[Metric]) -> tuple[list[int], list[int], list[str]]:
        return [m.step for m in metrics], [m.timestamp for m in metrics], [repr(m.value) for m in metrics]

    steps, timestamps, got, token = store.get_metric_history_columns(run_id, "loss")
    assert token is None and len(steps) == 8
    assert (steps, timestamps, [repr(v) for v in got]) == as_columns(list(store.get_metric_history(run_id, "loss")))
    for size in (1, 3, 8):
        pages: list[tuple[list[int], list[int], list[float]]] = []
        token = None
        while True:
            *page, token = store.get_metric_history_columns(run_id, "loss", max_results=size, page_token=token)
            pages.append(page)  # type: ignore[arg-type]
            if token is None:
                break
        assert len(pages) == -(-8 // size)
        joined = tuple([x for page in pages for x in page[i]] for i in range(3))
        assert (joined[0], joined[1], [repr(v) for v in joined[2]]) == (steps, timestamps, [repr(v) for v in got])
    assert store.get_metric_history_columns(run_id, "never-logged") == ([], [], [], None)
    with pytest.raises(InvalidArgument, match="page_token"):
        store.get_metric_history_columns(run_id, "loss", max_results=2, page_token="garbage!")
    with pytest.raises(InvalidArgument, match="max_results"):
        store.get_metric_history_columns(run_id, "loss", max_results=0)
    with pytest.raises(NotFound):
        store.get_metric_history_columns("ffffffffffffffffffffffffffffffff", "loss")


def test_delete_tag(store: SqlStore) -> None:
    run_id = new_run(store)
    store.log_batch(run_id, tags=[RunTag("t", "v")])
    store.delete_tag(run_id, "t")
    assert "t" not in store.get_run(run_id).data.tags
    before = snapshot(store)
    with pytest.raises(NotFound, match="no tag 't'"):
        store.delete_tag(run_id, "t")
    assert snapshot(store) == before


REFUSED: list[tuple[str, Callable[[SqlStore, str, str], Any], type[Exception]]] = [
    (
        "log to unknown run",
        lambda s, e, r: s.log_batch("ffffffffffffffffffffffffffffffff", [Metric("m", 1.0, T0, 0)]),
        NotFound,
    ),
    ("invalid run id", lambda s, e, r: s.log_batch("a b", [Metric("m", 1.0, T0, 0)]), InvalidArgument),
    ("metric without number", lambda s, e, r: s.log_batch(r, [Metric("m", None, T0, 0)]), InvalidArgument),  # type: ignore[arg-type]
    ("param too long", lambda s, e, r: s.log_batch(r, params=[Param("p", "x" * 7000)]), InvalidArgument),
    ("tag value too long", lambda s, e, r: s.log_batch(r, tags=[RunTag("t", "x" * 9000)]), InvalidArgument),
    ("changed param", lambda s, e, r: s.log_batch(r, params=[Param("fixed", "2")]), Conflict),
    ("bad status", lambda s, e, r: s.update_run_info(r, status="BOGUS"), InvalidArgument),  # type: ignore[arg-type]
    ("bad end time", lambda s, e, r: s.update_run_info(r, end_time=1.5), InvalidArgument),  # type: ignore[arg-type]
    (
        "end unknown run",
        lambda s, e, r: s.update_run_info("ffffffffffffffffffffffffffffffff", status=RunStatus.FINISHED),
        NotFound,
    ),
    ("run in unknown experiment", lambda s, e, r: s.create_run("777", user_id="u", start_time=T0), NotFound),
    ("duplicate experiment", lambda s, e, r: s.create_experiment("exp"), AlreadyExists),
    ("search bad filter", lambda s, e, r: s.search_runs([e], "metrics.m >"), InvalidArgument),
    ("delete missing tag", lambda s, e, r: s.delete_tag(r, "missing"), NotFound),
]


def test_refused_inputs_change_nothing(store: SqlStore) -> None:
    exp_id = store.create_experiment("exp", "/tmp/exp")
    run_id = new_run(store, exp_id)
    store.log_batch(run_id, metrics=[Metric("m", 1.0, T0, 0)], params=[Param("fixed", "1")])
    before = snapshot(store)
    for name, call, error in REFUSED:
        with pytest.raises(error):
            call(store, exp_id, run_id)
        assert snapshot(store) == before, name
