"""Data drift between a reference batch (the champion's training data) and a new batch.

Two per-feature scores, both common in production monitoring:

- PSI, the population stability index: ``sum((cur - ref) * ln(cur / ref))`` over bins.
  Numeric columns are cut at the reference's quantiles; categorical columns use their
  categories. Missing values get a bin of their own, so a column that starts arriving
  empty drifts too. Rule of thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 significant.
- KS, the two-sample Kolmogorov-Smirnov statistic (max distance between the two
  empirical CDFs, 0..1), numeric columns only; with ``method="ks"`` categorical columns
  are still scored with PSI, and each feature's result says which method scored it.

>>> from prefect_mlops.flows.data import ChurnGenerator, FEATURE_COLUMNS
>>> ref = ChurnGenerator(day=0).load()
>>> compute_drift(ref, ChurnGenerator(day=1).load(), FEATURE_COLUMNS).drifted
False
>>> compute_drift(ref, ChurnGenerator(day=1, drift=1.0).load(), FEATURE_COLUMNS).drifted
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Iterable

import numpy as np
import pandas as pd

from tracking_plugin.errors import InvalidArgument

__all__ = [
    "DriftMethod",
    "DriftReport",
    "DriftThresholds",
    "FeatureDrift",
    "compute_drift",
    "ks",
    "psi",
]

# Stands in for an empty bin so ln(cur/ref) stays finite; small against 1/n for any
# realistic batch, so it does not mask real differences.
_EPSILON = 1e-4
_MISSING = "<missing>"


class DriftMethod(str, Enum):
    """How a numeric feature is scored (categorical features always use PSI)."""

    PSI = "psi"
    KS = "ks"


def _is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def _check_series(reference: pd.Series, current: pd.Series, what: str) -> None:
    for label, series in (("reference", reference), ("current", current)):
        if not isinstance(series, pd.Series):
            raise InvalidArgument(f"{what}: {label} must be a pandas Series, got {type(series).__name__}.")
        if len(series) == 0:
            raise InvalidArgument(f"{what}: the {label} data for {series.name!r} is empty.")
    if _is_numeric(reference) != _is_numeric(current):
        raise InvalidArgument(
            f"{what}: column {reference.name!r} is {reference.dtype} in the reference but "
            f"{current.dtype} in the current batch; validate the batch before checking drift."
        )


def _psi_from_shares(ref: np.ndarray, cur: np.ndarray) -> float:
    ref = np.where(ref > 0, ref, _EPSILON)
    cur = np.where(cur > 0, cur, _EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` (0 = identical).

    Numeric series: ``bins`` quantile bins of the reference (fewer if it has few distinct
    values). Other series: one bin per category seen in either. Missing values: one bin.

    >>> import pandas as pd
    >>> round(psi(pd.Series(["a", "b"] * 50), pd.Series(["a", "b"] * 50)), 6)
    0.0
    """
    _check_series(reference, current, "psi")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise InvalidArgument(f"psi bins must be an integer >= 2, got {bins!r}.")
    if _is_numeric(reference):
        ref_values = reference.to_numpy(dtype=float, na_value=np.nan)
        cur_values = current.to_numpy(dtype=float, na_value=np.nan)
        ref_present = ref_values[~np.isnan(ref_values)]
        cur_present = cur_values[~np.isnan(cur_values)]
        if len(ref_present):
            inner = np.unique(np.quantile(ref_present, np.linspace(0, 1, bins + 1)[1:-1]))
        else:
            inner = np.array([])
        # Right-closed bins at the reference quantiles; values beyond them land in the end bins.
        ref_counts = np.bincount(np.searchsorted(inner, ref_present, side="left"), minlength=len(inner) + 1)
        cur_counts = np.bincount(np.searchsorted(inner, cur_present, side="left"), minlength=len(inner) + 1)
        ref_shares = np.append(ref_counts, len(ref_values) - len(ref_present)) / len(ref_values)
        cur_shares = np.append(cur_counts, len(cur_values) - len(cur_present)) / len(cur_values)
        return _psi_from_shares(ref_shares, cur_shares)
    ref_freq = reference.astype(object).fillna(_MISSING).value_counts(normalize=True)
    cur_freq = current.astype(object).fillna(_MISSING).value_counts(normalize=True)
    categories = ref_freq.index.union(cur_freq.index)
    return _psi_from_shares(
        ref_freq.reindex(categories, fill_value=0.0).to_numpy(dtype=float),
        cur_freq.reindex(categories, fill_value=0.0).to_numpy(dtype=float),
    )


def ks(reference: pd.Series, current: pd.Series) -> float:
    """Two-sample Kolmogorov-Smirnov statistic of two numeric series (0..1; NaNs ignored).

    >>> import pandas as pd
    >>> ks(pd.Series([1.0, 2.0, 3.0]), pd.Series([1.0, 2.0, 3.0]))
    0.0
    """
    from scipy.stats import ks_2samp

    _check_series(reference, current, "ks")
    if not _is_numeric(reference):
        raise InvalidArgument(
            f"ks: column {reference.name!r} is {reference.dtype}, not numeric; use psi for categories."
        )
    ref_values = reference.dropna().to_numpy(dtype=float)
    cur_values = current.dropna().to_numpy(dtype=float)
    if len(ref_values) == 0 or len(cur_values) == 0:
        raise InvalidArgument(f"ks: column {reference.name!r} has only missing values in one batch.")
    return float(ks_2samp(ref_values, cur_values).statistic)


