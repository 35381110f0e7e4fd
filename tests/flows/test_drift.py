"""Drift scores (PSI, KS) and the batch-level verdict, on generated churn batches."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from prefect_mlops.flows.data import CATEGORICAL_COLUMNS, FEATURE_COLUMNS, NUMERIC_COLUMNS, ChurnGenerator
from prefect_mlops.flows.drift import DriftMethod, DriftReport, DriftThresholds, compute_drift, ks, psi
from tracking_plugin.errors import InvalidArgument


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return ChurnGenerator(seed=4, day=0).load()


# --------------------------------------------------------------------------- batch verdicts


@pytest.mark.parametrize("method", ["psi", "ks"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_drift_between_two_ordinary_days(method: str, seed: int) -> None:
    report = compute_drift(
        ChurnGenerator(seed=seed, day=0).load(),
        ChurnGenerator(seed=seed, day=1).load(),
        FEATURE_COLUMNS,
        method=method,
    )
    assert not report.drifted
    assert report.drifted_features == ()
    assert report.score < 0.1  # sampling noise only, well under the 0.2 thresholds


@pytest.mark.parametrize("method", ["psi", "ks"])
@pytest.mark.parametrize("drift", [0.5, 1.0, 2.0])
def test_drift_is_detected_from_half_strength(reference: pd.DataFrame, method: str, drift: float) -> None:
    report = compute_drift(
        reference, ChurnGenerator(seed=4, day=1, drift=drift).load(), FEATURE_COLUMNS, method=method
    )
    assert report.drifted
    assert "monthly_charges" in report.drifted_features
    # payment_method is the one feature drift leaves alone.
    assert "payment_method" not in report.drifted_features


def test_scores_grow_with_drift_on_the_shifted_features(reference: pd.DataFrame) -> None:
    scores = [
        compute_drift(reference, ChurnGenerator(seed=4, day=1, drift=d).load(), FEATURE_COLUMNS).scores
        for d in (0.0, 0.5, 1.0)
    ]
    for column in ("monthly_charges", "tenure_months", "contract"):
        assert scores[0][column] < scores[1][column] < scores[2][column], column
    assert scores[2]["payment_method"] < 0.05


def test_ks_method_scores_numeric_with_ks_and_categorical_with_psi(reference: pd.DataFrame) -> None:
    current = ChurnGenerator(seed=4, day=1, drift=1.0).load()
    report = compute_drift(reference, current, FEATURE_COLUMNS, method=DriftMethod.KS)
    by_column = {f.column: f for f in report.features}
    for column in NUMERIC_COLUMNS:
        assert by_column[column].method is DriftMethod.KS
        assert by_column[column].kind == "numeric"
        assert by_column[column].score == pytest.approx(ks(reference[column], current[column]))
        assert by_column[column].threshold == 0.2
    for column in CATEGORICAL_COLUMNS:
        assert by_column[column].method is DriftMethod.PSI
        assert by_column[column].kind == "categorical"
        assert by_column[column].score == pytest.approx(psi(reference[column], current[column]))
    assert [f.column for f in report.features] == list(FEATURE_COLUMNS)


def test_thresholds_decide_per_feature_and_for_the_batch(reference: pd.DataFrame) -> None:
    current = ChurnGenerator(seed=4, day=1, drift=0.5).load()
    default = compute_drift(reference, current, FEATURE_COLUMNS)
    strict = compute_drift(reference, current, FEATURE_COLUMNS, thresholds=DriftThresholds(psi=0.01))
    lax = compute_drift(reference, current, FEATURE_COLUMNS, thresholds=DriftThresholds(psi=50.0))
    assert set(default.drifted_features) < set(strict.drifted_features)
    assert not lax.drifted and lax.drifted_features == ()

    # share_of_features: a batch drifts only when enough of its features drift.
    assert 0 < default.share_drifted < 0.9
    most = compute_drift(reference, current, FEATURE_COLUMNS, thresholds=DriftThresholds(share_of_features=0.9))
    assert most.drifted_features == default.drifted_features
    assert not most.drifted


def test_report_markdown_and_scores(reference: pd.DataFrame) -> None:
    report = compute_drift(reference, ChurnGenerator(seed=4, day=1, drift=1.0).load(), FEATURE_COLUMNS)
    assert isinstance(report, DriftReport)
    assert report.n_reference == report.n_current == 2000
    assert report.score == max(report.scores.values())
    assert list(report.scores) == list(FEATURE_COLUMNS)
    markdown = report.to_markdown()
    assert "Drift detected" in markdown
    for feature in report.features:
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {feature.column} |"))
        assert f"{feature.score:.4f}" in row
        assert row.rstrip().endswith("yes |" if feature.drifted else "no |")
    calm = compute_drift(reference, ChurnGenerator(seed=4, day=1).load(), FEATURE_COLUMNS).to_markdown()
    assert "No drift" in calm and "Drift detected" not in calm


# --------------------------------------------------------------------------- psi and ks


def test_psi_of_identical_data_is_zero() -> None:
    values = pd.Series(np.random.default_rng(0).normal(size=1000))
    assert psi(values, values) == pytest.approx(0.0, abs=1e-12)
    assert psi(pd.Series(["a", "b", "b"]), pd.Series(["b", "a", "b"])) == pytest.approx(0.0, abs=1e-12)


def test_psi_of_categories_matches_the_formula() -> None:
    reference = pd.Series(["a"] * 50 + ["b"] * 50)
    current = pd.Series(["a"] * 80 + ["b"] * 20)
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(reference, current) == pytest.approx(expected)


def test_psi_of_numbers_separates_a_shift_from_noise() -> None:
    rng = np.random.default_rng(1)
    reference = pd.Series(rng.normal(0, 1, 5000))
    assert psi(reference, pd.Series(rng.normal(0, 1, 5000))) < 0.02
    assert psi(reference, pd.Series(rng.normal(1, 1, 5000))) > 0.5
    # Values beyond the reference's range fall in the end bins and still count.
    assert psi(reference, pd.Series(rng.normal(0, 1, 5000) + 100)) > 5


def test_psi_sees_new_categories_and_missing_values() -> None:
    reference = pd.Series(["a", "b"] * 500)
    assert psi(reference, pd.Series(["a", "b", "c", "c"] * 250)) > 0.5
    assert psi(reference, pd.Series(["a", None] * 500)) > 0.5
    numbers = pd.Series(np.arange(1000.0))
    half_missing = numbers.where(numbers % 2 == 0)
    assert psi(numbers, half_missing) > 0.5
    assert math.isfinite(psi(numbers, half_missing))


def test_psi_handles_few_distinct_values() -> None:
    reference = pd.Series([0, 1] * 500)
    assert psi(reference, reference.copy()) == pytest.approx(0.0, abs=1e-12)
    assert psi(reference, pd.Series([1] * 1000)) > 1


def test_ks_is_scipys_statistic() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 800), rng.normal(0.3, 1, 900)
    assert ks(pd.Series(a), pd.Series(b)) == pytest.approx(ks_2samp(a, b).statistic)
    assert ks(pd.Series(a), pd.Series(a)) == 0.0


# --------------------------------------------------------------------------- errors


def test_missing_column_is_named(reference: pd.DataFrame) -> None:
    current = ChurnGenerator(seed=4, day=1).load().drop(columns=["contract"])
    with pytest.raises(InvalidArgument, match="'contract' is missing from the current"):
        compute_drift(reference, current, FEATURE_COLUMNS)
    with pytest.raises(InvalidArgument, match="'region' is missing from the reference"):
        compute_drift(reference, current.assign(region="x"), ["region"])


def test_empty_frames_are_refused(reference: pd.DataFrame) -> None:
    with pytest.raises(InvalidArgument, match="current data is empty"):
        compute_drift(reference, reference.head(0), FEATURE_COLUMNS)
    with pytest.raises(InvalidArgument, match="reference data is empty"):
        compute_drift(reference.head(0), reference, FEATURE_COLUMNS)
    with pytest.raises(InvalidArgument, match="empty"):
        psi(pd.Series([], dtype=float), pd.Series([1.0]))


def test_kind_mismatch_is_refused_with_both_dtypes(reference: pd.DataFrame) -> None:
    current = reference.astype({"monthly_charges": "str"})
    with pytest.raises(InvalidArgument) as info:
        compute_drift(reference, current, ["monthly_charges"])
    assert "monthly_charges" in str(info.value)
    assert "float64" in str(info.value) and "str" in str(info.value)


def test_other_bad_arguments(reference: pd.DataFrame) -> None:
    with pytest.raises(InvalidArgument, match="wasserstein"):
        compute_drift(reference, reference, FEATURE_COLUMNS, method="wasserstein")
    with pytest.raises(InvalidArgument, match="at least one column"):
        compute_drift(reference, reference, [])
    with pytest.raises(InvalidArgument, match="not numeric"):
        ks(reference["contract"], reference["contract"])
    with pytest.raises(InvalidArgument, match="bins"):
        psi(reference["tenure_months"], reference["tenure_months"], bins=1)
    for bad in ({"psi": 0}, {"ks": 1.5}, {"share_of_features": -0.1}, {"psi": "high"}):
        with pytest.raises(InvalidArgument):
            DriftThresholds(**bad)  # type: ignore[arg-type]


def test_docstring_examples_run() -> None:
    import doctest

    from prefect_mlops.flows import drift as module

    outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert outcome.attempted > 0
    assert outcome.failed == 0
