"""``@track`` on real Prefect flows and tasks (the session's ``prefect_test_harness``)."""

from __future__ import annotations

import asyncio
import platform
import time

import numpy as np
import pandas as pd
import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tracking_plugin import fluent
from tracking_plugin.entities import RunStatus
from tracking_plugin.errors import BackendUnavailable
from tracking_plugin.prefect import track


@track(experiment="train-exp", tags={"team": "ml"})
@flow
def train(n_estimators: int = 100, max_depth: int = 8, model: str = "rf") -> dict[str, float]:
    fluent.log_metric("loss", 0.5, step=1)
    return {"auc": 0.91, "n_trees": n_estimators, "note": "not a number", "ok": True}  # type: ignore[dict-item]


def test_flow_run_records_params_metrics_status_and_tags(tracking_any_db, runs_in) -> None:
    client = tracking_any_db
    before = int(time.time() * 1000)

    state = train(n_estimators=50, return_state=True)

    assert state.is_completed()
    [run] = runs_in(client, "train-exp")
    info = run.info
    assert info.status is RunStatus.FINISHED
    assert info.prefect_flow_run_id == str(state.state_details.flow_run_id)
    assert before <= info.start_time <= info.end_time <= int(time.time() * 1000)
    assert run.data.params == {"n_estimators": "50", "max_depth": "8", "model": "rf"}
    # Numbers of the returned mapping are metrics; text and booleans are not.
    assert run.data.metrics == {"auc": 0.91, "n_trees": 50.0, "loss": 0.5}
    tags = run.data.tags
    assert tags["prefect.flow_run_id"] == info.prefect_flow_run_id
    assert tags["prefect.flow_name"] == "train"
    assert tags["prefect.flow_run_name"] == info.run_name
    assert tags["prefect.state"] == "Completed"
    assert tags["team"] == "ml"
    assert tags["mlflow.user"] and tags["mlops.host"] == platform.node()
    assert tags["mlops.python_version"] == platform.python_version()
    assert tags["mlops.package.prefect"].startswith("3.")
    assert "mlflow.source.git.commit" in tags and tags["mlops.source.git.dirty"] in ("true", "false")
    # The Prefect flow-run id leads to the tracking run.
    assert client.get_run_by_prefect_id(flow_run_id=info.prefect_flow_run_id).info.run_id == info.run_id


@track
@flow
def boom(x: int = 1) -> None:
    fluent.log_metric("before_error", 1.0)
    raise ValueError(f"bad batch {x}")


def test_failing_flow_run_is_failed_with_the_error_message(tracking, runs_in) -> None:
    with pytest.raises(ValueError, match="bad batch 7"):
        boom(7)

    [run] = runs_in(tracking, "boom")  # experiment defaults to the flow's name
    assert run.info.status is RunStatus.FAILED
    assert "ValueError: bad batch 7" in run.data.tags["mlops.state_message"]
    assert run.data.tags["prefect.state"] == "Failed"
    assert run.data.metrics == {"before_error": 1.0}
    assert run.info.end_time is not None


@track
@flow
def child_flow(k: int) -> dict[str, float]:
    fluent.log_metric("child_metric", float(k))
    return {"k2": float(k * k)}


@flow
def untracked_child() -> None:
    fluent.log_metric("from_untracked_subflow", 3.0)


@track(experiment="nesting")
@flow
def parent_flow() -> dict[str, float]:
    child_flow(3)
    untracked_child()
    fluent.log_metric("parent_metric", 1.0)
    return {}


def test_subflow_is_a_nested_run_of_its_parents_run(tracking, runs_in) -> None:
    parent_flow()

    parents = runs_in(tracking, "nesting")
    [parent] = parents
    [child] = runs_in(tracking, "child-flow")
    assert child.info.parent_run_id == parent.info.run_id
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.status is RunStatus.FINISHED
    assert child.data.params == {"k": "3"} and child.data.metrics == {"child_metric": 3.0, "k2": 9.0}
    # An untracked subflow's fluent calls land in the nearest tracked run.
    assert parent.data.metrics == {"parent_metric": 1.0, "from_untracked_subflow": 3.0}


@task(cache_policy=NO_CACHE)
def untracked_step(i: int) -> int:
    fluent.log_metric("step_metric", float(i), step=i)
    fluent.set_tag(f"seen_{i}", "yes")
    return i


