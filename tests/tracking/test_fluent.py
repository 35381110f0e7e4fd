"""The fluent API as an MLflow user drives it, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextvars
import math
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import tracking_plugin as mlops
from tracking_plugin import _context
from tracking_plugin.entities import LifecycleStage, RunStatus
from tracking_plugin.errors import Conflict, InvalidArgument, NotFound


def test_run_records_params_metrics_tags_and_finishes(tracking_env) -> None:
    before = int(time.time() * 1000)
    with mlops.start_run(run_name="baseline", tags={"team": "churn"}, description="first try") as run:
        assert mlops.active_run().info.run_id == run.info.run_id
        assert run.info.status is RunStatus.RUNNING
        assert mlops.log_param("C", 1.0) == 1.0
        mlops.log_params({"penalty": "l2", "max_iter": 100})
        mlops.log_metric("loss", 0.7, step=0)
        mlops.log_metric("loss", 0.4, step=1)
        mlops.log_metrics({"auc": 0.91, "f1": 0.8}, step=1)
        mlops.set_tag("stage", "dev")
        mlops.set_tags({"owner": "ana", "priority": 1})
    assert mlops.active_run() is None

    stored = mlops.get_run(run.info.run_id)
    assert stored.info.status is RunStatus.FINISHED
    assert stored.info.run_name == "baseline"
    assert before <= stored.info.start_time <= stored.info.end_time
    assert stored.data.params == {"C": "1.0", "penalty": "l2", "max_iter": "100"}
    assert stored.data.metrics == {"loss": 0.4, "auc": 0.91, "f1": 0.8}
    tags = stored.data.tags
    assert tags["team"] == "churn" and tags["stage"] == "dev" and tags["priority"] == "1"
    assert tags["mlflow.runName"] == "baseline"
    assert tags["mlflow.note.content"] == "first try"
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"


def test_runs_go_to_default_experiment_until_one_is_set(tracking_env) -> None:
    with mlops.start_run() as first:
        pass
    default = mlops.get_experiment_by_name("Default")
    assert default is not None and first.info.experiment_id == default.experiment_id

    experiment = mlops.set_experiment("churn")
    assert mlops.set_experiment("churn").experiment_id == experiment.experiment_id  # reused
    assert mlops.set_experiment(experiment_id=experiment.experiment_id).name == "churn"
    with mlops.start_run() as second:
        pass
    assert second.info.experiment_id == experiment.experiment_id
    # Local artifact locations are absolute, under the configured root.
    assert Path(experiment.artifact_location).is_absolute()
    assert experiment.artifact_location.startswith(tracking_env.artifact_root)


def test_set_experiment_refuses_bad_arguments_and_deleted_experiments(tracking_env) -> None:
    with pytest.raises(InvalidArgument, match="exactly one"):
        mlops.set_experiment()
    with pytest.raises(InvalidArgument, match="exactly one"):
        mlops.set_experiment("a", experiment_id="1")
    with pytest.raises(NotFound):
        mlops.set_experiment(experiment_id="424242")
    experiment_id = mlops.create_experiment("gone")
    mlops.delete_experiment(experiment_id)
    with pytest.raises(Conflict, match="deleted experiment 'gone'.*restore_experiment"):
        mlops.set_experiment("gone")


def test_second_run_needs_nested_true(tracking_env) -> None:
    with mlops.start_run() as outer:
        with pytest.raises(Conflict) as excinfo:
            mlops.start_run()
        message = str(excinfo.value)
        assert outer.info.run_id in message and "nested=True" in message
        assert mlops.active_run().info.run_id == outer.info.run_id  # nothing changed


def test_nested_runs_link_to_their_parent(tracking_env) -> None:
    with mlops.start_run(run_name="parent") as parent:
        with mlops.start_run(run_name="child", nested=True) as child:
            assert mlops.active_run().info.run_id == child.info.run_id
            with mlops.start_run(nested=True) as grandchild:
                mlops.log_metric("depth", 2)
            mlops.log_metric("depth", 1)
        assert mlops.active_run().info.run_id == parent.info.run_id
        mlops.log_metric("depth", 0)

    client = mlops.TrackingClient()
    child_run = client.get_run(child.info.run_id)
    grandchild_run = client.get_run(grandchild.info.run_id)
    assert child_run.info.parent_run_id == parent.info.run_id
    assert child_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert grandchild_run.info.parent_run_id == child.info.run_id
    assert client.get_run(parent.info.run_id).info.parent_run_id is None
    assert [client.get_run(r.info.run_id).data.metrics["depth"] for r in (parent, child, grandchild)] == [0, 1, 2]
    assert all(client.get_run(r.info.run_id).info.status is RunStatus.FINISHED for r in (parent, child, grandchild))
    children = mlops.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert list(children["run_id"]) == [child.info.run_id]


def test_explicit_parent_run_id(tracking_env) -> None:
    with mlops.start_run() as parent:
        pass
    with mlops.start_run(parent_run_id=parent.info.run_id) as child:
        pass
    assert mlops.get_run(child.info.run_id).info.parent_run_id == parent.info.run_id
    with mlops.start_run() as other:
        with pytest.raises(InvalidArgument, match="does not match the specified parent_run_id"):
            mlops.start_run(nested=True, parent_run_id=parent.info.run_id)
    assert mlops.get_run(other.info.run_id).info.status is RunStatus.FINISHED


def test_exception_in_block_marks_run_failed_and_propagates(tracking_env) -> None:
    with pytest.raises(ZeroDivisionError):
        with mlops.start_run() as run:
            mlops.log_metric("before_error", 1.0)
            1 / 0
    stored = mlops.get_run(run.info.run_id)
    assert stored.info.status is RunStatus.FAILED
    assert stored.info.end_time is not None
    assert stored.data.metrics == {"before_error": 1.0}
    assert mlops.active_run() is None


def test_keyboard_interrupt_marks_run_killed(tracking_env) -> None:
    with pytest.raises(KeyboardInterrupt):
        with mlops.start_run() as run:
            raise KeyboardInterrupt
    assert mlops.get_run(run.info.run_id).info.status is RunStatus.KILLED


def test_end_run_with_status_and_without_active_run(tracking_env) -> None:
    mlops.end_run()  # nothing active: a no-op, like MLflow
    run = mlops.start_run()
    with pytest.raises(InvalidArgument, match="Invalid run status 'DONE'"):
        mlops.end_run(status="DONE")
    assert mlops.active_run().info.run_id == run.info.run_id  # a refused status ends nothing
    mlops.end_run(status="KILLED")
    assert mlops.active_run() is None
    assert mlops.get_run(run.info.run_id).info.status is RunStatus.KILLED
    assert mlops.last_active_run().info.run_id == run.info.run_id


def test_run_ended_inside_block_is_not_ended_twice(tracking_env) -> None:
    with mlops.start_run() as run:
        mlops.end_run("KILLED")
    assert mlops.get_run(run.info.run_id).info.status is RunStatus.KILLED


def test_resume_existing_run(tracking_env) -> None:
    with mlops.start_run(run_name="first") as run:
        mlops.log_metric("loss", 0.9, step=0)
    with mlops.start_run(run_id=run.info.run_id, tags={"resumed": "yes"}) as resumed:
        assert resumed.info.run_id == run.info.run_id
        assert resumed.info.status is RunStatus.RUNNING
        assert resumed.data.tags["resumed"] == "yes"
        mlops.log_metric("loss", 0.5, step=1)
    stored = mlops.get_run(run.info.run_id)
    assert stored.info.status is RunStatus.FINISHED
    assert [m.value for m in mlops.TrackingClient().get_metric_history(run.info.run_id, "loss")] == [0.9, 0.5]

    mlops.delete_run(run.info.run_id)
    with pytest.raises(Conflict, match="deleted"):
        mlops.start_run(run_id=run.info.run_id)
    with pytest.raises(NotFound):
        mlops.start_run(run_id="0" * 32)
    assert mlops.active_run() is None


def test_logging_without_a_run_starts_one(tracking_env) -> None:
    mlops.log_metric("auto", 1.0)
    run = mlops.active_run()
    assert run is not None and run.info.status is RunStatus.RUNNING
    mlops.end_run()
    assert mlops.get_run(run.info.run_id).data.metrics == {"auto": 1.0}


def test_metric_history_keeps_step_and_timestamp(tracking_env) -> None:
    with mlops.start_run() as run:
        mlops.log_metric("acc", 0.5, step=3, timestamp=1_700_000_000_300)
        mlops.log_metric("acc", 0.1, step=1, timestamp=1_700_000_000_100)
        mlops.log_metric("acc", 0.3, step=2, timestamp=1_700_000_000_200)
        mlops.log_metric("acc", float("nan"), step=4)
        mlops.log_metrics({"acc": 0.9}, step=5, timestamp=1_700_000_000_500)
    history = mlops.TrackingClient().get_metric_history(run.info.run_id, "acc")
    assert [(m.step, m.value) for m in history[:3]] == [(1, 0.1), (2, 0.3), (3, 0.5)]
    assert [m.timestamp for m in history[:3]] == [1_700_000_000_100, 1_700_000_000_200, 1_700_000_000_300]
    assert math.isnan(history[3].value) and history[3].step == 4
    assert (history[4].step, history[4].value, history[4].timestamp) == (5, 0.9, 1_700_000_000_500)
    assert mlops.get_run(run.info.run_id).data.metrics["acc"] == 0.9  # latest = highest step


def test_bad_values_raise_and_record_nothing(tracking_env) -> None:
    with mlops.start_run() as run:
        mlops.log_param("lr", 0.1)
        with pytest.raises(InvalidArgument, match="'bad key!'"):
            mlops.log_metric("bad key!", 1.0)
        with pytest.raises(InvalidArgument, match="real number"):
            mlops.log_metric("loss", "high")
        with pytest.raises(InvalidArgument, match="'x'"):
            mlops.log_metrics({"ok": 1.0, "x": "not a number"})
        with pytest.raises(Conflict, match="lr"):
            mlops.log_param("lr", 0.2)
        with pytest.raises(InvalidArgument):
            mlops.log_params({"fine": 1, "no spaces?": 2})
    stored = mlops.get_run(run.info.run_id)
    assert stored.data.metrics == {}
    assert stored.data.params == {"lr": "0.1"}
    assert stored.info.status is RunStatus.FINISHED


def test_search_runs_dataframe_has_mlflow_columns_and_values(tracking_env) -> None:
    experiment = mlops.set_experiment("search")
    with mlops.start_run(run_name="rf") as rf:
        mlops.log_params({"model": "rf", "depth": 5})
        mlops.log_metrics({"auc": 0.93, "loss": 0.2})
        mlops.set_tag("release", "1.1.0-RC")
    with mlops.start_run(run_name="lr") as lr:
        mlops.log_param("model", "lr")
        mlops.log_metric("auc", 0.81)
    with pytest.raises(RuntimeError):
        with mlops.start_run(run_name="broken") as broken:
            raise RuntimeError("boom")

    df = mlops.search_runs(order_by=["metrics.auc DESC"])
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns[:6]) == ["run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time"]
    for column in ("metrics.auc", "metrics.loss", "params.model", "params.depth", "tags.release", "tags.mlflow.runName"):
        assert column in df.columns
    assert list(df["run_id"][:2]) == [rf.info.run_id, lr.info.run_id]
    assert set(df["status"]) == {"FINISHED", "FAILED"}
    assert (df["experiment_id"] == experiment.experiment_id).all()
    assert str(df["start_time"].dt.tz) == "UTC"
    rf_row = df[df["run_id"] == rf.info.run_id].iloc[0]
    lr_row = df[df["run_id"] == lr.info.run_id].iloc[0]
    assert rf_row["metrics.auc"] == 0.93 and rf_row["params.depth"] == "5"
    assert math.isnan(lr_row["metrics.loss"])  # absent metric: NaN
    assert lr_row["params.depth"] is None  # absent param: None
    assert rf_row["start_time"] == pd.Timestamp(mlops.get_run(rf.info.run_id).info.start_time, unit="ms", tz="UTC")
    assert rf_row["artifact_uri"] == mlops.get_run(rf.info.run_id).info.artifact_uri

    filtered = mlops.search_runs(filter_string="metrics.auc > 0.9 and params.model = 'rf'")
    assert list(filtered["run_id"]) == [rf.info.run_id]
    either = mlops.search_runs(filter_string="params.model = 'rf' OR params.model = 'lr'")
    assert set(either["run_id"]) == {rf.info.run_id, lr.info.run_id}
    failed = mlops.search_runs(filter_string="attributes.status = 'FAILED'")
    assert list(failed["run_id"]) == [broken.info.run_id]
    by_name = mlops.search_runs(experiment_names=["search"], filter_string="tags.release LIKE '%RC'")
    assert list(by_name["run_id"]) == [rf.info.run_id]
    as_list = mlops.search_runs(output_format="list", max_results=2)
    assert len(as_list) == 2 and all(isinstance(r, mlops.Run) for r in as_list)


def test_search_runs_empty_and_across_experiments(tracking_env) -> None:
    mlops.set_experiment("empty")
    empty = mlops.search_runs()
    assert empty.empty
    assert list(empty.columns) == ["run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time"]
    assert mlops.search_runs(experiment_names=["no such experiment"]).empty

    for name in ("a", "b"):
        mlops.set_experiment(name)
        with mlops.start_run():
            mlops.log_metric("m", 1.0)
    mlops.set_experiment("empty")
    assert len(mlops.search_runs(search_all_experiments=True)) == 2
    a, b = (mlops.get_experiment_by_name(n).experiment_id for n in ("a", "b"))
    assert len(mlops.search_runs([a, b])) == 2
    with pytest.raises(InvalidArgument, match="not both"):
        mlops.search_runs([a], experiment_names=["b"])
    with pytest.raises(InvalidArgument, match="output_format"):
        mlops.search_runs(output_format="json")


def test_deleted_runs_are_hidden_from_search(tracking_env) -> None:
    with mlops.start_run() as keep:
        pass
    with mlops.start_run() as drop:
        pass
    mlops.delete_run(drop.info.run_id)
    assert list(mlops.search_runs()["run_id"]) == [keep.info.run_id]
    deleted = mlops.search_runs(run_view_type=mlops.ViewType.DELETED_ONLY)
    assert list(deleted["run_id"]) == [drop.info.run_id]
    assert len(mlops.search_runs(run_view_type="ALL")) == 2
    assert mlops.get_run(drop.info.run_id).info.lifecycle_stage is LifecycleStage.DELETED


def test_set_tracking_uri_overrides_the_environment(tracking_env, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    mlops.set_tracking_uri(other)
    assert mlops.get_tracking_uri() == other
    with mlops.start_run() as run:
        mlops.log_metric("where", 1.0)
    assert mlops.TrackingClient(other).get_run(run.info.run_id).data.metrics == {"where": 1.0}
    with pytest.raises(NotFound):
        mlops.TrackingClient(tracking_env.tracking_uri).get_run(run.info.run_id)
    mlops.set_tracking_uri(None)
    assert mlops.get_tracking_uri() == tracking_env.tracking_uri


def test_active_experiment_belongs_to_its_database(tracking_env, tmp_path: Path) -> None:
    mlops.set_experiment("only-in-first-db")
    mlops.set_tracking_uri(f"sqlite:///{tmp_path / 'second.db'}")
    with mlops.start_run() as run:
        pass
    assert mlops.get_experiment(run.info.experiment_id).name == "Default"


def test_get_artifact_uri(tracking_env) -> None:
    with mlops.start_run() as run:
        base = mlops.get_artifact_uri()
        assert base == run.info.artifact_uri
        assert mlops.get_artifact_uri("plots/roc.png") == str(Path(base) / "plots" / "roc.png")
        with pytest.raises(InvalidArgument, match=r"\.\."):
            mlops.get_artifact_uri("../other-run")


def test_last_active_run(tracking_env) -> None:
    assert mlops.last_active_run() is None
    with mlops.start_run() as run:
        mlops.log_metric("m", 2.0)
        assert mlops.last_active_run().info.run_id == run.info.run_id
    last = mlops.last_active_run()
    assert last.info.run_id == run.info.run_id and last.info.status is RunStatus.FINISHED
    assert last.data.metrics == {"m": 2.0}


def test_threads_have_their_own_stack_unless_context_is_copied(tracking_env) -> None:
    seen: dict[str, object] = {}

    def fresh_thread() -> None:
        seen["fresh"] = _context.current_run()

    def copied_context_thread() -> None:
        seen["copied"] = mlops.active_run().info.run_id
        mlops.log_metric("from_thread", 1.0)
        with mlops.start_run(nested=True) as child:
            seen["child"] = child.info.run_id

    with mlops.start_run() as run:
        thread = threading.Thread(target=fresh_thread)
        thread.start()
        thread.join()
        ctx = contextvars.copy_context()
        thread = threading.Thread(target=ctx.run, args=(copied_context_thread,))
        thread.start()
        thread.join()
        # The thread's nested run did not change this thread's stack.
        assert mlops.active_run().info.run_id == run.info.run_id
    assert seen["fresh"] is None
    assert seen["copied"] == run.info.run_id
    assert mlops.get_run(run.info.run_id).data.metrics == {"from_thread": 1.0}
    assert mlops.get_run(seen["child"]).info.parent_run_id == run.info.run_id


def test_run_resolver_supplies_the_run_when_none_is_active(tracking_env) -> None:
    client = mlops.TrackingClient()
    experiment_id = client.create_experiment("flows")
    flow_run = client.create_run(experiment_id, run_name="flow")
    current = {"run_id": flow_run.info.run_id}
    resolver = lambda: current["run_id"]  # noqa: E731
    _context.register_run_resolver(resolver)
    _context.register_run_resolver(resolver)  # idempotent
    try:
        mlops.log_metric("from_resolver", 3.0)
        mlops.log_param("p", "v")
        assert mlops.active_run().info.run_id == flow_run.info.run_id
        with mlops.start_run() as child:  # inside a tracked flow: a child of the flow's run
            mlops.log_metric("in_child", 1.0)
        mlops.end_run()  # no-op: the resolver's run belongs to the integration
        assert client.get_run(flow_run.info.run_id).info.status is RunStatus.RUNNING
        current["run_id"] = None
        assert _context.resolve_run_id() is None
    finally:
        _context.unregister_run_resolver(resolver)
    stored = client.get_run(flow_run.info.run_id)
    assert stored.data.metrics == {"from_resolver": 3.0} and stored.data.params == {"p": "v"}
    child_run = client.get_run(child.info.run_id)
    assert child_run.info.parent_run_id == flow_run.info.run_id
    assert child_run.data.metrics == {"in_child": 1.0}


def test_using_active_run_restores_the_stack(tracking_env) -> None:
    client = mlops.TrackingClient()
    run = client.create_run(client.create_experiment("x"))
    with _context.using_active_run(run, client) as active:
        assert mlops.active_run() is active
        mlops.log_metric("m", 1.0)
    assert mlops.active_run() is None
    assert client.get_run(run.info.run_id).info.status is RunStatus.RUNNING  # not ended
    pushed = _context.set_active_run(run, client)
    assert _context.pop_active_run(run.info.run_id) is pushed
    assert _context.pop_active_run() is None


@pytest.mark.slow  # starts the session's Prefect test server if no other test did
def test_fluent_api_takes_settings_from_a_saved_block(
    prefect_harness, sqlite_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    from tracking_plugin.blocks import MlopsBackend

    block_db = f"sqlite:///{tmp_path / 'from-block.db'}"
    name = f"backend-{uuid.uuid4().hex[:8]}"
    MlopsBackend(tracking_uri=block_db, artifact_root=str(tmp_path / "block-artifacts")).save(name)
    monkeypatch.setenv("PREFECT_MLOPS_BLOCK", name)
    with mlops.start_run() as run:
        mlops.log_metric("where", 1.0)
        mlops.log_text("x", "x.txt")
    assert mlops.TrackingClient(block_db).get_run(run.info.run_id).data.metrics == {"where": 1.0}
    assert (tmp_path / "block-artifacts").is_dir()

    monkeypatch.setenv("PREFECT_MLOPS_BLOCK", "no-such-block-" + uuid.uuid4().hex[:6])
    with pytest.raises(InvalidArgument, match="No MlopsBackend block named"):
        mlops.start_run()


def test_leaving_a_block_ends_runs_left_open_inside_it(tracking_env) -> None:
    with pytest.raises(ValueError):
        with mlops.start_run() as outer:
            inner = mlops.start_run(nested=True)  # no with, never ended by the user
            raise ValueError("boom")
    assert mlops.active_run() is None
    assert mlops.get_run(inner.info.run_id).info.status is RunStatus.FAILED
    assert mlops.get_run(outer.info.run_id).info.status is RunStatus.FAILED
