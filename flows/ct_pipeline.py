"""The continuous-training pipeline: validate, train, evaluate, register, gate, promote,
deploy, smoke-test. Every step is a Prefect task; the flow run is one tracking run.

::

    ingest ─► validate ─► train ─► evaluate ─► log model ─► register ─► gate vs champion
                 │                                                         │ passed
                 └─ fails: quarantine + stop          promote @champion ◄──┘
                                                           │
                                        deploy (refresh) ─► smoke test
                                           │ refused
                                           └─ roll @champion back; the previous version keeps serving

Run it once (SQLite + local folder + Prefect's ephemeral API by default)::

    from prefect_mlops.flows.ct_pipeline import ct_pipeline
    result = ct_pipeline(source="generator://churn?seed=0&day=0", serve_port=None)
    result["champion_version"]      # 1.0 on a fresh backend

Flows take a data *URI* (``generator://churn?...``, a CSV/Parquet path, ``s3://...``),
never a DataFrame: flow parameters go to the Prefect API.

What lands where:

- the tracking run (experiment ``churn-ct-pipeline``): params (flow arguments and, by
  autolog, every estimator parameter), training and held-out metrics, the data
  validation outcome per expectation, ``validation/result.json`` (GX's full result),
  ``evaluation/*.png`` (confusion matrix, ROC, PR), the model (``model/``) and the
  training data the drift monitor compares against (``data/reference.parquet``);
- the model version (tags): the training run, the Prefect flow run, the data source and
  digest, the evaluation-set digest, the validation result URI and the gate decision
  (``ModelVersion.gate_decision_id`` links the stored decision too);
- the Prefect flow run: markdown artifacts for validation, registration, gate and
  promotion, and the events ``mlops.model.registered`` / ``mlops.model.promoted``.

A rejected batch is kept under ``<artifact_root>/quarantine/<time>-<digest>/`` with its
validation report, and the flow fails with :class:`DataValidationFailed` before training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from registry_tasks import EvaluationGate, Guard, RegistryClient, evaluate_gate, promote, register_model, rollback
from registry_tasks.gates import GateDecision
from registry_tasks.tasks import retry_if_transient
from serving_tasks.tasks import deploy_model, smoke_test
from tracking_plugin import fluent
from tracking_plugin.errors import BackendUnavailable, Conflict, InvalidArgument, MlopsError, ModelLoadRefused, NotFound
from tracking_plugin.prefect import track
from tracking_plugin.tags import TAG_QUARANTINE_URI

from prefect_mlops.flows.data import DATE_COLUMN, LABEL_COLUMN, dataset_digest, fill_source_date, source_from_uri
from prefect_mlops.flows.training import (
    TrainingConfig,
    build_pipeline,
    evaluate_classifier,
    evaluation_figures,
    known_categories,
    split_batch,
)
from prefect_mlops.flows.validation import DEFAULT_SUITE_PATH, ValidationReport, load_suite, validate_batch

__all__ = [
    "CHAMPION_ALIAS",
    "ChampionEvaluation",
    "DEFAULT_GATE",
    "DataValidationFailed",
    "Evaluation",
    "MODEL_NAME",
    "REFERENCE_ARTIFACT",
    "ServingRefreshFailed",
    "TrainedModel",
    "VALIDATION_ARTIFACT",
    "ct_pipeline",
    "evaluate_champion",
    "evaluate_model",
    "ingest",
    "log_candidate",
    "record_gate_lineage",
    "resolve_source",
    "retry_if_transient",
    "train_model",
    "validate_data",
]

MODEL_NAME = "churn"
CHAMPION_ALIAS = "champion"
#: Run artifact holding the training data; the drift monitor compares new batches with it.
REFERENCE_ARTIFACT = "data/reference.parquet"
#: Run artifact holding great-expectations' full validation result.
VALIDATION_ARTIFACT = "validation/result.json"

#: Promote only a model that beats the champion's ROC AUC on the same fresh held-out data
#: by 0.002, keeps recall within 0.05 of it, reaches 0.70 AUC and was evaluated on >= 200 rows.
DEFAULT_GATE = EvaluationGate(
    primary_metric="roc_auc",
    direction="maximize",
    min_improvement=0.002,
    thresholds={"roc_auc": (0.70, None)},
    guards=(Guard("recall", tolerance=0.05),),
    min_eval_rows=200,
)


class DataValidationFailed(InvalidArgument):
    """A batch failed its expectation suite; it was quarantined and training did not run."""


class ServingRefreshFailed(BackendUnavailable):
    """The serving endpoint could not be brought to the champion (see the message for what
    was rolled back and what keeps serving)."""


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline and the held-out split it has not seen."""

    model: Any
    config: TrainingConfig
    x_test: pd.DataFrame
    y_test: pd.Series
    train_rows: int


