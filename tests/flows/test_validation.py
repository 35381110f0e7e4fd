"""Data validation with great-expectations against the suite kept in the repo."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest

from prefect_mlops.flows.data import ChurnGenerator, FileSource
from prefect_mlops.flows.validation import DEFAULT_SUITE_PATH, ValidationReport, load_suite, validate_batch
from tracking_plugin.errors import InvalidArgument, NotFound
from tracking_plugin.validation import validate_key

NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
TYPE_LIST = "expect_column_values_to_be_in_type_list"
IN_SET = "expect_column_values_to_be_in_set"
COLUMNS = "expect_table_columns_to_match_set"
ROWS = "expect_table_row_count_to_be_between"


@pytest.fixture(scope="module")
def suite() -> Any:
    return load_suite()


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return ChurnGenerator(seed=21, n_rows=1000, day=2).load()


def failed_pairs(report: ValidationReport) -> set[tuple[str, str | None]]:
    return {(o.type, o.column) for o in report.failed}


# --------------------------------------------------------------------------- the suite file


def test_suite_file_is_valid_json_that_round_trips(suite: Any) -> None:
    import great_expectations as gx

    on_disk = json.loads(DEFAULT_SUITE_PATH.read_text())
    assert on_disk["name"] == suite.name == "churn_batch"
    assert len(suite.expectations) == len(on_disk["expectations"]) >= 20
    assert suite.to_json_dict()["expectations"] == on_disk["expectations"]
    again = gx.ExpectationSuite(**json.loads(json.dumps(suite.to_json_dict())))
    assert again.to_json_dict() == suite.to_json_dict()
    # Every expectation says in words what it checks: the summaries show it.
    assert all(e.get("description") for e in on_disk["expectations"])


def test_missing_suite_file_is_not_found_and_named(tmp_path: Path) -> None:
    path = tmp_path / "suites" / "absent.json"
    with pytest.raises(NotFound, match="absent.json"):
        load_suite(path)


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        ('{"name": "s", "expectations": [', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"expectations": []}', "'name'"),
        ('{"name": "s", "expectations": {}}', "must be a list"),
        ('{"name": "s", "expectations": [{"type": "expect_column_to_be_purple", "kwargs": {}}]}', "expect_column_to_be_purple"),
        ('{"name": "s", "expectations": [{"type": "expect_column_values_to_be_between", "kwargs": {"min_value": 1}}]}', "column"),
        ('{"name": "s", "expectations": [{"type": "expect_column_to_exist", "kwargs": {"column": "a", "colour": 1}}]}', "colour"),
        ('{"name": "s", "expectations": [], "flavour": "sour"}', "flavour"),
        ('{"name": "s", "expectations": ["expect_column_to_exist"]}', "expectation #1"),
    ],
)
def test_malformed_suite_names_the_file_and_the_problem(tmp_path: Path, content: str, detail: str) -> None:
    path = tmp_path / "broken_suite.json"
    path.write_text(content)
    with pytest.raises(InvalidArgument) as info:
        load_suite(path)
    assert "broken_suite.json" in str(info.value)
    assert detail in str(info.value)


# --------------------------------------------------------------------------- clean batches


def test_clean_batch_passes(suite: Any, clean: pd.DataFrame) -> None:
    report = validate_batch(clean, suite)
    assert report.success, report.failure_summary()
    assert report.suite_name == "churn_batch"
    assert report.evaluated == len(suite.expectations) == report.successful
    assert report.unsuccessful == 0 and report.failed == ()
    assert report.success_percent == 100.0
    assert "passed" in report.failure_summary()
    assert "Data validation passed" in report.to_markdown()


@pytest.mark.parametrize("name", ["batch.csv", "batch.parquet"])
def test_clean_batch_read_back_from_a_file_passes(tmp_path: Path, suite: Any, clean: pd.DataFrame, name: str) -> None:
    path = tmp_path / name
    clean.to_csv(path, index=False) if name.endswith(".csv") else clean.to_parquet(path)
    report = validate_batch(FileSource(str(path)).load(), suite)
    assert report.success, report.failure_summary()


def test_drifted_batch_is_still_valid(suite: Any) -> None:
    # Drift is the drift monitor's business; the data is still well formed.
    report = validate_batch(ChurnGenerator(day=3, drift=1.5).load(), suite)
    assert report.success, report.failure_summary()


def test_extra_columns_are_refused_naming_them(suite: Any, clean: pd.DataFrame) -> None:
    # A column the schema does not know may be a leaked label (churned_next_month) or an
    # upstream change: the batch stops until the suite says it belongs.
    report = validate_batch(clean.assign(region="north"), suite)
    assert not report.success
    assert failed_pairs(report) == {(COLUMNS, None)}
    assert "unexpected columns: region" in report.failure_summary()


def test_default_suite_is_used_when_none_given(clean: pd.DataFrame) -> None:
    assert validate_batch(clean).suite_name == "churn_batch"


# --------------------------------------------------------------------------- corrupt batches


def test_corrupt_batch_fails_on_exactly_the_four_faults(suite: Any) -> None:
    report = validate_batch(ChurnGenerator(seed=21, day=2, corrupt=True).load(), suite)

    assert not report.success
    assert failed_pairs(report) == {
        (COLUMNS, None),  # missing column ...
        (NOT_NULL, "num_support_calls"),  # ... and every check on it
        (TYPE_LIST, "num_support_calls"),
        (BETWEEN, "num_support_calls"),
        (NOT_NULL, "contract"),  # nulls
        (BETWEEN, "tenure_months"),  # out of range
        (BETWEEN, "monthly_charges"),
        (TYPE_LIST, "total_charges"),  # wrong dtype
        (BETWEEN, "total_charges"),
    }
    assert report.unsuccessful == len(report.failed) == 9
    assert report.evaluated == report.successful + report.unsuccessful
    assert report.success_percent == pytest.approx(100 * report.successful / report.evaluated)
    # Failures come first in the outcomes.
    assert all(not o.success for o in report.outcomes[: report.unsuccessful])

    summary = report.failure_summary()
    assert summary.splitlines()[0].startswith("9 of ")
    assert len(summary.splitlines()) == 1 + 9
    assert "missing columns: num_support_calls" in summary
    assert "column 'contract'" in summary and "unexpected" in summary
    assert "observed type str" in summary
    assert "column 'num_support_calls' is missing from the batch" in summary


def _drop(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["payment_method"])


def _null(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[[3, 30], "internet_service"] = None
    return frame


def _negative(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[7, "tenure_months"] = -4
    return frame


def _huge(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[9, "monthly_charges"] = 12_345.0
    return frame


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({"monthly_charges": "str"})


def _unknown_category(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[1, "contract"] = "lifetime"
    return frame


def _bad_label(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[2, "churn"] = 2
    return frame


def _duplicate_customer(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[5, "customer_id"] = frame.loc[6, "customer_id"]
    return frame


@pytest.mark.parametrize(
    ("fault", "expected", "shown"),
    [
        (_drop, (COLUMNS, None), "missing columns: payment_method"),
        (_null, (NOT_NULL, "internet_service"), "2 unexpected"),
        (_negative, (BETWEEN, "tenure_months"), "-4"),
        (_huge, (BETWEEN, "monthly_charges"), "12345.0"),
        (_as_text, (TYPE_LIST, "monthly_charges"), "observed type str"),
        (_unknown_category, (IN_SET, "contract"), "lifetime"),
        (_bad_label, (IN_SET, "churn"), "1 unexpected"),
        (_duplicate_customer, ("expect_column_values_to_be_unique", "customer_id"), "2 unexpected"),
        (lambda frame: frame.head(50), (ROWS, None), "observed 50"),
    ],
)
def test_each_single_fault_is_caught_and_explained(
    suite: Any,
    clean: pd.DataFrame,
    fault: Callable[[pd.DataFrame], pd.DataFrame],
    expected: tuple[str, str | None],
    shown: str,
) -> None:
    report = validate_batch(fault(clean), suite)
    assert not report.success
    assert expected in failed_pairs(report)
    outcome = next(o for o in report.failed if (o.type, o.column) == expected)
    assert shown in outcome.observed
    assert shown in report.failure_summary()


def test_markdown_names_every_failed_expectation(suite: Any) -> None:
    report = validate_batch(ChurnGenerator(corrupt=True).load(), suite)
    markdown = report.to_markdown()
    assert markdown.startswith("## Data validation **FAILED**: suite `churn_batch`")
    fail_rows = [line for line in markdown.splitlines() if line.startswith("| **FAIL**")]
    assert len(fail_rows) == report.unsuccessful
    for outcome in report.failed:
        assert any(outcome.type in row and (outcome.column or "(table)") in row for row in fail_rows)
    # Every table row has the same number of cells: nothing in a cell broke the table.
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len({line.replace("\\|", "").count("|") for line in rows}) == 1


def test_raw_result_is_gx_json_and_matches_the_report(suite: Any) -> None:
    report = validate_batch(ChurnGenerator(corrupt=True).load(), suite)
    raw = json.loads(json.dumps(report.raw))  # serializable, as a run artifact must be
    assert raw["success"] is False
    assert raw["statistics"]["unsuccessful_expectations"] == report.unsuccessful
    assert len(raw["results"]) == report.evaluated


def test_metrics_are_loggable_and_count_the_failures(suite: Any) -> None:
    report = validate_batch(ChurnGenerator(corrupt=True).load(), suite)
    metrics = report.to_metrics()
    for key in metrics:
        validate_key(key, "metric")
    assert metrics["validation.success"] == 0.0
    assert metrics["validation.unsuccessful"] == 9.0
    assert metrics[f"validation.{NOT_NULL}.contract"] == 0.0
    assert metrics[f"validation.{NOT_NULL}.customer_id"] == 1.0
    assert metrics[f"validation.{COLUMNS}.table"] == 0.0
    per_expectation = {k: v for k, v in metrics.items() if k.count(".") >= 2}
    assert len(per_expectation) == report.evaluated
    assert sum(1 for v in per_expectation.values() if v == 0.0) == report.unsuccessful


# --------------------------------------------------------------------------- robustness


def test_refuses_things_that_are_not_frames_or_suites(suite: Any, clean: pd.DataFrame) -> None:
    with pytest.raises(InvalidArgument, match="DataFrame"):
        validate_batch(clean.to_dict(), suite)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="ExpectationSuite"):
        validate_batch(clean, {"name": "s", "expectations": []})  # type: ignore[arg-type]


def test_validation_leaves_the_suite_and_batch_untouched(suite: Any, clean: pd.DataFrame) -> None:
    suite_before = json.dumps(suite.to_json_dict(), sort_keys=True)
    frame_before = clean.copy()
    validate_batch(clean, suite)
    assert json.dumps(suite.to_json_dict(), sort_keys=True) == suite_before
    pd.testing.assert_frame_equal(clean, frame_before)


def test_concurrent_validations_do_not_mix_results(suite: Any) -> None:
    frames = [ChurnGenerator(seed=i, n_rows=300, corrupt=bool(i % 2)).load() for i in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = list(pool.map(lambda frame: validate_batch(frame, suite), frames))
    assert [r.success for r in reports] == [True, False, True, False]
    assert [r.unsuccessful for r in reports] == [0, 9, 0, 9]


def test_validating_10k_rows_is_quick(suite: Any) -> None:
    frame = ChurnGenerator(n_rows=10_000).load()
    validate_batch(frame, suite)  # warm-up: first use registers GX's metric providers
    started = time.perf_counter()
    report = validate_batch(frame, suite)
    elapsed = time.perf_counter() - started
    assert report.success
    # ~0.3 s measured on an idle 2-core machine; generous for a busy one.
    assert elapsed < 5.0


def test_docstring_examples_run() -> None:
    import doctest

    from prefect_mlops.flows import validation as module

    outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert outcome.attempted > 0
    assert outcome.failed == 0
