"""Where a training batch comes from: files (CSV or Parquet, local or S3) or a generator.

Every source has the same two calls, so a flow takes a URI and does not care which one
it got::

    >>> from prefect_mlops.flows.data import ChurnGenerator, source_from_uri
    >>> batch = ChurnGenerator(seed=1, day=3, n_rows=500).load()
    >>> batch.shape
    (500, 10)
    >>> source_from_uri("generator://churn?seed=1&day=3&n_rows=500").load().equals(batch)
    True

``FileSource`` reads ``.csv``, ``.csv.gz`` and ``.parquet`` files from a local path, a
``file://`` URI or ``s3://bucket/key`` (boto3, with the endpoint from
``PREFECT_MLOPS_S3_ENDPOINT_URL`` and boto3's usual credential chain). ``ChurnGenerator``
makes a telecom-churn-like batch, seeded and deterministic, with controllable drift and an
optional corrupted variant for exercising data validation. ``dataset_digest`` fingerprints
a frame for lineage.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

from tracking_plugin.errors import InvalidArgument
from tracking_plugin.tables import SUPPORTED_SUFFIXES, check_table_uri, local_table_path, read_table

__all__ = [
    "ALL_COLUMNS",
    "CATEGORICAL_COLUMNS",
    "CATEGORY_VALUES",
    "ChurnGenerator",
    "DATE_COLUMN",
    "DataSource",
    "FEATURE_COLUMNS",
    "FileSource",
    "ID_COLUMN",
    "LABEL_COLUMN",
    "NUMERIC_COLUMNS",
    "SUPPORTED_FILE_SUFFIXES",
    "dataset_digest",
    "fill_source_date",
    "source_from_uri",
]

ID_COLUMN = "customer_id"
DATE_COLUMN = "batch_date"
LABEL_COLUMN = "churn"
NUMERIC_COLUMNS: tuple[str, ...] = (
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "num_support_calls",
)
CATEGORY_VALUES: dict[str, tuple[str, ...]] = {
    "contract": ("month-to-month", "one-year", "two-year"),
    "payment_method": ("electronic-check", "mailed-check", "bank-transfer", "credit-card"),
    "internet_service": ("dsl", "fiber", "none"),
}
CATEGORICAL_COLUMNS: tuple[str, ...] = tuple(CATEGORY_VALUES)
#: What a model is trained on: every column except the id, the date and the label.
FEATURE_COLUMNS: tuple[str, ...] = NUMERIC_COLUMNS + CATEGORICAL_COLUMNS
ALL_COLUMNS: tuple[str, ...] = (ID_COLUMN, *FEATURE_COLUMNS, DATE_COLUMN, LABEL_COLUMN)

SUPPORTED_FILE_SUFFIXES: tuple[str, ...] = SUPPORTED_SUFFIXES


@runtime_checkable
class DataSource(Protocol):
    """Anything that can produce a batch as a DataFrame and say where it came from."""

    def load(self) -> pd.DataFrame:
        """Read (or make) the batch."""
        ...

    def describe(self) -> str:
        """A URI-like description of the batch's origin, recorded for lineage."""
        ...


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileSource:
    """A CSV or Parquet file on the local disk or in S3.

    ``uri`` is a plain path, a ``file://`` URI or ``s3://bucket/key``; the format comes from
    the extension (``.csv``, ``.csv.gz``, ``.parquet``). ``parse_dates`` names CSV columns
    to parse as datetimes (Parquet keeps its own types).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "batch.csv")
    >>> ChurnGenerator(n_rows=100).load().to_csv(path, index=False)
    >>> FileSource(path, parse_dates=("batch_date",)).load().shape
    (100, 10)
    """

    uri: str
    parse_dates: tuple[str, ...] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        if isinstance(self.parse_dates, str) or not all(isinstance(c, str) for c in self.parse_dates):
            raise InvalidArgument(
                f"parse_dates must be a sequence of column names, e.g. ('batch_date',), got {self.parse_dates!r}."
            )
        object.__setattr__(self, "parse_dates", tuple(self.parse_dates))
        check_table_uri(self.uri)  # fail at construction, before any I/O

    def describe(self) -> str:
        """``s3://bucket/key`` as given, or ``file:///absolute/path`` for local files."""
        if self.uri.startswith("s3://"):
            return self.uri
        return self._local_path().resolve().as_uri()

    def load(self) -> pd.DataFrame:
        """Read the file. Missing -> NotFound; unparseable -> InvalidArgument (both name it)."""
        return read_table(self.uri, parse_dates=self.parse_dates)

    def _local_path(self) -> Path:
        return local_table_path(self.uri)


