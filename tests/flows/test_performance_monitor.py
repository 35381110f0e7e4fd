"""Live model quality: the prediction log joined with late labels (``flows.performance``)
and the ``performance_monitor`` flow under the session's Prefect API, on a concept drift
(labels change, features do not) that it detects and announces with
``mlops.performance.degraded``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from prefect_mlops.flows.performance import expected_calibration_error, live_metrics, read_labels, read_prediction_log
from serving_tasks._payload import ParsedPayload
from serving_tasks._prediction_log import PredictionLogger
from serving_tasks._served_model import ServedModel, predictions_to_json
from tracking_plugin.errors import InvalidArgument


def test_labels_with_a_missing_column_are_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": ["a"], "label": [1]}).to_csv(path, index=False)
    with pytest.raises(InvalidArgument, match="no column 'churn'"):
        read_labels(str(path))
    pd.DataFrame({"request_id": ["a"], "churn": ["yes"]}).to_csv(path, index=False)
    with pytest.raises(InvalidArgument, match="not 0 or 1"):
        read_labels(str(path))


def test_duplicated_labels_keep_the_latest_and_unknown_ids_are_counted(tmp_path: Path) -> None:
    folder = tmp_path / "labels"
    folder.mkdir()
    pd.DataFrame({"request_id": ["a", "b"], "churn": [0, 1], "labeled_at": ["2026-01-02", "2026-01-02"]}).to_parquet(folder / "1.parquet")
    pd.DataFrame({"request_id": ["a", "zz"], "churn": [1, 0], "labeled_at": ["2026-01-03", "2026-01-03"]}).to_csv(folder / "2.csv", index=False)
    labels = read_labels(str(folder))
    assert dict(zip(labels["request_id"], labels["churn"])) == {"a": 1, "b": 1, "zz": 0}
    preds = pd.DataFrame({"request_id": ["a", "b", "c"], "model_version": 1, "date": "2026-01-02", "probability": [0.8, 0.6, 0.1]})
    result = live_metrics(preds, labels)
    assert result.unknown_labels == 1
    row = result.table.iloc[0]
    assert (row["n_predictions"], row["n_labeled"]) == (3, 2) and row["label_rate"] == pytest.approx(2 / 3)
    assert row["recall"] == 1.0 and row["precision"] == 1.0 and np.isnan(row["roc_auc"])  # one class only


def test_labels_of_multi_row_requests_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": ["a", "a", "a", "b"], "row": [0, 1, 1, 5], "churn": [1, 1, 0, 1]}).to_csv(path, index=False)
    labels = read_labels(str(path))
    assert labels.to_dict("records") == [
        {"request_id": "a", "row": 0, "churn": 1}, {"request_id": "a", "row": 1, "churn": 0}, {"request_id": "b", "row": 5, "churn": 1},
    ]
    preds = pd.DataFrame({"request_id": ["a", "a"], "row": [0, 1], "model_version": 3, "date": "2026-01-02", "probability": [0.9, 0.2]})
    result = live_metrics(preds, labels)
    assert result.unknown_labels == 1  # b/5 was never logged
    row = result.table.iloc[0]
    assert row["n_labeled"] == 2 and row["roc_auc"] == 1.0 and row["model_version"] == 3


def test_a_corrupt_log_file_is_skipped_and_reported(tmp_path: Path) -> None:
    log = PredictionLogger(str(tmp_path), flush_interval=3600)
    served = ServedModel.wrap(object(), "m", name="churn", version=2)
    log.offer(served, ParsedPayload(n_rows=2, columns={"x": [1.0, 2.0]}), b"[0.2,0.9]", "r1")
    log.stop()
    folder = next(tmp_path.rglob("*.parquet")).parent
    (folder / "part-broken.parquet").write_bytes(b"PAR1 not really")
    read = read_prediction_log(str(tmp_path), "churn")
    assert read.files == 2 and len(read.frame) == 2 and list(read.frame["model_version"]) == [2, 2]
    [skipped] = read.skipped
    assert "part-broken.parquet" in skipped


def test_ece_of_a_calibrated_and_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    proba = rng.random(20_000)
    y = (rng.random(20_000) < proba).astype(int)
    assert expected_calibration_error(y, proba) < 0.02
    assert expected_calibration_error(y, np.where(proba > 0.5, 1.0, 0.0)) > 0.2


def _log_days(champion_uri: str, log_root: Path, days: dict[int, pd.DataFrame]) -> dict[int, pd.DataFrame]:
    """Score each day's batch with the champion and log it as the server would (one
    request of 20 rows at a time, stamped at noon of its day). Returns each batch with
    its rows' request id and position in the request."""
    from prefect_mlops.flows.data import FEATURE_COLUMNS
    from tracking_plugin.models import load_model

    served = ServedModel.wrap(load_model(champion_uri), champion_uri, name="churn", version=1)
    log = PredictionLogger(str(log_root), flush_interval=3600, max_queue_rows=10**6)
    out = {}
    for day, batch in days.items():
        at = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc).timestamp() + day * 86400
        ids, positions = [], []
        for start in range(0, len(batch), 20):
            rows = batch.iloc[start : start + 20][list(FEATURE_COLUMNS)].reset_index(drop=True)
            request_id = f"d{day}-{start}"
            log.offer(served, ParsedPayload(n_rows=len(rows), frame=rows), predictions_to_json(served.model.predict(rows)), request_id, at=at)
            ids += [request_id] * len(rows)
            positions += list(range(len(rows)))
        out[day] = batch.assign(request_id=ids, row=positions)
    log.stop()
    assert log.stats()["dropped_rows"] == 0
    return out