@track(experiment="threads")
@flow
def fan_out() -> dict[str, float]:
    futures = untracked_step.map(range(6))
    return {"total": float(sum(f.result() for f in futures))}


def test_fluent_calls_in_task_threads_attach_to_the_flow_run(tracking, runs_in) -> None:
    fan_out()

    [run] = runs_in(tracking, "threads")  # untracked tasks create no runs of their own
    history = tracking.get_metric_history(run.info.run_id, "step_metric")
    assert sorted(m.step for m in history) == list(range(6))
    assert all(run.data.tags[f"seen_{i}"] == "yes" for i in range(6))
    assert run.data.metrics["total"] == 15.0


@track(experiment="summaries")
@flow
def with_data(frame: pd.DataFrame, weights: np.ndarray, blob: str, thing: object = None) -> None:
    return None


def test_data_and_odd_params_are_summarised_never_dumped(tracking, runs_in) -> None:
    frame = pd.DataFrame({"a": range(1000), "b": [f"s{i}" for i in range(1000)]})
    blob = "x" * 20_000

    with_data(frame, np.ones((30, 4)), blob, thing=object())

    [run] = runs_in(tracking, "summaries")
    params = run.data.params
    assert params["frame"].startswith("DataFrame(shape=(1000, 2), dtypes={a: int64, b: str}, sha256=")
    assert params["weights"].startswith("ndarray(shape=(30, 4), dtype=float64, sha256=")
    assert len(params["blob"]) <= 6000 and "20000 chars" in params["blob"]
    assert params["thing"] == "<builtins.object>"
    assert run.info.status is RunStatus.FINISHED
    # The digest is a content fingerprint: same data, same digest; other data, other digest.
    with_data(frame.copy(), np.ones((30, 4)), "y")
    with_data(frame.assign(a=frame["a"] + 1), np.ones((30, 4)), "y")
    digests = [r.data.params["frame"] for r in runs_in(tracking, "summaries")]
    assert digests[0] == digests[1] != digests[2]


@track(experiment="retries")
@flow(retries=1, retry_delay_seconds=0)
def flaky() -> dict[str, float]:
    attempt = fluent.active_run().info.run_id  # the same run on every attempt
    fluent.log_metric("attempt", 1.0)
    _ATTEMPTS.append(attempt)
    if len(_ATTEMPTS) == 1:
        raise RuntimeError("transient")
    return {"done": 1.0}


_ATTEMPTS: list[str] = []


def test_retried_flow_keeps_one_run_and_ends_finished(tracking, runs_in) -> None:
    _ATTEMPTS.clear()

    flaky()

    [run] = runs_in(tracking, "retries")
    assert _ATTEMPTS == [run.info.run_id, run.info.run_id]
    assert run.info.status is RunStatus.FINISHED
    assert len(tracking.get_metric_history(run.info.run_id, "attempt")) == 2


@track(experiment="async")
@flow
async def async_train(lr: float = 0.1) -> dict[str, float]:
    await asyncio.sleep(0)
    fluent.log_metric("inner", 2.0)
    return {"score": lr * 10}


def test_async_flow(tracking, runs_in) -> None:
    asyncio.run(async_train(lr=0.2))

    [run] = runs_in(tracking, "async")
    assert run.info.status is RunStatus.FINISHED
    assert run.data.params == {"lr": "0.2"}
    assert run.data.metrics == {"inner": 2.0, "score": 2.0}


@flow
@track(experiment="under")
def tracked_under_flow(a: int = 1) -> dict[str, float]:
    return {"a": float(a)}


def test_track_under_flow_also_records_the_flow_run(tracking, runs_in) -> None:
    state = tracked_under_flow(a=4, return_state=True)

    [run] = runs_in(tracking, "under")
    assert run.info.prefect_flow_run_id == str(state.state_details.flow_run_id)
    assert run.info.status is RunStatus.FINISHED and run.data.metrics == {"a": 4.0}


@track(experiment="plain")
def plain_function(x: int) -> dict[str, float]:
    fluent.log_metric("inside", 1.0)
    return {"x": float(x)}


def test_track_on_a_plain_function_outside_prefect(tracking, runs_in) -> None:
    assert plain_function(3) == {"x": 3.0}

    [run] = runs_in(tracking, "plain")
    assert run.info.status is RunStatus.FINISHED and run.info.prefect_flow_run_id is None
    assert run.data.params == {"x": "3"} and run.data.metrics == {"inside": 1.0, "x": 3.0}