# --------------------------------------------------------------------------- generator


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _pick(u: np.ndarray, probabilities: np.ndarray, values: tuple[str, ...]) -> np.ndarray:
    # Inverse-CDF sampling from uniforms drawn up front: a change of ``drift`` moves the
    # probabilities, not the random stream, so batches with and without drift stay paired.
    cdf = np.cumsum(probabilities)
    cdf[-1] = 1.0
    return np.asarray(values, dtype=object)[np.searchsorted(cdf, u, side="right")]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidArgument(f"ChurnGenerator {name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class ChurnGenerator:
    """A synthetic telecom-churn batch, deterministic for its arguments.

    One batch per ``day``: ``batch_date`` is ``start_date + day``. The label ``churn`` is
    drawn from a logistic function of the features, so a model can learn it (ROC AUC
    about 0.85). ``drift`` (0 = none, 1 = strong, more is allowed) raises monthly charges,
    moves the contract mix toward month-to-month, shortens tenure and changes how support
    calls and tenure relate to churn; PSI/KS flag it from about 0.5. ``corrupt=True`` adds
    the four faults data validation must catch: nulls in ``contract``, out-of-range values
    (negative ``tenure_months``, ``monthly_charges`` above 10,000), a missing
    ``num_support_calls`` column and ``total_charges`` as strings. ``concept`` (0 to 1) is
    pure concept drift: every feature value stays exactly as with ``concept=0`` (so no
    drift score moves), while the label's dependence on the features weakens (0.5: none)
    and turns around (1: reversed), at about the same churn rate.

    >>> ChurnGenerator(seed=7, day=2).load().equals(ChurnGenerator(seed=7, day=2).load())
    True
    """

    seed: int = 0
    n_rows: int = 2000
    day: int = 0
    drift: float = 0.0
    corrupt: bool = False
    start_date: str = "2026-01-01"
    concept: float = 0.0

    def __post_init__(self) -> None:
        _check_int("seed", self.seed, 0)
        _check_int("n_rows", self.n_rows, 1)
        _check_int("day", self.day, 0)
        if isinstance(self.drift, bool) or not isinstance(self.drift, (int, float)) or not (
            math.isfinite(self.drift) and self.drift >= 0
        ):
            raise InvalidArgument(f"ChurnGenerator drift must be a finite number >= 0, got {self.drift!r}.")
        if isinstance(self.concept, bool) or not isinstance(self.concept, (int, float)) or not 0 <= self.concept <= 1:
            raise InvalidArgument(f"ChurnGenerator concept must be a number from 0 to 1, got {self.concept!r}.")
        try:
            pd.Timestamp(self.start_date)
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(
                f"ChurnGenerator start_date {self.start_date!r} is not a date; use YYYY-MM-DD."
            ) from exc

    @property
    def batch_date(self) -> pd.Timestamp:
        """The date stamped on every row of this batch."""
        return pd.Timestamp(self.start_date).normalize() + pd.Timedelta(days=self.day)

    def describe(self) -> str:
        """``generator://churn?seed=..&day=..`` with every argument; round-trips via source_from_uri."""
        return (
            f"generator://churn?seed={self.seed}&n_rows={self.n_rows}&day={self.day}"
            f"&drift={float(self.drift)!r}&corrupt={str(self.corrupt).lower()}"
            f"&start_date={pd.Timestamp(self.start_date):%Y-%m-%d}"
            + (f"&concept={float(self.concept)!r}" if self.concept else "")
        )

    def load(self) -> pd.DataFrame:
        """Make the batch (a few tens of milliseconds for 10,000 rows)."""
        frame = self._clean()
        return self._corrupt(frame) if self.corrupt else frame

    def _clean(self) -> pd.DataFrame:
        n = self.n_rows
        rng = np.random.default_rng([self.seed, self.day])
        # Every random draw happens here, in a fixed order, independent of drift.
        u_contract, u_payment, u_internet, u_label = rng.random((4, n))
        z_tenure, z_charges, z_total = rng.standard_normal((3, n))
        support_base = rng.poisson(1.0, n)
        support_extra = rng.random(n)

        d = float(self.drift)
        s = min(d, 1.5)  # the mix shifts saturate so probabilities stay valid

        contract = _pick(
            u_contract,
            np.array([0.50 + 0.30 * s, 0.27 - 0.15 * s, 0.23 - 0.15 * s]),
            CATEGORY_VALUES["contract"],
        )
        payment = _pick(u_payment, np.array([0.34, 0.23, 0.22, 0.21]), CATEGORY_VALUES["payment_method"])
        internet = _pick(
            u_internet,
            np.array([0.35 - 0.10 * s, 0.45 + 0.15 * s, 0.20 - 0.05 * s]),
            CATEGORY_VALUES["internet_service"],
        )

        is_m2m = contract == "month-to-month"
        is_two = contract == "two-year"
        is_fiber = internet == "fiber"
        is_none = internet == "none"

        # Tenure: log-normal-ish, longer under longer contracts, shorter with drift.
        log_mean = np.where(is_m2m, 2.2, np.where(is_two, 3.7, 3.2)) - 0.35 * d
        tenure = np.clip(np.rint(np.exp(log_mean + 0.7 * z_tenure) - 1.0), 0, 72).astype(np.int64)

        base_charge = np.where(is_none, 24.0, np.where(is_fiber, 88.0, 55.0))
        monthly = np.round(np.clip(base_charge + 25.0 * d + 9.0 * z_charges, 18.0, 120.0), 2)
        total = np.round(monthly * tenure * (1.0 + 0.03 * z_total).clip(0.9, 1.1), 2)
        total = np.maximum(total, 0.0)

        extra_call = support_extra < np.where(is_fiber, 0.5, 0.2) + 0.25 * s
        support = np.clip(support_base + extra_call, 0, 20).astype(np.int64)

        # The label: what a model has to learn. Drift also changes the relationship a
        # little (support calls matter more, tenure less): concept drift, not only covariate.
        logit = (
            -1.9
            - 0.6 * d
            + 1.5 * is_m2m
            - 1.2 * is_two
            - 0.045 * tenure * (1.0 - 0.3 * min(d, 1.0))
            + 0.025 * (monthly - 65.0)
            + (0.35 + 0.25 * d) * support
            + 0.4 * is_fiber
            + 0.5 * (payment == "electronic-check")
        )
        if self.concept:  # turn the features' effect around its mean; features untouched
            intercept = -1.9 - 0.6 * d
            effect = logit - intercept
            logit = intercept + effect.mean() + (1.0 - 2.0 * float(self.concept)) * (effect - effect.mean())
        churn = (u_label < _sigmoid(logit)).astype(np.int64)

        ids = [f"C{self.seed:03d}-{self.day:04d}-{i:06d}" for i in range(n)]
        return pd.DataFrame(
            {
                ID_COLUMN: pd.array(ids, dtype="str"),
                "tenure_months": tenure,
                "monthly_charges": monthly,
                "total_charges": total,
                "num_support_calls": support,
                "contract": pd.array(contract, dtype="str"),
                "payment_method": pd.array(payment, dtype="str"),
                "internet_service": pd.array(internet, dtype="str"),
                DATE_COLUMN: pd.Series(np.full(n, self.batch_date), dtype="datetime64[us]"),
                LABEL_COLUMN: churn,
            }
        )

    def _corrupt(self, frame: pd.DataFrame) -> pd.DataFrame:
        n = len(frame)
        # A separate stream keyed on the same arguments: corruption does not disturb the
        # clean values, so a corrupt batch differs from its clean twin only where broken.
        rng = np.random.default_rng([self.seed, self.day, 0xBAD])
        k = max(1, n // 20)
        frame = frame.copy()
        frame.loc[rng.choice(n, k, replace=False), "contract"] = None
        frame.loc[rng.choice(n, k, replace=False), "tenure_months"] = -rng.integers(1, 12, k)
        frame.loc[rng.choice(n, k, replace=False), "monthly_charges"] = rng.uniform(10_001, 99_999, k).round(2)
        frame["total_charges"] = frame["total_charges"].map("{:.2f}".format).astype("str")
        return frame.drop(columns=["num_support_calls"])


# --------------------------------------------------------------------------- helpers


def fill_source_date(uri: str, when: date) -> str:
    """``uri`` with every ``{date}`` replaced by ``when`` as ``YYYY-MM-DD``.

    Scheduled deployments name "the batch of the day they run for" this way, e.g.
    ``s3://incoming/churn/{date}.parquet`` or ``generator://churn?seed=0&date={date}``.

    >>> fill_source_date("s3://in/churn/{date}.parquet", date(2026, 3, 1))
    's3://in/churn/2026-03-01.parquet'
    """
    return uri.replace("{date}", f"{when:%Y-%m-%d}")


def source_from_uri(uri: str) -> DataSource:
    """Turn a URI into a source: ``generator://churn?seed=1&day=3...`` or a file URI/path.

    The generator takes ``day=N`` or ``date=YYYY-MM-DD`` (the day that falls on that date,
    counted from ``start_date``). Flows take URIs rather than DataFrames as parameters (a
    DataFrame parameter would be sent to the Prefect API), and ``describe()`` returns a URI
    this function accepts.

    >>> source_from_uri("generator://churn?date=2026-01-04").day
    3
    """
    if not isinstance(uri, str):
        raise InvalidArgument(f"Data source URI must be a string, got {uri!r}.")
    if not uri.startswith("generator://"):
        return FileSource(uri)
    parts = urlsplit(uri)
    if parts.netloc != "churn":
        raise InvalidArgument(
            f"Unknown generator {parts.netloc!r} in {uri!r}; the built-in one is generator://churn."
        )
    converters = {"seed": int, "n_rows": int, "day": int, "drift": float, "start_date": str, "date": str, "concept": float}
    kwargs: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        try:
            if key == "corrupt":
                if value.lower() not in {"true", "false", "1", "0"}:
                    raise ValueError(value)
                kwargs[key] = value.lower() in {"true", "1"}
            elif key in converters:
                kwargs[key] = converters[key](value)
            else:
                raise InvalidArgument(
                    f"Unknown generator option {key!r} in {uri!r}; "
                    f"known options: {', '.join([*converters, 'corrupt'])}."
                )
        except ValueError as exc:
            if isinstance(exc, InvalidArgument):
                raise
            raise InvalidArgument(f"Generator option {key}={value!r} in {uri!r} is not valid.") from exc
    if "date" in kwargs:
        kwargs["day"] = _day_of(kwargs.pop("date"), kwargs, uri)
    return ChurnGenerator(**kwargs)


def _day_of(when: str, kwargs: dict[str, Any], uri: str) -> int:
    if "day" in kwargs:
        raise InvalidArgument(f"Give the generator day= or date=, not both, in {uri!r}.")
    if "{date}" in when:
        raise InvalidArgument(
            f"{uri!r} still holds the placeholder {{date}}: flows fill it with their run's date; "
            "outside a flow use flows.data.fill_source_date(uri, date)."
        )
    start = ChurnGenerator.__dataclass_fields__["start_date"].default
    start = kwargs.get("start_date", start)
    try:
        day = (pd.Timestamp(when).normalize() - pd.Timestamp(start).normalize()).days
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"Generator option date={when!r} in {uri!r} is not a date; use YYYY-MM-DD.") from exc
    if day < 0:
        raise InvalidArgument(f"Generator date {when} in {uri!r} is before its start_date {start}; use a later date.")
    return day


def dataset_digest(frame: pd.DataFrame) -> str:
    """sha256 of a frame's content, index, column names and dtypes (hex).

    Two frames with equal values, index, columns and dtypes have the same digest; it takes
    about 20 ms for 100,000 rows. Used as the dataset fingerprint in lineage.
    """
    if not isinstance(frame, pd.DataFrame):
        raise InvalidArgument(f"dataset_digest needs a pandas DataFrame, got {type(frame).__name__}.")
    digest = hashlib.sha256()
    header = "\x1f".join(f"{name}\x1e{dtype}" for name, dtype in frame.dtypes.items())
    digest.update(header.encode("utf-8"))
    digest.update(len(frame).to_bytes(8, "little"))
    if len(frame.columns):
        digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    else:
        digest.update(pd.util.hash_pandas_object(frame.index).to_numpy().tobytes())
    return digest.hexdigest()
