"""``ct_pipeline`` end to end under the session's Prefect API, on generated batches, read
back as a user would: the registry, the tracking run, the artifact store, the Prefect
task runs, artifacts and events, and (one test) a real scoring server over HTTP."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from prefect_mlops.flows.ct_pipeline import DataValidationFailed, ServingRefreshFailed, ct_pipeline
from prefect_mlops.flows.data import CATEGORY_VALUES, dataset_digest, source_from_uri
from prefect_mlops.flows.training import TrainingConfig, build_pipeline, evaluate_classifier, evaluation_figures, split_batch
from tracking_plugin.errors import InvalidArgument, NotFound
from tracking_plugin.models import ALLOWED_VALUES_KEY, load_model




def _run(**kwargs: Any) -> Any:
    """Run the flow and return its final state (the flow never raises here)."""
    return ct_pipeline(**kwargs, return_state=True)


def _flow_run_id(state: Any) -> str:
    return str(state.state_details.flow_run_id)


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    ("options", "says"),
    [({"model_type": "svm"}, "'svm'"), ({"n_estimators": 0}, "n_estimators 0"), ({"max_depth": 0}, "max_depth 0"),
     ({"test_size": 0.99}, "test_size 0.99"), ({"min_samples_leaf": True}, "min_samples_leaf True")],
)
def test_training_config_refuses_bad_values_naming_them(options: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(says)):
        TrainingConfig(**options)


def test_a_batch_with_one_class_cannot_be_split_for_training() -> None:
    frame = source_from_uri("generator://churn?n_rows=300").load().assign(churn=0)
    with pytest.raises(InvalidArgument, match="class counts"):
        split_batch(frame, test_size=0.25, seed=0)


def test_the_model_scores_raw_rows_and_is_evaluated_with_three_plots() -> None:
    import matplotlib.pyplot as plt

    frame = source_from_uri("generator://churn?n_rows=600").load()
    x_train, x_test, y_train, y_test = split_batch(frame, test_size=0.25, seed=0)
    model = build_pipeline(TrainingConfig(n_estimators=10)).fit(x_train, y_train)
    metrics = evaluate_classifier(model, x_test, y_test)
    assert set(metrics) == {"roc_auc", "pr_auc", "log_loss", "accuracy", "precision", "recall", "f1"}
    assert 0.6 < metrics["roc_auc"] <= 1.0
    figures = evaluation_figures(model, x_test, y_test)
    assert set(figures) == {"confusion_matrix.png", "roc_curve.png", "pr_curve.png"}
    for figure in figures.values():
        plt.close(figure)


# ----------------------------------------------------------------------------- first run


def test_first_run_promotes_version_1_with_full_lineage(backend: Any, helpers: Any, readme_section: Any) -> None:
    source = helpers.source(day=0)
    state = _run(source=source, serve_port=None, **helpers.FAST)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["model_version"] == 1 and result["promoted"] == 1.0 and result["champion_version"] == 1
    assert 0.75 < result["roc_auc"] <= 1.0

    registry = backend.registry()
    version = registry.get_version("churn", 1)
    assert "champion" in version.aliases
    flow_run_id = _flow_run_id(state)
    # The model knows its categories: scoring refuses others instead of guessing.
    allowed = load_model("models:/churn/1").metadata.metadata[ALLOWED_VALUES_KEY]
    assert sorted(allowed["payment_method"]) == sorted(CATEGORY_VALUES["payment_method"])

    # Lineage on the model version: run, flow run, data, validation result, gate decision.
    tags = version.tags
    assert tags["training_run_id"] == version.run_id
    assert tags["prefect.flow_run_id"] == flow_run_id
    assert tags["data.source"] == source
    assert tags["data.digest"] == dataset_digest(source_from_uri(source).load())
    assert tags["validation.success"] == "true"
    result_file = Path(tags["validation.result_uri"])
    assert result_file.is_file() and result_file.is_relative_to(backend.artifact_root)
    assert json.loads(result_file.read_text())["success"] is True
    assert version.gate_decision_id and tags["gate.decision_id"] == version.gate_decision_id
    assert tags["gate.passed"] == "true"
    decision = registry.decision_for("churn", 1)
    assert decision is not None and decision.passed and "no champion yet" in decision.reason
    assert int(tags["eval.rows"]) == decision.eval_rows == 375  # 25 % of 1,500 rows held out

    # The tracking run: one per flow run, with validation, autolog, held-out metrics and files.
    run = backend.tracking().get_run(version.run_id)
    assert run.info.status.value == "FINISHED"
    assert run.data.tags["prefect.flow_run_id"] == flow_run_id
    assert run.data.tags["eval.digest"] == tags["eval.digest"]
    metrics = run.data.metrics
    assert metrics["validation.success"] == 1.0 and metrics["validation.unsuccessful"] == 0.0
    assert metrics["validation.expect_column_values_to_not_be_null.contract"] == 1.0
    assert metrics["test_roc_auc"] == pytest.approx(result["roc_auc"])
    assert "training_roc_auc" in metrics  # autolog
    assert run.data.params["model__n_estimators"] == "15"  # autolog: the estimator's params
    assert run.data.params["n_estimators"] == "15"  # @track: the flow's arguments
    files = {f.path for f in backend.tracking().list_artifacts(run.info.run_id, "evaluation")}
    assert files == {"evaluation/confusion_matrix.png", "evaluation/roc_curve.png", "evaluation/pr_curve.png"}
    for name in files:
        assert (Path(run.info.artifact_uri) / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reference = pd.read_parquet(Path(run.info.artifact_uri) / "data" / "reference.parquet")
    assert len(reference) == 1500 and "batch_date" not in reference.columns

    # Prefect: one task run per step, readable summaries, the registry's events.
    steps = ["ingest", "validate-data", "train", "evaluate", "log-model", "evaluate-champion",
             "register-model", "evaluate-gate", "record-lineage", "promote"]
    tasks = helpers.task_runs_of(flow_run_id, expect=tuple(steps))
    for step in steps:
        assert step in tasks, f"no {step} task run: {sorted(tasks)}"
    # The README's pipeline section names the same tasks, in this order.
    steps_table = readme_section("The continuous-training pipeline").split("\n### What each step records")[1]
    steps_table = steps_table.split("\n### ")[0]  # the subsection's own table, not the scenario table
    documented = re.findall(r"^\| `([a-z-]+)`", steps_table, flags=re.M)
    assert documented == steps + ["deploy-model"]
    assert "deploy-model" not in tasks  # serve_port=None
    artifacts = helpers.artifacts_of(flow_run_id)
    assert "data-validation" in artifacts and "passed" in artifacts["data-validation"]
    assert "gate-churn-1" in artifacts and "promotion-churn-1" in artifacts
    [promoted] = helpers.events_of(flow_run_id, "mlops.model.promoted")
    assert promoted.resource["mlops.model.version"] == "1"


# ----------------------------------------------------------------------------- the gate


@pytest.mark.slow
def test_worse_candidate_is_registered_but_not_promoted(backend: Any, helpers: Any) -> None:
    first = _run(source=helpers.source(day=0), serve_port=None, **helpers.FAST)
    assert first.is_completed(), first.message

    # A one-split tree on the next day's batch: worse than the forest on the same rows.
    second = _run(source=helpers.source(day=1), model_type="stump", serve_port=None)
    assert second.is_completed(), second.message  # a gated-out candidate is not an error
    result = second.result()
    assert result["model_version"] == 2 and result["promoted"] == 0.0 and result["champion_version"] == 1

    registry = backend.registry()
    assert registry.get_by_alias("churn", "champion").version == 1
    candidate = registry.get_version("churn", 2)
    assert candidate.aliases == () and candidate.tags["gate.passed"] == "false"
    decision = registry.decision_for("churn", 2)
    assert decision is not None and not decision.passed
    # The decision says why: the champion, scored on the candidate's own held-out rows, is better.
    assert decision.reason.startswith("Rejected: min_improvement (roc_auc)")
    assert decision.champion_version == 1
    assert decision.champion_metrics["roc_auc"] > decision.candidate_metrics["roc_auc"]
    assert candidate.tags["gate.reason"] == decision.reason
    run = backend.tracking().get_run(candidate.run_id)
    assert run.data.metrics["previous_champion_roc_auc"] == pytest.approx(decision.champion_metrics["roc_auc"])
    assert "promote" not in helpers.task_runs_of(_flow_run_id(second))
    assert helpers.count_events(_flow_run_id(second), "mlops.model.promoted") == 0

    # A champion whose files were damaged since does not stop retraining: the gate falls
    # back to the metrics recorded when the champion was trained.
    champion_files = Path(registry.get_version("churn", 1).storage_location)
    with open(champion_files / "model.skops", "ab") as handle:
        handle.write(b"tampered")
    third = _run(source=helpers.source(day=2), serve_port=None, **helpers.FAST)
    assert third.is_completed(), third.message
    decision = registry.decision_for("churn", 3)
    recorded = backend.tracking().get_run(registry.get_version("churn", 1).run_id).data.metrics
    assert decision.champion_version == 1
    assert decision.champion_metrics["roc_auc"] == pytest.approx(recorded["roc_auc"])
    run = backend.tracking().get_run(registry.get_version("churn", 3).run_id)
    assert "previous_champion_roc_auc" not in run.data.metrics


# ----------------------------------------------------------------------------- bad input


def test_corrupted_batch_is_stopped_at_validation_and_quarantined(backend: Any, helpers: Any) -> None:
    source = helpers.source(day=3, corrupt=True)
    state = _run(source=source, serve_port=None, **helpers.FAST)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, DataValidationFailed)
    assert "training did not run" in str(error)
    assert "column 'num_support_calls' is missing" in str(error)

    # Kept with its report, content intact (dtypes included).
    [folder] = list((backend.artifact_root / "quarantine").iterdir())
    assert str(folder) in str(error)
    kept = pd.read_parquet(folder / "batch.parquet")
    original = source_from_uri(source).load()
    pd.testing.assert_frame_equal(kept, original, check_dtype=False)
    assert dataset_digest(kept) == dataset_digest(original)
    report = json.loads((folder / "validation_result.json").read_text())
    assert report["success"] is False
    assert "FAILED" in (folder / "validation_report.md").read_text()

    # Training never ran: no model, no training tasks; the run says why.
    from tracking_plugin.errors import NotFound as Missing

    with pytest.raises(Missing):
        backend.registry().store.get_registered_model("churn")
    tasks = helpers.task_runs_of(_flow_run_id(state))
    assert set(tasks) == {"ingest", "validate-data"}
    [validation] = tasks["validate-data"]
    assert validation.run_count == 1  # a verdict on data is not retried
    experiment = backend.tracking().get_experiment_by_name("churn-ct-pipeline")
    [run] = backend.tracking().search_runs([experiment.experiment_id])
    assert run.info.status.value == "FAILED"
    assert run.data.metrics["validation.success"] == 0.0
    assert run.data.metrics["validation.unsuccessful"] >= 4
    assert run.data.metrics["validation.expect_column_values_to_not_be_null.contract"] == 0.0
    assert run.data.tags["validation.quarantine_uri"] == str(folder)
    assert "FAILED" in helpers.artifacts_of(_flow_run_id(state))["data-validation"]


def test_missing_data_file_stops_the_flow_naming_it_without_retries(backend: Any, helpers: Any) -> None:
    missing = backend.root / "incoming" / "2026-01-05.parquet"
    state = _run(source=str(missing), serve_port=None)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, NotFound) and str(missing) in str(error)
    [ingest] = helpers.task_runs_of(_flow_run_id(state))["ingest"]
    assert ingest.run_count == 1  # retries are for transient I/O errors only


def test_malformed_data_file_stops_the_flow_naming_it(backend: Any) -> None:
    broken = backend.root / "batch.csv"
    broken.write_bytes(b"")
    state = _run(source=str(broken), serve_port=None)
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InvalidArgument) and str(broken) in str(error)


@pytest.mark.parametrize(
    ("content", "error_type", "says"),
    [(None, NotFound, "does not exist"), ("{not json", InvalidArgument, "not valid JSON"),
     ('{"name": "s", "expectations": [{"type": "expect_nothing_at_all", "kwargs": {}}]}', InvalidArgument, "expect_nothing_at_all")],
    ids=["missing", "not-json", "unknown-expectation"],
)
def test_bad_expectation_suite_stops_the_flow_naming_the_file(
    backend: Any, helpers: Any, content: str | None, error_type: type, says: str
) -> None:
    suite = backend.root / "suites" / "churn.json"
    if content is not None:
        suite.parent.mkdir()
        suite.write_text(content)
    state = _run(source=helpers.source(day=0, n_rows=300), suite_path=str(suite), serve_port=None)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, error_type)
    assert str(suite) in str(error) and says in str(error)
    assert not (backend.artifact_root / "quarantine").exists()  # the data was not judged


def test_invalid_settings_fail_before_any_work(backend: Any, helpers: Any) -> None:
    state = _run(source=helpers.source(day=0), n_estimators=0, serve_port=None)
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InvalidArgument) and "n_estimators" in str(error)
    assert helpers.task_runs_of(_flow_run_id(state)) == {}


# ----------------------------------------------------------------------------- serving


class _Tamperer:
    """Corrupts a model version's registered files as soon as the version is READY, i.e.
    after registration verified them and before the server is asked to load them."""

    def __init__(self, backend: Any, name: str, version: int) -> None:
        self.backend, self.name, self.version = backend, name, version
        self.tampered: Path | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "_Tamperer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        from registry_tasks import RegistryClient
        from tracking_plugin.entities import ModelVersionStatus
        from tracking_plugin.errors import NotFound as Missing

        registry = RegistryClient(self.backend.tracking_uri, artifact_root=str(self.backend.artifact_root))
        while not self._stop.is_set():
            try:
                version = registry.get_version(self.name, self.version)
            except Missing:
                version = None
            if version is not None and version.status is ModelVersionStatus.READY and version.storage_location:
                target = Path(version.storage_location) / "model.skops"
                with open(target, "ab") as handle:
                    handle.write(b"tampered")
                self.tampered = target
                return
            time.sleep(0.01)


@pytest.mark.slow
def test_deploy_smoke_test_and_a_refused_refresh_keeps_the_previous_champion_serving(
    backend: Any, helpers: Any
) -> None:
    from serving_tasks.deploy import stop_server

    port = helpers.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    example = source_from_uri(helpers.source(day=9, n_rows=5)).load()
    body = {"dataframe_split": json.loads(example.drop(columns=["customer_id", "batch_date", "churn"]).to_json(orient="split", index=False))}
    try:
        first = _run(source=helpers.source(day=0), serve_port=port, **helpers.FAST)
        assert first.is_completed(), first.message
        tasks = helpers.task_runs_of(_flow_run_id(first), expect=("deploy-model", "smoke-test"))
        assert "deploy-model" in tasks and "smoke-test" in tasks
        assert httpx.get(f"{endpoint}/version", timeout=10).json()["version"] == 1
        answer = httpx.post(f"{endpoint}/invocations", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 5

        # The same data and settings again: an equal model, which this lenient gate lets
        # through; its files are damaged after registration, so the server refuses it.
        lenient = {"primary_metric": "roc_auc", "min_improvement": 0.0}
        with _Tamperer(backend, "churn", 2) as tamperer:
            second = _run(source=helpers.source(day=0), serve_port=port, gate=lenient, **helpers.FAST)
        assert tamperer.tampered is not None
        assert second.is_failed()
        error = second.result(raise_on_failure=False)
        assert isinstance(error, ServingRefreshFailed)
        message = str(error)
        assert "version 2" in message and "rolled back to version 1" in message and "keeps serving" in message

        # The previous champion is the champion again, and it never stopped answering.
        registry = backend.registry()
        assert registry.get_by_alias("churn", "champion").version == 1
        history = [(h.subject, h.from_value, h.to_value) for h in registry.history("churn") if h.kind == "alias"]
        assert history[-2:] == [("champion", "1", "2"), ("champion", "2", "1")]
        assert httpx.get(f"{endpoint}/version", timeout=10).json()["version"] == 1
        again = httpx.post(f"{endpoint}/invocations", json=body, timeout=10)
        assert again.status_code == 200 and again.json() == answer.json()
        helpers.events_of(_flow_run_id(second), "mlops.model.rolled_back")
        run = backend.tracking().get_run(registry.get_version("churn", 2).run_id)
        assert run.info.status.value == "FAILED"
    finally:
        stop_server(port)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{endpoint}/health", timeout=2)
