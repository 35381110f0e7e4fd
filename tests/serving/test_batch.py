"""Batch scoring: ``score_table`` (no Prefect) and the ``batch_predict`` task in real flow
runs, on DataFrames, local CSV/Parquet files and S3 (moto over HTTP)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest

from serving_tasks.batch import score_table
from serving_tasks.tasks import batch_predict
from tracking_plugin.errors import InvalidArgument, NotFound

FEATURES = ["plan", "tenure", "charges"]


def churn_rows(n: int, seed: int = 7) -> pd.DataFrame:
    """Rows the churn models accept (plan 0-2), plus an ``id`` column to carry through."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype="int64"),
            "plan": rng.integers(0, 3, n),
            "tenure": rng.uniform(0, 72, n).round(3),
            "charges": rng.uniform(20, 120, n).round(2),
        }
    )


@pytest.fixture(scope="module")
def label_model_dir(
    tmp_path_factory: pytest.TempPathFactory, churn_data: Any, make_churn_pipeline: Callable[..., Any]
) -> str:
    """The churn pipeline with plain ``predict`` (one 0/1 label per row)."""
    from tracking_plugin.models import save_model

    X, y = churn_data
    path = tmp_path_factory.mktemp("batch-models") / "labels"
    save_model(make_churn_pipeline(X, y), path, input_example=X.head(3))
    return str(path)


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", f"sqlite:///{tmp_path / 'mlops.db'}")
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------ score_table, no Prefect


def test_scores_a_dataframe_in_chunks_and_keeps_requested_columns(label_model_dir: str) -> None:
    from tracking_plugin.models import load_model

    frame = churn_rows(2_500)
    calls: list[tuple[int, int, int]] = []
    result = score_table(
        label_model_dir, frame, chunk_size=1_000, keep_columns=["id"], progress=lambda *a: calls.append(a)
    )
    assert calls == [(1, 3, 1_000), (2, 3, 1_000), (3, 3, 500)]
    assert (result.rows, result.chunks, result.output) == (2_500, 3, None)
    assert result.rows_per_second > 0
    predictions = result.predictions
    assert predictions is not None
    assert list(predictions.columns) == ["id", "prediction"]
    expected = load_model(label_model_dir).predict(frame[FEATURES])
    np.testing.assert_array_equal(predictions["prediction"].to_numpy(), np.asarray(expected))
    np.testing.assert_array_equal(predictions["id"].to_numpy(), frame["id"].to_numpy())


def test_multi_output_models_get_one_column_each_and_csv_output(churn_model_dir: str, tmp_path: Path) -> None:
    from tracking_plugin.models import load_model

    frame = churn_rows(300)
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "out" / "scores.csv"
    result = score_table(churn_model_dir, str(source), str(out), chunk_size=128, prediction_column="p")
    assert (result.output, result.predictions, result.chunks) == (str(out), None, 3)

    written = pd.read_csv(out)
    assert list(written.columns) == ["p_0", "p_1"]  # predict_proba: one column per class
    expected = np.asarray(load_model(churn_model_dir).predict(frame[FEATURES]))
    np.testing.assert_allclose(written.to_numpy(), expected, rtol=1e-12)


def test_an_empty_table_scores_to_an_empty_result(label_model_dir: str) -> None:
    result = score_table(label_model_dir, churn_rows(0), keep_columns=["id"])
    assert result.rows == 0
    assert result.predictions is not None and list(result.predictions.columns) == ["id", "prediction"]


def test_bad_options_are_refused_before_the_model_or_data_is_read(tmp_path: Path) -> None:
    missing_model = str(tmp_path / "no-model")
    frame = churn_rows(10)
    with pytest.raises(InvalidArgument, match="Invalid chunk_size 0"):
        score_table(missing_model, frame, chunk_size=0)
    with pytest.raises(InvalidArgument, match="Invalid chunk_size 2.5"):
        score_table(missing_model, frame, chunk_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"'scores\.json'.*\.parquet"):
        score_table(missing_model, frame, "scores.json")
    with pytest.raises(InvalidArgument, match="unsupported scheme"):
        score_table(missing_model, "ftp://host/in.csv")
    with pytest.raises(InvalidArgument, match="pass a pandas DataFrame or the URI"):
        score_table(missing_model, frame.to_dict())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="'id' is also in keep_columns"):
        score_table(missing_model, frame, prediction_column="id", keep_columns=["id"])
    assert list(tmp_path.iterdir()) == []


