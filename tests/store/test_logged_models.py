"""Logged models, run inputs/outputs and replay-safe metric batches in the SQL store."""

from __future__ import annotations

import math

import pytest

from tracking_plugin.entities import DatasetInput, LoggedModelStatus, Metric
from tracking_plugin.errors import Conflict, InvalidArgument, NotFound
from tracking_plugin.store.sql import SqlStore


def _run(store: SqlStore) -> tuple[str, str]:
    experiment_id = store.create_experiment("lm", "s3://bucket/root/abc")
    return experiment_id, store.create_run(experiment_id, user_id="u", start_time=1).info.run_id


def test_logged_model_lifecycle(store: SqlStore) -> None:
    experiment_id, run_id = _run(store)
    model = store.create_logged_model(
        experiment_id, name="model", model_type="sklearn", source_run_id=run_id, params={"C": "1"}, tags={"a": "1"}
    )
    assert model.model_id.startswith("m-") and model.status is LoggedModelStatus.PENDING
    assert model.artifact_location == f"s3://bucket/root/abc/models/{model.model_id}/artifacts"
    ready = store.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    assert ready.status is LoggedModelStatus.READY
    assert store.set_logged_model_tags(model.model_id, {"a": "2", "b": "3"}).tags == {"a": "2", "b": "3"}
    store.delete_logged_model_tag(model.model_id, "a")
    store.log_logged_model_params(model.model_id, {"C": "1", "depth": "4"})
    with pytest.raises(Conflict, match="'C'"):
        store.log_logged_model_params(model.model_id, {"C": "2"})
    got = store.get_logged_model(model.model_id)
    assert got.tags == {"b": "3"} and got.params == {"C": "1", "depth": "4"} and got.source_run_id == run_id

    other = store.create_logged_model(experiment_id, name="other")
    found = store.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    assert [m.model_id for m in found] == [model.model_id]
    assert {m.model_id for m in store.search_logged_models([experiment_id], filter_string="name LIKE 'oth%'")} == {other.model_id}
    first = store.search_logged_models([experiment_id], max_results=1)
    assert len(first) == 1 and first.token is not None
    assert len(store.search_logged_models([experiment_id], max_results=1, page_token=first.token)) == 1
    store.delete_logged_model(other.model_id)
    assert [m.model_id for m in store.search_logged_models([experiment_id])] == [model.model_id]

    with pytest.raises(NotFound):
        store.get_logged_model("m-" + "0" * 32)
    with pytest.raises(InvalidArgument, match="logged model id"):
        store.get_logged_model("../etc")
    with pytest.raises(InvalidArgument):
        store.search_logged_models([experiment_id], filter_string="metrics.acc > 1")


def test_run_inputs_and_outputs(store: SqlStore) -> None:
    experiment_id, run_id = _run(store)
    model = store.create_logged_model(experiment_id, source_run_id=run_id)
    store.log_run_outputs(run_id, [(model.model_id, 2), (model.model_id, 3)])
    dataset = DatasetInput(name="train", digest="abc", source_type="s3", source="s3://d/train", tags={"ctx": "training"})
    store.log_run_inputs(run_id, [dataset, dataset], [model.model_id])
    inputs, outputs = store.get_run_inputs_outputs(run_id)
    assert inputs.datasets == (dataset,) and inputs.model_ids == (model.model_id,)
    assert outputs.models == ((model.model_id, 3),)
    with pytest.raises(NotFound):
        store.log_run_outputs(run_id, [("m-" + "1" * 32, 0)])


def test_skip_logged_points_makes_a_replayed_batch_a_no_op(store: SqlStore) -> None:
    _, run_id = _run(store)
    batch = [Metric("loss", 0.5, 10, 0), Metric("loss", math.nan, 11, 1), Metric("acc", 0.9, 10, 0)]
    for _ in range(3):
        store.log_batch(run_id, metrics=batch, skip_logged_points=True)
    assert [(m.step, m.value) for m in store.get_metric_history(run_id, "acc")] == [(0, 0.9)]
    history = store.get_metric_history(run_id, "loss")
    assert len(history) == 2 and math.isnan(history[1].value)
    # A different value at the same step and time is a new point; without the flag a repeat
    # is kept on PostgreSQL, and is the same point on SQLite (keyed by the point, as MLflow).
    store.log_batch(run_id, metrics=[Metric("loss", 0.4, 10, 0)], skip_logged_points=True)
    store.log_batch(run_id, metrics=[Metric("acc", 0.9, 10, 0)])
    repeats = 2 if store.db.dialect == "postgresql" else 1
    assert len(store.get_metric_history(run_id, "loss")) == 3 and len(store.get_metric_history(run_id, "acc")) == repeats


def test_delete_experiment_tag(store: SqlStore) -> None:
    experiment_id = store.create_experiment("tags", "/tmp/x", tags={"a": "1", "b": "2"})
    store.delete_experiment_tag(experiment_id, "a")
    assert store.get_experiment(experiment_id).tags == {"b": "2"}
    with pytest.raises(NotFound, match="'a'"):
        store.delete_experiment_tag(experiment_id, "a")