@dataclass(frozen=True)
class DriftThresholds:
    """When a feature, and the batch as a whole, counts as drifted.

    A feature drifts when its score is above ``psi`` (PSI) or ``ks`` (KS statistic). The
    batch drifts when at least one feature drifts and the share of drifted features is at
    least ``share_of_features`` (0 = any drifted feature is enough).
    """

    psi: float = 0.2
    ks: float = 0.2
    share_of_features: float = 0.0

    def __post_init__(self) -> None:
        for name, value, upper in (("psi", self.psi, math.inf), ("ks", self.ks, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= upper):
                raise InvalidArgument(
                    f"Drift threshold {name}={value!r} must be a number > 0"
                    + (f" and <= {upper:g}." if upper != math.inf else ".")
                )
        share = self.share_of_features
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not (0 <= share <= 1):
            raise InvalidArgument(f"Drift threshold share_of_features={share!r} must be between 0 and 1.")


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift score."""

    column: str
    kind: str  # "numeric" | "categorical"
    method: DriftMethod
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift scores of a batch against a reference, and the verdict."""

    method: DriftMethod
    features: tuple[FeatureDrift, ...]
    thresholds: DriftThresholds
    n_reference: int
    n_current: int

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Columns whose score is over their threshold, in the order they were given."""
        return tuple(f.column for f in self.features if f.drifted)

    @property
    def share_drifted(self) -> float:
        """Fraction of the compared features that drifted."""
        return len(self.drifted_features) / len(self.features)

    @property
    def score(self) -> float:
        """The largest per-feature score (PSI and KS are both 0 when nothing changed)."""
        return max(f.score for f in self.features)

    @property
    def drifted(self) -> bool:
        """True when the batch as a whole counts as drifted (see DriftThresholds)."""
        return bool(self.drifted_features) and self.share_drifted >= self.thresholds.share_of_features

    @property
    def scores(self) -> dict[str, float]:
        """``{column: score}``, e.g. to log as metrics ``drift_<column>``."""
        return {f.column: f.score for f in self.features}

    def to_markdown(self) -> str:
        """A readable summary: verdict line and one table row per feature."""
        verdict = "**Drift detected**" if self.drifted else "No drift"
        lines = [
            f"## Data drift: {verdict}",
            "",
            f"{len(self.drifted_features)} of {len(self.features)} features drifted "
            f"({self.share_drifted:.0%}); reference {self.n_reference:,} rows, "
            f"current {self.n_current:,} rows; numeric method {self.method.value.upper()}, "
            f"thresholds PSI > {self.thresholds.psi:g}, KS > {self.thresholds.ks:g}.",
            "",
            "| feature | kind | method | score | threshold | drifted |",
            "|---|---|---|---:|---:|---|",
        ]
        for f in self.features:
            lines.append(
                f"| {f.column} | {f.kind} | {f.method.value} | {f.score:.4f} | {f.threshold:g} | "
                f"{'yes' if f.drifted else 'no'} |"
            )
        return "\n".join(lines) + "\n"


def compute_drift(
    reference_df: pd.DataFrame,
    current_df: pd.DataFrame,
    columns: Iterable[str],
    *,
    method: DriftMethod | str = DriftMethod.PSI,
    thresholds: DriftThresholds = DriftThresholds(),
    bins: int = 10,
) -> DriftReport:
    """Score each of ``columns`` of ``current_df`` against ``reference_df``.

    ``method`` scores numeric columns with ``"psi"`` or ``"ks"``; categorical columns are
    always scored with PSI. A column missing from either frame, an empty frame or a
    column whose kind differs between the frames raises InvalidArgument.
    """
    try:
        method = DriftMethod(method)
    except ValueError:
        raise InvalidArgument(
            f"Unknown drift method {method!r}; use one of: {', '.join(m.value for m in DriftMethod)}."
        ) from None
    if not isinstance(thresholds, DriftThresholds):
        raise InvalidArgument(f"thresholds must be a DriftThresholds, got {type(thresholds).__name__}.")
    for label, frame in (("reference", reference_df), ("current", current_df)):
        if not isinstance(frame, pd.DataFrame):
            raise InvalidArgument(f"The {label} data must be a pandas DataFrame, got {type(frame).__name__}.")
        if len(frame) == 0:
            raise InvalidArgument(f"The {label} data is empty (0 rows); drift needs rows in both batches.")
    columns = [columns] if isinstance(columns, str) else list(columns)
    if not columns:
        raise InvalidArgument("compute_drift needs at least one column to compare.")
    for column in columns:
        for label, frame in (("reference", reference_df), ("current", current_df)):
            if column not in frame.columns:
                raise InvalidArgument(
                    f"Column {column!r} is missing from the {label} data "
                    f"(it has: {', '.join(map(str, frame.columns))})."
                )

    features = []
    for column in columns:
        ref, cur = reference_df[column], current_df[column]
        numeric = _is_numeric(ref)
        use = method if numeric else DriftMethod.PSI
        score = ks(ref, cur) if use is DriftMethod.KS else psi(ref, cur, bins=bins)
        threshold = thresholds.ks if use is DriftMethod.KS else thresholds.psi
        features.append(
            FeatureDrift(
                column=column,
                kind="numeric" if numeric else "categorical",
                method=use,
                score=score,
                threshold=threshold,
                drifted=score > threshold,
            )
        )
    return DriftReport(
        method=method,
        features=tuple(features),
        thresholds=thresholds,
        n_reference=len(reference_df),
        n_current=len(current_df),
    )
