"""Live model quality: logged predictions joined with the labels that have arrived.

The scoring server's prediction log (``--log-predictions``, see
:mod:`serving_tasks._prediction_log`) holds what each model version answered; labels come
later, from a CSV/Parquet file, a folder or an ``s3://`` prefix of such files, keyed by the
request id the server returned (``X-Request-ID``) or by an entity key logged with the
inputs (e.g. ``customer_id``). No Prefect here: :mod:`flows.performance_monitor` records
and acts on what these functions compute.

- :func:`read_prediction_log`: one model's logged rows (optionally one version); a file
  that cannot be read is skipped and named in ``skipped``, never fatal;
- :func:`read_labels`: the labels, checked (a missing column is refused naming it);
  duplicated keys keep the latest (by ``labeled_at`` when present, else the last row);
- :func:`live_metrics`: per version and day, ``n_predictions``, ``n_labeled``,
  ``label_rate``, ``roc_auc``, ``precision``, ``recall`` (at 0.5) and ``ece`` (expected
  calibration error over 10 bins); labels whose key matches no prediction are counted.

>>> import pandas as pd
>>> preds = pd.DataFrame({"request_id": ["a", "b", "c", "d"], "model_version": 1,
...     "date": "2026-01-02", "probability": [0.9, 0.2, 0.8, 0.3], "prediction": [1, 0, 1, 0]})
>>> labels = pd.DataFrame({"request_id": ["a", "b", "c", "zz"], "churn": [1, 0, 0, 1]})
>>> result = live_metrics(preds, labels, key="request_id", label_column="churn")
>>> row = result.table.iloc[0]
>>> result.unknown_labels, int(row["n_labeled"]), float(row["label_rate"])
(1, 3, 0.75)
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tracking_plugin.errors import InvalidArgument, NotFound

__all__ = ["LiveMetrics", "PredictionLog", "expected_calibration_error", "live_metrics", "read_labels", "read_prediction_log"]

_LABEL_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class PredictionLog:
    """Logged rows (with ``model_version`` and ``date`` columns) and the files skipped."""

    frame: pd.DataFrame
    files: int
    skipped: list[str] = field(default_factory=list)


def _walk(repo: Any, path: str | None = None) -> list[str]:
    out: list[str] = []
    for info in repo.list_artifacts(path):
        if info.is_dir:
            out.extend(_walk(repo, info.path))
        else:
            out.append(info.path)
    return out


def _partition(path: str) -> dict[str, str]:
    parts = {}
    for piece in posixpath.dirname(path).split("/"):
        name, eq, value = piece.partition("=")
        if eq:
            parts[name] = value
    return parts


def read_prediction_log(uri: str, model_name: str, version: int | None = None, *, settings: Any = None) -> PredictionLog:
    """The rows ``model_name`` (one ``version``, or all) logged under ``uri``."""
    import pyarrow.parquet as pq
    from urllib.parse import quote

    from tracking_plugin.artifacts import get_artifact_repository

    repo = get_artifact_repository(uri, settings)
    base = f"model={quote(model_name, safe='-_.')}"
    if version is not None:
        base += f"/version={int(version)}"
    frames, skipped, files = [], [], 0
    for path in _walk(repo, base):
        if not path.endswith(".parquet"):
            continue
        files += 1
        partition = _partition(path)
        try:
            frame = pq.read_table(io.BytesIO(repo.read_bytes(path))).to_pandas()
            frame["model_version"] = int(partition["version"])
            frame["date"] = partition["date"]
        except Exception as exc:  # a corrupt or partial file: report it, keep the rest
            skipped.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["request_id", "model_version", "date"])
    return PredictionLog(frame=frame, files=files, skipped=skipped)


def read_labels(source: str, *, key: str = "request_id", label_column: str = "churn", settings: Any = None) -> pd.DataFrame:
    """Labels from a CSV/Parquet file, or every such file under a folder / ``s3://`` prefix.

    Returns ``key`` and ``label_column`` (0/1), one row per key (the latest label wins).
    A ``row`` column, when present, labels one row of a multi-row request: the key is then
    (``key``, ``row``), ``row`` being the row's position in its request as logged.
    """
    from tracking_plugin.artifacts import get_artifact_repository

    if source.lower().endswith(_LABEL_SUFFIXES):
        parent, name = posixpath.split(source.rstrip("/"))
        repo = get_artifact_repository(parent or ".", settings)
        paths = [name]
    else:
        repo = get_artifact_repository(source, settings)
        paths = sorted(p for p in _walk(repo) if p.lower().endswith(_LABEL_SUFFIXES))
    frames = []
    for path in paths:
        data = repo.read_bytes(path)
        frame = pd.read_csv(io.BytesIO(data)) if path.lower().endswith(".csv") else pd.read_parquet(io.BytesIO(data))
        for column in (key, label_column):
            if column not in frame.columns:
                raise InvalidArgument(
                    f"The labels file {source if path == posixpath.basename(source) else posixpath.join(source, path)} "
                    f"has no column {column!r} (it has {', '.join(map(str, frame.columns))}); "
                    f"labels need the join key {key!r} and the label {label_column!r}."
                )
        frames.append(frame)
    if not frames:
        raise NotFound(f"No label files (.csv, .parquet) under {source!r} yet.")
    labels = pd.concat(frames, ignore_index=True)
    values = pd.to_numeric(labels[label_column], errors="coerce")
    bad = labels.loc[~values.isin([0, 1]), label_column]
    if len(bad):
        raise InvalidArgument(
            f"The labels in {source!r} have {len(bad)} value(s) of {label_column!r} that are not 0 or 1 "
            f"(e.g. {bad.iloc[0]!r}); labels must be 0/1."
        )
    labels = labels.assign(**{label_column: values.astype(int), key: labels[key].astype(str)})
    if "labeled_at" in labels.columns:
        labels = labels.sort_values("labeled_at", kind="stable")
    keys = [key, "row"] if "row" in labels.columns else [key]
    if "row" in labels.columns:
        labels = labels.assign(row=pd.to_numeric(labels["row"], errors="raise").astype("int64"))
    return labels.drop_duplicates(subset=keys, keep="last")[[*keys, label_column]].reset_index(drop=True)


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean predicted probability| over equal-width bins, weighted by count.

    >>> round(expected_calibration_error(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.9, 0.1])), 3)
    0.1
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - proba[mask].mean())
    return float(total / max(len(y), 1))


@dataclass(frozen=True)
class LiveMetrics:
    """One row per (model_version, date) and what the join could not use."""

    table: pd.DataFrame
    unknown_labels: int  # labels whose key matches no logged prediction


def live_metrics(predictions: pd.DataFrame, labels: pd.DataFrame, *, key: str = "request_id", label_column: str = "churn") -> LiveMetrics:
    """Join predictions with the labels that arrived; quality per version and day."""
    from sklearn import metrics

    if key not in predictions.columns:
        raise InvalidArgument(
            f"The prediction log has no column {key!r} to join labels on; use key='request_id' or an "
            f"input column the server logged ({', '.join(map(str, predictions.columns))})."
        )
    preds = predictions.assign(**{key: predictions[key].astype(str)})
    if "probability" not in preds.columns:
        preds = preds.assign(probability=pd.to_numeric(preds.get("prediction"), errors="coerce"))
    keys = [key, "row"] if "row" in labels.columns else [key]
    if "row" in keys:
        preds = preds.assign(row=preds["row"].astype("int64"))
    joined = preds.merge(labels, on=keys, how="left")
    found = labels[keys].merge(preds[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    unknown = int((found["_merge"] == "left_only").sum())
    rows = []
    for (version, day), group in joined.groupby(["model_version", "date"], sort=True):
        labeled = group.dropna(subset=[label_column, "probability"])
        y = labeled[label_column].to_numpy(dtype=int)
        proba = labeled["probability"].to_numpy(dtype=float)
        predicted = (proba >= 0.5).astype(int)
        both = len(set(y.tolist())) == 2
        rows.append(
            {
                "model_version": int(version),
                "date": str(day),
                "n_predictions": len(group),
                "n_labeled": len(labeled),
                "label_rate": len(labeled) / len(group),
                "roc_auc": float(metrics.roc_auc_score(y, proba)) if both else float("nan"),
                "precision": float(metrics.precision_score(y, predicted, zero_division=0)) if len(y) else float("nan"),
                "recall": float(metrics.recall_score(y, predicted, zero_division=0)) if len(y) else float("nan"),
                "ece": expected_calibration_error(y, proba) if len(y) else float("nan"),
            }
        )
    return LiveMetrics(table=pd.DataFrame(rows), unknown_labels=unknown)