def test_data_errors_name_the_file_or_the_column(label_model_dir: str, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="missing.parquet"):
        score_table(label_model_dir, str(tmp_path / "missing.parquet"))
    with pytest.raises(InvalidArgument, match=r"keep_columns \['customer'\]"):
        score_table(label_model_dir, churn_rows(5), keep_columns=["customer"])
    with pytest.raises(InvalidArgument, match="charges"):
        score_table(label_model_dir, churn_rows(5).drop(columns=["charges"]))
    out = tmp_path / "never.parquet"
    with pytest.raises(InvalidArgument):
        score_table(label_model_dir, churn_rows(5).drop(columns=["charges"]), str(out))
    assert not out.exists()  # nothing half-written when scoring fails


# --------------------------------------------------------------- batch_predict in flows


def _s3_parquet(bucket: str, key: str, endpoint: str, frame: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """Put ``frame`` at s3://bucket/key, or read it back (boto3 directly, not our code)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    if frame is not None:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
        return None
    return pd.read_parquet(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def test_batch_predict_scores_100k_rows_from_s3_in_a_tracked_flow(
    prefect_harness: None, backend: Path, s3_env: str, s3_bucket: str, churn_model_dir: str
) -> None:
    from prefect import flow

    from tracking_plugin.client import TrackingClient
    from tracking_plugin.models import load_model
    from tracking_plugin.prefect import track

    frame = churn_rows(100_000)
    _s3_parquet(s3_bucket, "batches/today.parquet", s3_env, frame)
    source, target = f"s3://{s3_bucket}/batches/today.parquet", f"s3://{s3_bucket}/scores/today.parquet"

    @track(experiment="nightly-scoring")
    @flow
    def nightly(input_uri: str, output_uri: str) -> int:
        return batch_predict(churn_model_dir, input_uri, output_uri, chunk_size=30_000, keep_columns=["id"]).rows

    assert nightly(source, target) == 100_000

    written = _s3_parquet(s3_bucket, "scores/today.parquet", s3_env)
    assert written is not None
    assert list(written.columns) == ["id", "prediction_0", "prediction_1"]
    np.testing.assert_array_equal(written["id"].to_numpy(), frame["id"].to_numpy())
    expected = np.asarray(load_model(churn_model_dir).predict(frame[FEATURES]))
    np.testing.assert_allclose(written[["prediction_0", "prediction_1"]].to_numpy(), expected, rtol=1e-12)

    client = TrackingClient()
    experiment = client.get_experiment_by_name("nightly-scoring")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["batch_predict_rows"] == 100_000
    assert run.data.metrics["batch_predict_seconds"] > 0
    assert run.data.metrics["batch_predict_rows_per_second"] == pytest.approx(
        100_000 / run.data.metrics["batch_predict_seconds"]
    )


def test_batch_predict_records_on_the_active_run_and_returns_predictions(
    prefect_harness: None, backend: Path, label_model_dir: str
) -> None:
    from prefect import flow

    import tracking_plugin as mlops

    frame = churn_rows(1_000)

    @flow
    def score(df: pd.DataFrame) -> Any:
        return batch_predict(label_model_dir, df, chunk_size=400)

    with mlops.start_run() as run:
        result = score(frame)
    assert result.rows == 1_000 and result.chunks == 3
    assert len(result.predictions) == 1_000
    metrics = mlops.get_run(run.info.run_id).data.metrics
    assert metrics["batch_predict_rows"] == 1_000

    # No tracked flow and no active run: nothing is recorded, and no run is started.
    before = len(mlops.search_runs(output_format="list"))
    score(frame)
    assert len(mlops.search_runs(output_format="list")) == before