@pytest.mark.slow
def test_concept_drift_is_detected_recorded_and_announced(backend: Any, helpers: Any, tmp_path: Path) -> None:
    from prefect_mlops.flows.ct_pipeline import ct_pipeline
    from prefect_mlops.flows.data import source_from_uri
    from prefect_mlops.flows.drift_monitor import drift_monitor
    from prefect_mlops.flows.performance_monitor import PERFORMANCE_DEGRADED, performance_monitor

    trained = ct_pipeline(source=helpers.source(day=0), serve_port=None, return_state=True, **helpers.FAST)
    assert trained.is_completed(), trained.message
    # From day 3 on, churn no longer follows the features the model learned (concept
    # drift: the generator's concept=1 keeps every feature value and turns the labels).
    sources = {day: helpers.source(day=day, n_rows=600) + ("&concept=1" if day >= 3 else "") for day in (1, 2, 3, 4)}
    batches = {day: source_from_uri(uri).load() for day, uri in sources.items()}
    logged = _log_days("models:/churn/1", tmp_path / "log", batches)

    labels = []
    for day, frame in logged.items():
        # 80% of the rows get their label; a label names its row by request id and position.
        labels.append(pd.DataFrame({"request_id": frame["request_id"], "row": frame["row"], "churn": frame["churn"]}).iloc[: int(len(frame) * 0.8)])
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    for i, frame in enumerate(labels):
        frame.to_parquet(labels_dir / f"day-{i}.parquet")

    # The drift monitor sees nothing: the features did not move.
    calm = drift_monitor(source=sources[3], return_state=True).result()
    assert calm["drifted"] == 0.0

    state = performance_monitor(
        predictions_uri=str(tmp_path / "log"), labels_source=str(labels_dir), retrain_source="generator://churn?seed=0&day=5",
        return_state=True,
    )
    assert state.is_completed(), state.message
    result = state.result()
    assert result["degraded"] == 1.0 and result["days"] == 4 and result["version"] == 1
    assert result["labeled_rows"] == 4 * 480 and result["unknown_labels"] == 0
    [event] = helpers.events_of(str(state.state_details.flow_run_id), PERFORMANCE_DEGRADED)
    assert event.resource["mlops.model.name"] == "churn" and event.resource["mlops.model.version"] == "1"
    assert [d["date"] for d in event.payload["days"]] == ["2026-01-04", "2026-01-05"]
    assert all(d["roc_auc"] < 0.5 for d in event.payload["days"])
    assert event.payload["retrain_source"] == "generator://churn?seed=0&day=5"

    # The monitoring run: linked to the version, one point per day in the metric history.
    client = backend.tracking()
    experiment = client.get_experiment_by_name("churn-performance-monitor")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.tags["model.name"] == "churn" and run.data.tags["model.version"] == "1"
    history = client.get_metric_history(run.info.run_id, "live_roc_auc")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    by_step = {m.step: m.value for m in history}
    assert by_step[0] > 0.75 and by_step[1] > 0.75 and by_step[2] < 0.5 and by_step[3] < 0.5
    assert {m.value for m in client.get_metric_history(run.info.run_id, "live_label_rate")} == {0.8}
    assert run.data.metrics["degraded"] == 1.0 and run.data.metrics["latest_roc_auc"] < 0.5
    version_tags = backend.registry().get_version("churn", 1).tags
    assert version_tags["monitoring.run_id"] == run.info.run_id and version_tags["monitoring.status"] == "degraded"

    # Healthy days only: no event.
    healthy = tmp_path / "healthy"
    healthy.mkdir()
    pd.concat(labels[:2]).to_parquet(healthy / "labels.parquet")
    fine = performance_monitor(predictions_uri=str(tmp_path / "log"), labels_source=str(healthy / "labels.parquet"), return_state=True)
    assert fine.result()["degraded"] == 0.0
    assert helpers.count_events(str(fine.state_details.flow_run_id), PERFORMANCE_DEGRADED) == 0