def test_buffered_logging_is_flushed_before_the_run_closes(tracking, runs_in, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_MLOPS_ASYNC_LOGGING", "true")
    monkeypatch.setenv("PREFECT_MLOPS_ASYNC_FLUSH_INTERVAL", "30")  # only an explicit flush writes

    @track(experiment="buffered")
    @flow
    def many_points() -> None:
        for step in range(500):
            fluent.log_metric("curve", step / 500, step=step)

    many_points()

    [run] = runs_in(tracking, "buffered")
    assert run.info.status is RunStatus.FINISHED
    assert len(tracking.get_metric_history(run.info.run_id, "curve")) == 500


def test_unreachable_backend_fails_the_flow_at_start(prefect_harness, tmp_path, monkeypatch) -> None:
    ran: list[bool] = []

    @track(tracking_uri="postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    @flow
    def needs_backend() -> None:
        ran.append(True)

    state = needs_backend(return_state=True)

    assert state.is_failed()
    with pytest.raises(BackendUnavailable, match="127.0.0.1"):
        state.result()
    assert ran == []  # the body never ran: nothing was computed and then lost


@pytest.mark.parametrize(
    "target",
    [42, "train", object(), [train]],
    ids=["int", "str", "object", "list"],
)
def test_decorating_something_else_is_a_clear_type_error(target) -> None:
    with pytest.raises(TypeError, match="@track decorates a Prefect flow, a Prefect task or a function"):
        track(target)
    with pytest.raises(TypeError, match="@track decorates"):
        track(experiment="x")(target)


def test_decorating_twice_or_a_generator_is_refused() -> None:
    with pytest.raises(TypeError, match="already decorated with @track"):
        track(train)

    def gen():  # type: ignore[no-untyped-def]
        yield 1

    with pytest.raises(TypeError, match="generator"):
        track(flow(gen))


def test_tracked_flow_keeps_its_prefect_identity() -> None:
    # Name, parameter schema and type validation survive the wrapping.
    assert train.name == "train"
    assert set(train.parameters.properties) == {"n_estimators", "max_depth", "model"}
    assert train.parameters.properties["n_estimators"]["type"] == "integer"
    assert train.fn.__name__ == "train" and train.fn.__wrapped__.__name__ == "train"


@track(experiment="deployed")
@flow
def nightly(rows: int = 10) -> dict[str, float]:
    return {"rows": float(rows)}


def test_deployed_flow_run_records_the_deployment(tracking, runs_in) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(nightly.name)
        deployment_id = client.create_deployment(flow_id, "nightly-prod", parameters={"rows": 7})
        flow_run = client.create_flow_run_from_deployment(deployment_id)

    run_flow(nightly, flow_run=flow_run, parameters={"rows": 7})  # what a worker does

    [run] = runs_in(tracking, "deployed")
    assert run.info.prefect_flow_run_id == str(flow_run.id)
    assert run.data.tags["prefect.deployment_name"] == "nightly-prod"
    assert run.data.tags["prefect.deployment_id"] == str(deployment_id)
    assert run.data.params == {"rows": "7"} and run.info.status is RunStatus.FINISHED


@track(experiment="crashing")
@flow
def crashes() -> None:
    raise SystemExit(3)  # the process is going away: Prefect reports the run Crashed


def test_crashed_flow_run_is_killed(tracking, runs_in) -> None:
    with pytest.raises(SystemExit):
        crashes()

    [run] = runs_in(tracking, "crashing")
    assert run.info.status is RunStatus.KILLED
    assert run.data.tags["prefect.state"] == "Crashed"


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


@track(experiment="odd")
@flow(validate_parameters=False)
def odd_params(thing: object, nested: dict) -> dict[str, float]:
    return {"ok": 1.0}


def test_unrecordable_param_values_never_break_the_flow(tracking, runs_in) -> None:
    odd_params(Unprintable(), {"deep": {"er": {"est": {"x": 1}}}, "k": "v" * 7000})

    [run] = runs_in(tracking, "odd")
    assert run.info.status is RunStatus.FINISHED and run.data.metrics == {"ok": 1.0}
    assert run.data.params["thing"] == "<unrecordable Unprintable>"
    assert run.data.params["nested.deep.er.est"] == '{"x":1}'
    assert len(run.data.params["nested.k"]) <= 6000
