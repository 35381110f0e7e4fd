"""The performance monitor: live model quality from logged predictions and late labels.

Joins the scoring server's prediction log (``--log-predictions``) with the labels that
have arrived (:func:`flows.performance.read_labels`), computes per day ROC AUC, precision,
recall, calibration error (ECE) and label rate for one model version (the champion by
default), and records them on this flow run's tracking run (experiment
``churn-performance-monitor``, tags ``model.name`` / ``model.version``, metrics
``live_<metric>`` with ``step`` = days since the version's first logged day, so they chart
as a history); the version gets tags ``monitoring.run_id`` and ``monitoring.status``
(``ok`` / ``degraded``) pointing back at the latest one. When a day with at least ``min_labels`` labels falls below the gate's
absolute thresholds (:data:`flows.ct_pipeline.DEFAULT_GATE`, e.g. ROC AUC 0.70) or more
than ``margin`` below the version's own held-out evaluation (``test_roc_auc``,
``test_recall`` of its training run), it emits ``mlops.performance.degraded``; the
``retrain-on-performance-drop`` deployment in ``deployments/prefect.yaml`` retrains on it.

This catches concept drift (features unchanged, labels changed), which the drift monitor
cannot see.

    from prefect_mlops.flows.performance_monitor import performance_monitor
    performance_monitor(predictions_uri="/data/prediction-logs", labels_source="/data/labels/")

Event: resource ``mlops.model.<name>`` (labels ``mlops.model.name``, ``mlops.model.version``),
payload ``days`` (the degraded days and their metrics), ``reasons``, ``retrain_source``.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tracking_plugin import fluent
from tracking_plugin.errors import InvalidArgument, NotFound
from tracking_plugin.events import PERFORMANCE_DEGRADED, emit
from tracking_plugin.prefect import track

from prefect_mlops.flows.ct_pipeline import CHAMPION_ALIAS, DEFAULT_GATE, MODEL_NAME
from prefect_mlops.flows.data import LABEL_COLUMN
from prefect_mlops.flows.performance import live_metrics, read_labels, read_prediction_log

__all__ = ["PERFORMANCE_DEGRADED", "performance_monitor"]

_LIVE = ("roc_auc", "precision", "recall", "ece", "label_rate", "n_labeled", "n_predictions")
# Metrics compared with the version's evaluation (higher is better for both).
_COMPARED = ("roc_auc", "recall")


@task(name="resolve-version", cache_policy=NO_CACHE)
def resolve_version(model_name: str, version: int | None, alias: str) -> tuple[int, dict[str, float]]:
    """The version to monitor and its held-out evaluation metrics (``test_*`` of its run)."""
    from registry_tasks import RegistryClient
    from tracking_plugin.client import TrackingClient

    registry = RegistryClient()
    found = registry.get_version(model_name, version) if version is not None else registry.get_by_alias(model_name, alias)
    if found is None:
        raise NotFound(f"Model {model_name!r} has no version with alias {alias!r}; pass version= or promote one first.")
    evaluation: dict[str, float] = {}
    if found.run_id:
        run_metrics = TrackingClient().get_run(found.run_id).data.metrics
        evaluation = {k.removeprefix("test_"): float(v) for k, v in run_metrics.items() if k.startswith("test_")}
    return int(found.version), evaluation


def _link_version(model_name: str, version: int, *, degraded: bool) -> None:
    """Tag the version with this monitoring run (``monitoring.run_id``) and its verdict."""
    from registry_tasks import RegistryClient

    current = fluent.active_run()
    if current is None:
        return
    store = RegistryClient().store
    store.set_model_version_tag(model_name, version, "monitoring.run_id", current.run_id)
    store.set_model_version_tag(model_name, version, "monitoring.status", "degraded" if degraded else "ok")


def _reasons(row: dict[str, Any], evaluation: dict[str, float], margin: float) -> list[str]:
    reasons = []
    for metric, (low, high) in DEFAULT_GATE.thresholds.items():
        value = row.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if low is not None and value < low:
            reasons.append(f"{metric} {value:.3f} < gate minimum {low}")
        if high is not None and value > high:
            reasons.append(f"{metric} {value:.3f} > gate maximum {high}")
    for metric in _COMPARED:
        value, reference = row.get(metric), evaluation.get(metric)
        if value is None or reference is None or math.isnan(value):
            continue
        if value < reference - margin:
            reasons.append(f"{metric} {value:.3f} is more than {margin} below its evaluation {reference:.3f}")
    return reasons


@track(experiment="churn-performance-monitor")
@flow(name="performance-monitor", log_prints=True)
def performance_monitor(
    predictions_uri: str,
    labels_source: str,
    model_name: str = MODEL_NAME,
    version: int | None = None,
    alias: str = CHAMPION_ALIAS,
    key: str = "request_id",
    label_column: str = LABEL_COLUMN,
    margin: float = 0.05,
    min_labels: int = 50,
    retrain_source: str = "generator://churn?seed=0&date={date}",
) -> dict[str, float]:
    """Score the version's logged predictions against the labels that arrived; emit
    ``mlops.performance.degraded`` when a labelled day is below the gate or the margin.

    Args:
        predictions_uri: the prediction log's root (the server's ``--prediction-log-uri``).
        labels_source: a CSV/Parquet file, or a folder / ``s3://`` prefix of them.
        version: the version to monitor (default: the one holding ``alias``).
        key: the join key: ``request_id`` or an input column the server logged.
        margin: how far below its own evaluation a metric may fall.
        min_labels: days with fewer labels are recorded but not judged.
        retrain_source: the batch the triggered retraining trains on (in the event payload).

    Returns ``degraded`` (1.0/0.0), ``days``, ``labeled_rows``, ``unknown_labels``,
    ``skipped_files``, ``version`` and the last judged day's metrics as ``latest_*`` (all
    recorded as metrics of the run by ``@track``).
    """
    logger = get_run_logger()
    if not 0 <= margin < 1:
        raise InvalidArgument(f"Invalid margin {margin!r}: use a share from 0 up to 1 (e.g. 0.05).")
    if isinstance(min_labels, bool) or not isinstance(min_labels, int) or min_labels < 1:
        raise InvalidArgument(f"Invalid min_labels {min_labels!r}: use an integer >= 1.")
    monitored, evaluation = resolve_version(model_name, version, alias)
    log = read_prediction_log(predictions_uri, model_name, monitored)
    for skipped in log.skipped:
        logger.warning("Skipped an unreadable prediction log file: %s", skipped)
    labels = read_labels(labels_source, key=key, label_column=label_column)
    result = live_metrics(log.frame, labels, key=key, label_column=label_column)
    table = result.table
    fluent.set_tags({
        "model.name": model_name, "model.version": str(monitored), "monitor.key": key,
        "monitor.predictions_uri": predictions_uri, "monitor.labels_source": labels_source,
    })
    degraded_days: list[dict[str, Any]] = []
    reasons: list[str] = []
    last: dict[str, float] = {}
    if len(table):
        first = dt.date.fromisoformat(min(table["date"]))
        for row in table.to_dict("records"):
            step = (dt.date.fromisoformat(row["date"]) - first).days
            fluent.log_metrics(
                {f"live_{m}": float(row[m]) for m in _LIVE if not math.isnan(float(row[m]))}, step=step
            )
            if row["n_labeled"] < min_labels:
                continue
            last = {f"latest_{m}": float(row[m]) for m in _LIVE}
            why = _reasons(row, evaluation, margin)
            if why:
                degraded_days.append({"date": row["date"], **{m: float(row[m]) for m in _LIVE}})
                reasons.extend(f"{row['date']}: {w}" for w in why)
    summary = {
        "degraded": float(bool(degraded_days)),
        "days": float(len(table)),
        "labeled_rows": float(table["n_labeled"].sum()) if len(table) else 0.0,
        "unknown_labels": float(result.unknown_labels),
        "skipped_files": float(len(log.skipped)),
        "version": float(monitored),
        **{k: v for k, v in last.items() if not math.isnan(v)},
    }
    _link_version(model_name, monitored, degraded=bool(degraded_days))
    if degraded_days:
        emit(
            PERFORMANCE_DEGRADED,
            {"prefect.resource.id": f"mlops.model.{model_name}", "prefect.resource.name": model_name,
             "mlops.model.name": model_name, "mlops.model.version": str(monitored)},
            payload={"days": degraded_days, "reasons": reasons, "retrain_source": retrain_source,
                     "evaluation": {m: evaluation.get(m) for m in _COMPARED}, "margin": margin},
        )
        logger.warning("%s version %s degraded: %s", model_name, monitored, "; ".join(reasons))
    else:
        logger.info("%s version %s: %d day(s) scored, none degraded", model_name, monitored, len(table))
    return summary
