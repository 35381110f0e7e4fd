"""Data sources: the churn generator, files on disk and in S3 (moto over HTTP), digests."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest

from prefect_mlops.flows.data import (
    ALL_COLUMNS,
    CATEGORICAL_COLUMNS,
    CATEGORY_VALUES,
    FEATURE_COLUMNS,
    LABEL_COLUMN,
    NUMERIC_COLUMNS,
    ChurnGenerator,
    DataSource,
    FileSource,
    dataset_digest,
    source_from_uri,
)
from tracking_plugin.errors import InvalidArgument, NotFound


# --------------------------------------------------------------------------- generator


def test_generator_is_deterministic_for_its_arguments() -> None:
    first = ChurnGenerator(seed=3, day=5, drift=0.4).load()
    second = ChurnGenerator(seed=3, day=5, drift=0.4).load()
    pd.testing.assert_frame_equal(first, second)
    assert dataset_digest(first) == dataset_digest(second)

    variants = [
        ChurnGenerator(seed=4, day=5, drift=0.4),
        ChurnGenerator(seed=3, day=6, drift=0.4),
        ChurnGenerator(seed=3, day=5, drift=0.5),
        ChurnGenerator(seed=3, day=5, drift=0.4, corrupt=True),
    ]
    digests = {dataset_digest(first)} | {dataset_digest(v.load()) for v in variants}
    assert len(digests) == 1 + len(variants)


def test_different_days_hold_different_customers_and_values() -> None:
    day0, day1 = ChurnGenerator(day=0).load(), ChurnGenerator(day=1).load()
    assert set(day0["customer_id"]).isdisjoint(day1["customer_id"])
    assert not np.array_equal(day0["monthly_charges"].to_numpy(), day1["monthly_charges"].to_numpy())


def test_generator_columns_dtypes_and_ranges() -> None:
    batch = ChurnGenerator(seed=1, n_rows=3000, day=9, start_date="2026-03-01").load()

    assert tuple(batch.columns) == ALL_COLUMNS
    assert set(FEATURE_COLUMNS) == set(NUMERIC_COLUMNS) | set(CATEGORICAL_COLUMNS)
    assert LABEL_COLUMN not in FEATURE_COLUMNS
    assert len(batch) == 3000
    assert batch["customer_id"].is_unique
    for column in ("customer_id", *CATEGORICAL_COLUMNS):
        assert pd.api.types.is_string_dtype(batch[column]), column
    for column in ("tenure_months", "num_support_calls", "churn"):
        assert batch[column].dtype == np.int64, column
    for column in ("monthly_charges", "total_charges"):
        assert batch[column].dtype == np.float64, column
    assert pd.api.types.is_datetime64_any_dtype(batch["batch_date"])
    assert (batch["batch_date"] == pd.Timestamp("2026-03-10")).all()
    assert batch.notna().all().all()

    assert batch["tenure_months"].between(0, 72).all()
    assert batch["monthly_charges"].between(18, 120).all()
    assert batch["num_support_calls"].between(0, 20).all()
    assert (batch["total_charges"] >= 0).all()
    for column, values in CATEGORY_VALUES.items():
        assert set(batch[column]) == set(values), column
    assert set(batch["churn"]) == {0, 1}
    assert 0.15 < batch["churn"].mean() < 0.45  # a churn rate, not a coin flip


def test_a_model_trained_on_one_batch_ranks_another_batch_well() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train = ChurnGenerator(seed=0, day=0).load()
    test = ChurnGenerator(seed=0, day=1).load()
    model = make_pipeline(
        ColumnTransformer(
            [
                ("num", StandardScaler(), list(NUMERIC_COLUMNS)),
                ("cat", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL_COLUMNS)),
            ]
        ),
        LogisticRegression(max_iter=1000),
    )
    model.fit(train[list(FEATURE_COLUMNS)], train[LABEL_COLUMN])
    auc = roc_auc_score(test[LABEL_COLUMN], model.predict_proba(test[list(FEATURE_COLUMNS)])[:, 1])
    assert 0.75 < auc < 0.95  # learnable, but not a leak


def test_drift_moves_the_distributions_it_promises() -> None:
    calm = ChurnGenerator(seed=2, day=1).load()
    drifted = ChurnGenerator(seed=2, day=1, drift=1.0).load()
    assert drifted["monthly_charges"].mean() > calm["monthly_charges"].mean() + 10
    share = lambda frame: (frame["contract"] == "month-to-month").mean()  # noqa: E731
    assert share(drifted) > share(calm) + 0.2
    assert drifted["tenure_months"].median() < calm["tenure_months"].median()
    assert drifted["churn"].mean() > calm["churn"].mean()


def test_corrupt_batch_has_all_four_faults_and_is_otherwise_its_clean_twin() -> None:
    clean = ChurnGenerator(seed=5, day=2).load()
    broken = ChurnGenerator(seed=5, day=2, corrupt=True).load()

    # 1. a missing column
    assert "num_support_calls" not in broken.columns
    assert set(broken.columns) == set(ALL_COLUMNS) - {"num_support_calls"}
    # 2. nulls in a required column
    assert broken["contract"].isna().sum() > 0
    # 3. out-of-range values
    assert (broken["tenure_months"] < 0).any()
    assert (broken["monthly_charges"] > 10_000).any()
    # 4. a wrong dtype: numbers as strings
    assert pd.api.types.is_string_dtype(broken["total_charges"])
    assert broken["total_charges"].iloc[0] == f"{clean['total_charges'].iloc[0]:.2f}"

    # Only the broken places differ.
    for column in ("customer_id", "payment_method", "internet_service", "batch_date", "churn"):
        pd.testing.assert_series_equal(broken[column], clean[column])
    intact = broken["contract"].notna()
    assert (broken.loc[intact, "contract"] == clean.loc[intact, "contract"]).all()


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"seed": -1}, "-1"),
        ({"n_rows": 0}, "n_rows"),
        ({"day": -2}, "day"),
        ({"drift": -0.1}, "-0.1"),
        ({"drift": float("nan")}, "nan"),
        ({"start_date": "someday"}, "someday"),
        ({"seed": 1.5}, "1.5"),
    ],
)
def test_generator_refuses_bad_arguments(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidArgument, match=named):
        ChurnGenerator(**kwargs)  # type: ignore[arg-type]


def test_generator_describe_round_trips_through_source_from_uri() -> None:
    generator = ChurnGenerator(seed=8, n_rows=321, day=4, drift=0.75, corrupt=True, start_date="2025-12-31")
    uri = generator.describe()
    assert uri.startswith("generator://churn?")
    assert "seed=8" in uri and "day=4" in uri and "drift=0.75" in uri and "corrupt=true" in uri
    again = source_from_uri(uri)
    assert again == generator
    pd.testing.assert_frame_equal(again.load(), generator.load())


@pytest.mark.parametrize(
    ("uri", "named"),
    [
        ("generator://telco?seed=1", "telco"),
        ("generator://churn?colour=red", "colour"),
        ("generator://churn?seed=abc", "abc"),
        ("generator://churn?corrupt=maybe", "maybe"),
        ("generator://churn?n_rows=0", "n_rows"),
    ],
)
def test_source_from_uri_refuses_bad_generator_uris(uri: str, named: str) -> None:
    with pytest.raises(InvalidArgument, match=named):
        source_from_uri(uri)


def test_sources_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(ChurnGenerator(), DataSource)
    assert isinstance(FileSource(str(tmp_path / "x.csv")), DataSource)
    assert isinstance(source_from_uri(str(tmp_path / "x.parquet")), FileSource)


# --------------------------------------------------------------------------- digest


def test_digest_changes_with_content_names_dtypes_and_index() -> None:
    frame = ChurnGenerator(n_rows=200).load()
    base = dataset_digest(frame)
    assert base == dataset_digest(frame.copy())
    assert len(base) == 64

    one_value = frame.copy()
    one_value.loc[17, "monthly_charges"] += 0.01
    renamed = frame.rename(columns={"contract": "contract_type"})
    retyped = frame.astype({"tenure_months": "float64"})  # same numbers, other dtype
    reindexed = frame.set_axis(frame.index + 1)
    reordered = frame[list(reversed(frame.columns))]
    for changed in (one_value, renamed, retyped, reindexed, reordered):
        assert dataset_digest(changed) != base


def test_digest_is_fast_for_100k_rows() -> None:
    frame = ChurnGenerator(n_rows=100_000).load()
    started = time.perf_counter()
    dataset_digest(frame)
    # Measured ~0.1 s; the bound leaves room for a busy 2-core machine.
    assert time.perf_counter() - started < 2.0


def test_digest_refuses_non_frames() -> None:
    with pytest.raises(InvalidArgument, match="list"):
        dataset_digest([1, 2, 3])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- local files


@pytest.fixture(scope="module")
def batch() -> pd.DataFrame:
    return ChurnGenerator(seed=11, n_rows=400, day=3).load()


def test_local_csv_round_trips(tmp_path: Path, batch: pd.DataFrame) -> None:
    path = tmp_path / "batch.csv"
    batch.to_csv(path, index=False)
    source = FileSource(str(path), parse_dates=("batch_date",))
    loaded = source.load()
    pd.testing.assert_frame_equal(loaded, batch)
    assert dataset_digest(loaded) == dataset_digest(batch)
    assert source.describe() == path.resolve().as_uri()


def test_local_gzipped_csv_and_file_uri(tmp_path: Path, batch: pd.DataFrame) -> None:
    path = tmp_path / "batch.csv.gz"
    with gzip.open(path, "wt") as handle:
        batch.to_csv(handle, index=False)
    loaded = FileSource(path.as_uri(), parse_dates=("batch_date",)).load()
    pd.testing.assert_frame_equal(loaded, batch)


def test_local_parquet_round_trips_with_types(tmp_path: Path, batch: pd.DataFrame) -> None:
    path = tmp_path / "batch.parquet"
    batch.to_parquet(path)
    loaded = FileSource(path.as_uri()).load()
    pd.testing.assert_frame_equal(loaded, batch)
    assert FileSource(str(path)).describe() == path.resolve().as_uri()


def test_missing_local_file_is_not_found_and_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "batch.csv"
    with pytest.raises(NotFound, match="nowhere/batch.csv"):
        FileSource(str(path)).load()


@pytest.mark.parametrize(
    ("name", "content", "detail"),
    [
        ("ragged.csv", b"a,b\n1,2\n3,4,5,6\n", "Expected 2 fields"),
        ("empty.csv", b"", "empty"),
        ("garbage.parquet", b"this is not parquet at all", "PARQUET"),
        ("truncated.csv.gz", b"\x1f\x8b\x08\x00broken", "CSV"),
    ],
)
def test_malformed_file_names_the_file_and_the_problem(
    tmp_path: Path, name: str, content: bytes, detail: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidArgument) as info:
        FileSource(str(path)).load()
    assert name in str(info.value)
    assert detail in str(info.value)


def test_truncated_parquet_is_refused(tmp_path: Path, batch: pd.DataFrame) -> None:
    path = tmp_path / "cut.parquet"
    batch.to_parquet(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InvalidArgument, match="cut.parquet"):
        FileSource(str(path)).load()


def test_unknown_extension_names_the_file_and_the_supported_types(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as info:
        FileSource(str(tmp_path / "batch.xlsx"))
    message = str(info.value)
    assert "batch.xlsx" in message
    assert ".csv" in message and ".parquet" in message


@pytest.mark.parametrize("uri", ["", "http://example.com/batch.csv", "s3://bucket-only", "s3:///key.csv"])
def test_unusable_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidArgument):
        FileSource(uri)


def test_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "batch.csv"
    folder.mkdir()
    with pytest.raises(InvalidArgument, match="directory"):
        FileSource(str(folder)).load()


# --------------------------------------------------------------------------- S3 (moto server)


def _put(endpoint: str, bucket: str, key: str, body: bytes) -> None:
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").put_object(
        Bucket=bucket, Key=key, Body=body
    )


def test_s3_csv_and_parquet(s3_env: str, s3_bucket: str, tmp_path: Path, batch: pd.DataFrame) -> None:
    _put(s3_env, s3_bucket, "in/batch.csv", batch.to_csv(index=False).encode())
    parquet = tmp_path / "b.parquet"
    batch.to_parquet(parquet)
    _put(s3_env, s3_bucket, "in/batch.parquet", parquet.read_bytes())

    csv_source = FileSource(f"s3://{s3_bucket}/in/batch.csv", parse_dates=("batch_date",))
    pd.testing.assert_frame_equal(csv_source.load(), batch)
    assert csv_source.describe() == f"s3://{s3_bucket}/in/batch.csv"
    pd.testing.assert_frame_equal(source_from_uri(f"s3://{s3_bucket}/in/batch.parquet").load(), batch)


def test_s3_missing_key_and_bucket_are_not_found(s3_env: str, s3_bucket: str) -> None:
    with pytest.raises(NotFound, match=f"s3://{s3_bucket}/in/absent.csv"):
        FileSource(f"s3://{s3_bucket}/in/absent.csv").load()
    with pytest.raises(NotFound, match="no-such-bucket-xyz"):
        FileSource("s3://no-such-bucket-xyz/batch.parquet").load()


def test_s3_malformed_file_names_the_uri(s3_env: str, s3_bucket: str) -> None:
    _put(s3_env, s3_bucket, "bad.parquet", b"not parquet")
    with pytest.raises(InvalidArgument, match=f"s3://{s3_bucket}/bad.parquet"):
        FileSource(f"s3://{s3_bucket}/bad.parquet").load()


def test_docstring_examples_run() -> None:
    import doctest

    from prefect_mlops.flows import data as module

    outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert outcome.attempted > 0
    assert outcome.failed == 0


def test_concept_drift_changes_labels_only() -> None:
    """concept=1: the same features, value for value, and a churn rate close to the
    original's, but a model trained on concept=0 ranks the new labels backwards."""
    from sklearn.metrics import roc_auc_score

    from prefect_mlops.flows.data import ChurnGenerator, source_from_uri
    from prefect_mlops.flows.training import TrainingConfig, build_pipeline

    train = ChurnGenerator(seed=4, day=0, n_rows=3000).load()
    plain = ChurnGenerator(seed=4, day=1, n_rows=3000).load()
    turned = source_from_uri("generator://churn?seed=4&day=1&n_rows=3000&concept=1").load()
    assert ChurnGenerator(seed=4, day=1, n_rows=3000, concept=1.0).describe().endswith("&concept=1.0")
    features = [c for c in plain.columns if c != LABEL_COLUMN]
    assert plain[features].equals(turned[features])
    assert abs(plain[LABEL_COLUMN].mean() - turned[LABEL_COLUMN].mean()) < 0.08
    model = build_pipeline(TrainingConfig(n_estimators=30)).fit(train[list(FEATURE_COLUMNS)], train[LABEL_COLUMN])
    assert roc_auc_score(plain[LABEL_COLUMN], model.predict_proba(plain[list(FEATURE_COLUMNS)])[:, 1]) > 0.75
    assert roc_auc_score(turned[LABEL_COLUMN], model.predict_proba(turned[list(FEATURE_COLUMNS)])[:, 1]) < 0.35
    with pytest.raises(InvalidArgument, match="concept must be a number from 0 to 1, got 1.5"):
        ChurnGenerator(concept=1.5)
