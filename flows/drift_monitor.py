"""The drift monitor: compare a new batch with the champion's training data.

Scores every feature (PSI by default, or KS for numeric features), records the scores on
the flow run's tracking run (metrics ``drift/<feature>`` and ``drift_score``), adds a
``drift-report`` markdown artifact, and emits the Prefect event ``mlops.drift.detected``
when the batch drifted. The event-triggered retraining deployment in
``deployments/prefect.yaml`` reacts to it with ``ct_pipeline(source=<the drifted batch>)``.

    from prefect_mlops.flows.drift_monitor import drift_monitor
    drift_monitor(source="generator://churn?seed=0&day=7&drift=0.8")

Event: resource ``mlops.model.<name>`` (labels ``mlops.model.name``, ``mlops.model.version``:
the champion compared with), related resource ``mlops.data.<source>`` (role ``dataset``),
payload ``source``, ``score``, ``features``, ``method``, ``thresholds``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tracking_plugin import fluent
from tracking_plugin.errors import InvalidArgument, NotFound
from tracking_plugin.events import DRIFT_DETECTED, emit
from tracking_plugin.prefect import track

from prefect_mlops.flows.ct_pipeline import (
    CHAMPION_ALIAS,
    MODEL_NAME,
    REFERENCE_ARTIFACT,
    ingest,
    resolve_source,
    retry_if_transient,
    validate_data,
)
from prefect_mlops.flows.data import FEATURE_COLUMNS
from prefect_mlops.flows.drift import DriftMethod, DriftReport, DriftThresholds, compute_drift

__all__ = ["DRIFT_DETECTED", "drift_monitor", "load_reference", "score_drift"]



@task(name="load-reference", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def load_reference(model_name: str, alias: str = CHAMPION_ALIAS) -> tuple[pd.DataFrame, int]:
    """The training data of the version holding ``alias``, and that version's number.

    NotFound (not retried) when no version holds the alias or its run has no reference
    data (it was not trained by ``ct_pipeline``).
    """
    from registry_tasks import RegistryClient
    from tracking_plugin.artifacts import join_artifact_uri
    from tracking_plugin.client import TrackingClient
    from tracking_plugin.tables import read_table

    champion = RegistryClient().get_by_alias(model_name, alias)
    if champion is None or not champion.run_id:
        raise NotFound(
            f"Model {model_name!r} has no version with alias {alias!r} (or it has no training "
            "run), so there is no reference data to compare with. Run ct_pipeline first."
        )
    uri = join_artifact_uri(TrackingClient().get_run(champion.run_id).info.artifact_uri, REFERENCE_ARTIFACT)
    try:
        reference = read_table(uri)
    except NotFound as exc:
        raise NotFound(
            f"{model_name} version {champion.version} (@{alias}) has no reference data at {uri}: only models "
            f"trained by ct_pipeline record their training data there. Retrain with ct_pipeline."
        ) from exc
    get_run_logger().info("Reference: %d rows the @%s (version %s) was trained on", len(reference), alias, champion.version)
    return reference, champion.version


@task(name="score-drift", cache_policy=NO_CACHE)
def score_drift(reference: pd.DataFrame, current: pd.DataFrame, method: str, thresholds: DriftThresholds) -> DriftReport:
    """Per-feature drift of ``current`` against ``reference`` (see :func:`flows.drift.compute_drift`)."""
    columns = [c for c in FEATURE_COLUMNS if c in reference.columns]
    return compute_drift(reference, current, columns, method=method, thresholds=thresholds)


@track(experiment="churn-drift-monitor")
@flow(name="drift-monitor", log_prints=True)
def drift_monitor(
    source: str = "generator://churn?seed=0&day=1",
    model_name: str = MODEL_NAME,
    alias: str = CHAMPION_ALIAS,
    method: str = "psi",
    psi_threshold: float = 0.2,
    ks_threshold: float = 0.2,
    share_of_features: float = 0.0,
) -> dict[str, float]:
    """Score drift of ``source`` against the champion's training data; emit an event if drifted.

    Args:
        source: the new batch (same URIs as ``ct_pipeline``; ``{date}`` becomes the run's
            scheduled UTC date, so the hourly deployment scores the current day's batch).
        model_name, alias: whose training data is the reference.
        method: ``psi`` or ``ks`` for numeric features (categorical ones always use PSI).
        psi_threshold, ks_threshold: a feature drifts when its score is above these.
        share_of_features: the batch drifts when at least this share of features drifted
            (0: any drifted feature is enough).

    The batch is validated first: a corrupted batch is quarantined and the flow fails with
    :class:`~flows.ct_pipeline.DataValidationFailed` instead of scoring garbage. Returns
    ``drift_score`` (the largest feature score), ``drifted`` (1.0 / 0.0),
    ``drifted_features`` and ``champion_version``, recorded as metrics.
    """
    logger = get_run_logger()
    # Bad settings fail here, before any I/O.
    thresholds = DriftThresholds(psi=psi_threshold, ks=ks_threshold, share_of_features=share_of_features)
    try:
        drift_method = DriftMethod(method)
    except ValueError:
        raise InvalidArgument(f"Unknown drift method {method!r}; use one of: psi, ks.") from None

    source = resolve_source(source)  # the drift event carries the batch actually scored
    reference, champion_version = load_reference(model_name, alias)
    current = ingest(source)
    validate_data(current)
    report = score_drift(reference, current, drift_method.value, thresholds)

    fluent.log_metrics({f"drift/{column}": score for column, score in report.scores.items()})
    fluent.set_tags({
        "drift.method": drift_method.value,
        "drift.drifted": str(report.drifted).lower(),
        "drift.features": ",".join(report.drifted_features),
        "data.source": source,
        "model.name": model_name,
        "model.version": str(champion_version),
    })
    create_markdown_artifact(markdown=report.to_markdown(), key="drift-report",
                             description=f"Drift of {source} against {model_name}@{alias} (version {champion_version})")
    if report.drifted:
        payload: dict[str, Any] = {
            "source": source, "score": report.score, "features": list(report.drifted_features),
            "method": drift_method.value,
            "thresholds": {"psi": thresholds.psi, "ks": thresholds.ks, "share_of_features": thresholds.share_of_features},
        }
        emit(
            DRIFT_DETECTED,
            {"prefect.resource.id": f"mlops.model.{model_name}", "prefect.resource.name": model_name,
             "mlops.model.name": model_name, "mlops.model.version": str(champion_version)},
            [{"prefect.resource.id": f"mlops.data.{source}", "prefect.resource.role": "dataset"}],
            payload=payload,
        )
        logger.warning("Drift detected in %s (score %.3f): %s", source, report.score, ", ".join(report.drifted_features))
    else:
        logger.info("No drift in %s (largest score %.3f)", source, report.score)
    return {
        "drift_score": report.score,
        "drifted": float(report.drifted),
        "drifted_features": float(len(report.drifted_features)),
        "champion_version": float(champion_version),
    }