@dataclass(frozen=True)
class Evaluation:
    """Held-out metrics of a model and the fingerprint of the data they were computed on."""

    metrics: dict[str, float]
    eval_digest: str
    eval_rows: int


@dataclass(frozen=True)
class ChampionEvaluation:
    """The current champion and its metrics on the candidate's held-out data.

    ``metrics`` is None when the champion could not be loaded; the gate then falls back to
    the metrics recorded when the champion was trained.
    """

    version: int
    metrics: dict[str, float] | None


# ---------------------------------------------------------------- data


def resolve_source(source: str) -> str:
    """``source`` with ``{date}`` filled in: the UTC date this flow run was scheduled for
    (so a nightly run that starts late still takes its own day's batch), today outside a
    scheduled run."""
    if "{date}" not in source:
        return source
    from datetime import timezone

    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    return fill_source_date(source, scheduled.astimezone(timezone.utc).date())


@task(name="ingest", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def ingest(source: str) -> pd.DataFrame:
    """Load the batch named by ``source`` (retried when the store is unreachable).

    A missing or unreadable file fails at once with a message naming it.
    """
    frame = source_from_uri(source).load()
    get_run_logger().info("Ingested %d rows x %d columns from %s", len(frame), frame.shape[1], source)
    return frame


def _quarantine(frame: pd.DataFrame, report: ValidationReport, digest: str) -> str:
    """Keep a rejected batch and its report under ``<artifact_root>/quarantine/``."""
    import json
    import time

    from tracking_plugin.artifacts import get_artifact_repository, join_artifact_uri
    from tracking_plugin.fluent import current_client
    from tracking_plugin.tables import write_table

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    settings = current_client().settings  # the flow's backend
    root = settings.artifact_root
    if "://" not in root:  # a local folder: say where it is from anywhere
        root = str(Path(root).expanduser().resolve())
    uri = join_artifact_uri(root, "quarantine", f"{stamp}-{digest[:12]}")
    repo = get_artifact_repository(uri, settings)
    # Wrong dtypes are part of what got the batch rejected: keep them if Parquet can,
    # else fall back to CSV, which holds any mix of values as text.
    try:
        write_table(frame, join_artifact_uri(uri, "batch.parquet"))
    except InvalidArgument:
        write_table(frame, join_artifact_uri(uri, "batch.csv"))
    repo.log_bytes(json.dumps(report.raw, indent=2, default=str).encode(), "validation_result.json")
    repo.log_bytes(report.to_markdown().encode(), "validation_report.md")
    return uri


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(frame: pd.DataFrame, suite_path: str | None = None) -> ValidationReport:
    """Run the expectation suite on the batch, record the outcome, stop on failure.

    Records on the tracking run: ``validation.success``, ``validation.unsuccessful`` and a
    1/0 metric per expectation, the tags ``data.digest`` / ``validation.*`` and GX's full
    result as ``validation/result.json``; adds a ``data-validation`` markdown artifact to
    the flow run. A failing batch is quarantined (with its report) and
    :class:`DataValidationFailed` is raised; never retried: the data will not change.
    A missing or malformed suite file raises NotFound / InvalidArgument naming the file.
    """
    logger = get_run_logger()
    suite = load_suite(suite_path or DEFAULT_SUITE_PATH)
    report = validate_batch(frame, suite)
    digest = dataset_digest(frame)
    fluent.log_metrics(report.to_metrics())
    fluent.set_tags({"data.digest": digest, "data.rows": str(len(frame)), "validation.suite": report.suite_name,
                     "validation.success": str(report.success).lower()})
    fluent.log_dict(report.raw, VALIDATION_ARTIFACT)
    where: str | None = None
    problem = ""
    if not report.success:
        try:
            where = _quarantine(frame, report, digest)
            fluent.set_tag(TAG_QUARANTINE_URI, where)
        except (MlopsError, OSError) as exc:  # the verdict must still stop the pipeline
            problem = f"it could not be quarantined ({exc}); the source still holds it"
            logger.error("Quarantine of the rejected batch failed: %s", exc)
    markdown = report.to_markdown()
    if where:
        markdown += f"\nThe batch was quarantined at `{where}` with this report; training did not run.\n"
    create_markdown_artifact(markdown=markdown, key="data-validation", description="Data validation of the ingested batch")
    if not report.success:
        kept = f"quarantined at {where}" if where else problem
        logger.error("Batch rejected, %s\n%s", kept, report.failure_summary())
        raise DataValidationFailed(
            f"The batch failed data validation and was {kept}; training did not run.\n{report.failure_summary()}"
        )
    logger.info("Batch passed validation: %s", report.failure_summary())
    return report


# ---------------------------------------------------------------- model


@task(name="train", cache_policy=NO_CACHE)
def train_model(frame: pd.DataFrame, config: TrainingConfig) -> TrainedModel:
    """Fit preprocessing + classifier on the training split with autolog on.

    Autolog records the estimator's parameters and training metrics on the flow's run.
    Not retried: fitting the same data fails the same way twice.
    """
    import tracking_plugin.sklearn as sk_autolog

    x_train, x_test, y_train, y_test = split_batch(frame, test_size=config.test_size, seed=config.seed)
    # The model is logged with an input example below; a caller's own autolog settings
    # are put back afterwards.
    with sk_autolog.autologging(log_models=False, silent=True):
        model = build_pipeline(config).fit(x_train, y_train)
    get_run_logger().info("Trained %s on %d rows", config.model_type, len(x_train))
    return TrainedModel(model=model, config=config, x_test=x_test, y_test=y_test, train_rows=len(x_train))


@task(name="evaluate", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def evaluate_model(trained: TrainedModel) -> Evaluation:
    """Held-out metrics (logged as ``test_*``), confusion matrix and ROC / PR plots, and the
    digest of the evaluation set (tag ``eval.digest``) for lineage."""
    import matplotlib.pyplot as plt

    metrics = evaluate_classifier(trained.model, trained.x_test, trained.y_test)
    fluent.log_metrics({f"test_{k}": v for k, v in metrics.items()})
    for name, figure in evaluation_figures(trained.model, trained.x_test, trained.y_test).items():
        try:
            fluent.log_figure(figure, f"evaluation/{name}")
        finally:
            plt.close(figure)  # a long-lived worker would otherwise keep every figure
    eval_digest = dataset_digest(trained.x_test.assign(**{LABEL_COLUMN: trained.y_test}))
    fluent.set_tags({"eval.digest": eval_digest, "eval.rows": str(len(trained.x_test))})
    get_run_logger().info(
        "Held-out (%d rows): ROC AUC %.4f, recall %.4f, F1 %.4f",
        len(trained.x_test), metrics["roc_auc"], metrics["recall"], metrics["f1"],
    )
    return Evaluation(metrics=metrics, eval_digest=eval_digest, eval_rows=len(trained.x_test))


@task(name="log-model", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def log_candidate(trained: TrainedModel, frame: pd.DataFrame) -> str:
    """Log the model (MLmodel format, input example, the categories it knows) and the
    reference data; return the model URI (``runs:/<run_id>/model``)."""
    from tracking_plugin.models import ALLOWED_VALUES_KEY, log_model
    from tracking_plugin.tables import write_table

    # The data this model learnt from, for the drift monitor (the date says nothing there).
    reference = frame.drop(columns=[c for c in (DATE_COLUMN,) if c in frame.columns])
    write_table(reference, fluent.get_artifact_uri(REFERENCE_ARTIFACT))
    # The categories it knows: scoring refuses any other value (400) instead of guessing.
    info = log_model(
        trained.model, "model", input_example=trained.x_test.head(5),
        metadata={ALLOWED_VALUES_KEY: known_categories(trained.model)},
    )
    return str(info.model_uri)


@task(name="evaluate-champion", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def evaluate_champion(name: str, trained: TrainedModel) -> ChampionEvaluation | None:
    """The champion's metrics on the candidate's held-out data (None: no champion yet).

    Both models are then judged on the same fresh rows. A champion that no longer loads
    (tampered files) is reported with ``metrics=None`` rather than failing the run.
    """
    import tempfile

    from tracking_plugin.models import load_model

    champion = RegistryClient().get_by_alias(name, CHAMPION_ALIAS)
    if champion is None:
        get_run_logger().info("%s has no @%s yet: the gate's absolute thresholds decide", name, CHAMPION_ALIAS)
        return None
    # Remote (S3) models are downloaded: into a folder removed afterwards, not a kept temp dir.
    with tempfile.TemporaryDirectory(prefix="mlops-champion-") as download:
        try:
            model = load_model(f"models:/{name}/{champion.version}", dst_path=download)
        except (ModelLoadRefused, InvalidArgument, NotFound) as exc:
            get_run_logger().warning(
                "Champion %s v%s could not be loaded (%s); the gate uses its recorded metrics",
                name, champion.version, exc,
            )
            return ChampionEvaluation(version=champion.version, metrics=None)
        metrics = evaluate_classifier(model.get_raw_model(), trained.x_test, trained.y_test)
    fluent.log_metrics({f"previous_champion_{k}": v for k, v in metrics.items()})
    get_run_logger().info("Champion %s v%s on the same held-out rows: ROC AUC %.4f", name, champion.version, metrics["roc_auc"])
    return ChampionEvaluation(version=champion.version, metrics=metrics)


@task(name="record-lineage", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def record_gate_lineage(name: str, version: int, decision: GateDecision) -> None:
    """Tag the model version (and the run) with the gate's decision."""
    from tracking_plugin.client import TrackingClient

    tags = {
        "gate.decision_id": decision.decision_id or "",
        "gate.passed": str(decision.passed).lower(),
        "gate.reason": decision.reason[:4000],
    }
    client = TrackingClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    fluent.set_tags({**tags, "model.name": name, "model.version": str(version)})


# ---------------------------------------------------------------- serving


def _refresh_serving(
    model_name: str, port: int, *, champion_version: int, promoted: bool, previous_version: int | None,
    serve_options: dict[str, Any] | None = None,
) -> None:
    """Make the endpoint serve ``@champion`` and smoke-test it; on failure keep the old one.

    When a version promoted by this run cannot be served (it fails to load or to score
    its own input example), the alias goes back to the previous champion, which the
    alias-following server kept serving (or is redeployed), and the flow fails.
    """
    logger = get_run_logger()
    uri = f"models:/{model_name}@{CHAMPION_ALIAS}"
    endpoint = f"http://127.0.0.1:{port}"
    checked_smoke_test = smoke_test.with_options(retries=2, retry_delay_seconds=1, retry_condition_fn=retry_if_transient)
    try:
        server = deploy_model(uri, port, expect_version=champion_version, **(serve_options or {}))
        checked_smoke_test(server.endpoint)
        return
    except MlopsError as exc:
        error = exc
    if isinstance(error, Conflict) or not promoted or previous_version is None:
        # A foreign process on the port, or nothing older to fall back to.
        what = (
            f"version {champion_version} stays @{CHAMPION_ALIAS} in the registry"
            + ("" if previous_version is None or not promoted else f" (version {previous_version} held it before)")
        )
        raise ServingRefreshFailed(
            f"Serving {uri} on {endpoint} failed: {error}. {what}; fix the cause and rerun, or serve it with "
            f"`prefect-mlops serve -m {uri} -p {port}`."
        ) from error
    logger.error("Version %s cannot be served (%s); rolling @%s back to %s", champion_version, error, CHAMPION_ALIAS, previous_version)
    try:
        rollback(model_name, CHAMPION_ALIAS, reason=f"serving refused version {champion_version}: {str(error)[:500]}")
    except MlopsError as refused:
        raise ServingRefreshFailed(
            f"{model_name} version {champion_version} was promoted but {endpoint} could not serve it: {error}. "
            f"Rolling @{CHAMPION_ALIAS} back to version {previous_version} failed too: {refused}"
        ) from error
    try:
        deploy_model(uri, port, expect_version=previous_version, **(serve_options or {}))
        kept = f"version {previous_version} keeps serving at {endpoint}"
    except MlopsError as again:
        kept = f"but serving version {previous_version} failed too: {again}"
    raise ServingRefreshFailed(
        f"{model_name} version {champion_version} passed the gate and was promoted, but {endpoint} could not "
        f"serve it: {error}. @{CHAMPION_ALIAS} was rolled back to version {previous_version}; {kept}."
    ) from error


# ---------------------------------------------------------------- the flow


@track(experiment="churn-ct-pipeline")
@flow(name="ct-pipeline", log_prints=True)
def ct_pipeline(
    source: str = "generator://churn?seed=0&day=0",
    model_name: str = MODEL_NAME,
    model_type: str = "random_forest",
    n_estimators: int = 60,
    max_depth: int | None = 8,
    seed: int = 0,
    suite_path: str | None = None,
    gate: dict[str, Any] | None = None,
    serve_port: int | None = 5055,
    serve_log_predictions: float | None = None,
    prediction_log_uri: str | None = None,
) -> dict[str, float]:
    """Validate -> train -> evaluate -> register -> gate -> promote -> deploy -> smoke test.

    Args:
        source: the batch: ``generator://churn?seed=..&day=..``, a CSV/Parquet path or ``s3://`` URI;
            ``{date}`` in it becomes the run's scheduled UTC date (``YYYY-MM-DD``), so a
            scheduled deployment takes the batch of its day.
        model_name: registered model to add a version to.
        model_type: ``random_forest``, ``gradient_boosting``, ``logistic_regression`` or ``stump``.
        n_estimators, max_depth, seed: model hyperparameters (recorded as params).
        suite_path: expectation suite JSON (default: ``flows/expectations/churn_batch.json``).
        gate: an :class:`EvaluationGate` as a dict (``EvaluationGate.to_dict()``); default
            :data:`DEFAULT_GATE`.
        serve_port: port of the scoring server that follows ``models:/<name>@champion``;
            None skips deploy and smoke test.
        serve_log_predictions, prediction_log_uri: the scoring server logs that share of
            requests (0 < rate <= 1) under that URI (``--log-predictions``); None: no log.

    Returns numbers (recorded as the run's metrics by ``@track``): the held-out metrics,
    ``model_version`` (the version registered now), ``promoted`` (1.0 / 0.0) and
    ``champion_version`` afterwards. The gate's reasons are in the registry
    (``RegistryClient().decision_for(name, version)``) and the ``gate-*`` artifact.
    """
    logger = get_run_logger()
    config = TrainingConfig(model_type=model_type, n_estimators=n_estimators, max_depth=max_depth, seed=seed)  # type: ignore[arg-type]
    evaluation_gate = EvaluationGate.from_dict(gate) if gate else DEFAULT_GATE
    source = resolve_source(source)

    frame: pd.DataFrame = ingest(source)  # type: ignore[assignment]  # a sync call returns the value
    report = validate_data(frame, suite_path)
    trained = train_model(frame, config)
    evaluation = evaluate_model(trained)
    model_uri = log_candidate(trained, frame)
    champion = evaluate_champion(model_name, trained)

    from prefect.runtime import flow_run

    run = fluent.active_run()
    version = register_model(
        model_uri, model_name,
        tags={
            "training_run_id": run.run_id if run else "",
            "prefect.flow_run_id": str(flow_run.id or ""),
            "data.source": source,
            "data.digest": dataset_digest(frame),
            "data.rows": str(len(frame)),
            "eval.digest": evaluation.eval_digest,
            "eval.rows": str(evaluation.eval_rows),
            "validation.suite": report.suite_name,
            "validation.success": str(report.success).lower(),
            "validation.result_uri": fluent.get_artifact_uri(VALIDATION_ARTIFACT),
        },
    )
    decision = evaluate_gate(
        model_name, version.version, evaluation_gate,
        candidate_metrics=evaluation.metrics,
        champion_metrics=champion.metrics if champion else None,
        eval_rows=evaluation.eval_rows,
    )
    record_gate_lineage(model_name, version.version, decision)
    previous_version = champion.version if champion else None
    if decision.passed:
        promote(model_name, version.version, alias=CHAMPION_ALIAS, reason=decision.reason)
        champion_version: int | None = version.version
    else:
        logger.warning("Version %s stays a candidate: %s", version.version, decision.reason)
        current = RegistryClient().get_by_alias(model_name, CHAMPION_ALIAS)
        champion_version = current.version if current else None

    if serve_port and champion_version is not None:
        _refresh_serving(
            model_name, serve_port, champion_version=champion_version,
            promoted=decision.passed, previous_version=previous_version,
            serve_options={"log_predictions": serve_log_predictions, "prediction_log_uri": prediction_log_uri},
        )
    return {
        **evaluation.metrics,
        "model_version": float(version.version),
        "promoted": float(decision.passed),
        "champion_version": float(champion_version or 0),
    }
