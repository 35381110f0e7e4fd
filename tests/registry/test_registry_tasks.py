"""The registry's Prefect tasks in real flow runs (``prefect_harness``): register -> gate ->
promote -> roll back, read back as a user would: the registry, its audit trail, the flow
run's markdown artifacts and the Prefect events."""

from __future__ import annotations

import getpass
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pandas as pd
import pytest
from support import artifacts_of

from registry_tasks import EvaluationGate, RegistryClient, evaluate_gate, promote, register_model, rollback
from tracking_plugin.entities import ModelVersionStatus
from tracking_plugin.errors import Conflict, InvalidArgument, ModelLoadRefused

SECTION = "Model registry"  # the README section whose examples must run
GATE = EvaluationGate("accuracy", min_improvement=0.01, thresholds={"accuracy": (0.7, None)})


# ----------------------------------------------------------------------------- helpers




@pytest.fixture(scope="module")
def training_data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    return X, (X["a"] - X["b"] > 0).astype(int)


def _use_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, uri: str) -> RegistryClient:
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", uri)
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.chdir(tmp_path)
    return RegistryClient()


@pytest.fixture
def registry(prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RegistryClient]:
    """A fresh SQLite backend configured through PREFECT_MLOPS_* (as a user would)."""
    yield _use_backend(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'mlops.db'}")


@pytest.fixture
def registry_any_db(prefect_harness: None, db_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RegistryClient:
    """The same on SQLite and on PostgreSQL."""
    return _use_backend(monkeypatch, tmp_path, db_uri)


def log_trained_model(training_data: tuple[pd.DataFrame, pd.Series], accuracy: float, *, C: float = 1.0) -> str:
    """Train, log the model and an ``accuracy`` metric in a tracking run; the model's URI."""
    from sklearn.linear_model import LogisticRegression

    import tracking_plugin as mlops
    from tracking_plugin.models import log_model

    X, y = training_data
    with mlops.start_run() as run:
        mlops.log_metric("accuracy", accuracy)
        log_model(LogisticRegression(C=C).fit(X, y), "model", input_example=X.head(2))
    return f"runs:/{run.info.run_id}/model"


def current_flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id)


# ------------------------------------------------------------------------------- flows


def _release_flow() -> Any:
    from prefect import flow

    @flow(name="release")
    def release(model_uri: str, gate: EvaluationGate = GATE, reason: str | None = None) -> dict[str, Any]:
        version = register_model(model_uri, "churn", tags={"source": "test"})
        decision = evaluate_gate("churn", version.version, gate)
        promoted = promote("churn", version.version, reason=reason)  # raises Conflict if the gate failed
        return {"version": version, "decision": decision, "promoted": promoted, "flow_run_id": current_flow_run_id()}

    return release


def test_register_gate_promote_flow_moves_the_alias_and_records_why(
    registry_any_db: RegistryClient, training_data: Any, prefect_events: Any
) -> None:
    registry = registry_any_db
    release = _release_flow()

    first = release(log_trained_model(training_data, 0.80), reason="first release")
    assert first["version"].status is ModelVersionStatus.READY
    assert first["decision"].passed and first["decision"].decision_id
    assert registry.get_by_alias("churn").version == 1

    second = release(log_trained_model(training_data, 0.90, C=0.1), reason="better accuracy")
    decision = second["decision"]
    assert (decision.passed, decision.champion_version) == (True, 1)
    assert decision.champion_metrics == {"accuracy": 0.80}  # the champion's training run
    assert registry.get_by_alias("churn").version == 2
    assert registry.get_version("churn", 2).tags == {"source": "test"}

    # The audit trail: who, why, which flow run, which gate decision.
    rows = [r for r in registry.history("churn") if r.kind == "alias"]
    assert [(r.from_value, r.to_value) for r in rows] == [(None, "1"), ("1", "2")]
    for row, result, reason in zip(rows, (first, second), ("first release", "better accuracy")):
        assert row.actor == getpass.getuser()
        assert row.reason == reason
        assert row.prefect_flow_run_id == result["flow_run_id"]
        assert row.gate_decision_id == result["decision"].decision_id
    stored = registry.store.get_gate_decision(decision.decision_id)
    assert (stored.passed, stored.prefect_flow_run_id) == (True, second["flow_run_id"])

    # The flow run's markdown artifacts: what was registered, the gate's rule table, the move.
    artifacts = artifacts_of(second["flow_run_id"])
    assert set(artifacts) >= {"registration-churn-2", "gate-churn-2", "promotion-churn-2"}
    gate_md = artifacts["gate-churn-2"]
    assert "Evaluation gate: PASSED" in gate_md
    assert re.search(r"\| min_improvement \| accuracy \| 0\.1 \| >= 0\.01 \(maximize\) \| pass \|", gate_md), gate_md
    assert decision.decision_id in gate_md
    promotion_md = artifacts["promotion-churn-2"]
    assert "| previous holder | 1 |" in promotion_md and "| alias | champion |" in promotion_md
    assert "Evaluation gate: PASSED" in promotion_md  # the decision table travels with the move

    # The events deployment triggers and serving processes react to.
    [promoted] = prefect_events(second["flow_run_id"], "mlops.model.promoted")
    assert promoted.resource["prefect.resource.id"] == "mlops.model.churn.2"
    assert (promoted.resource["mlops.model.name"], promoted.resource["mlops.model.version"]) == ("churn", "2")
    related = {r["prefect.resource.id"]: r.get("prefect.resource.role") for r in promoted.related}
    assert related["mlops.model.churn"] == "registered-model"
    assert promoted.payload["previous_version"] == 1
    assert promoted.payload["gate_decision_id"] == decision.decision_id
    [registered] = prefect_events(second["flow_run_id"], "mlops.model.registered")
    assert registered.resource["prefect.resource.id"] == "mlops.model.churn.2"


def test_failed_gate_fails_the_flow_with_conflict_and_nothing_moves(
    registry: RegistryClient, training_data: Any, prefect_events: Any
) -> None:
    release = _release_flow()
    model_uri = log_trained_model(training_data, 0.80)
    release(model_uri)
    history_before = registry.history("churn")

    # Same model again: no improvement over the champion, so the gate fails.
    state = release(model_uri, return_state=True)
    assert state.is_failed()
    with pytest.raises(Conflict, match=r"version 2 of registered model 'churn'.*evaluation gate failed"):
        state.result()

    assert registry.get_by_alias("churn").version == 1
    assert registry.history("churn") == history_before
    failed = registry.decision_for("churn", 2)
    assert failed is not None and not failed.passed and "min_improvement" in failed.reason

    flow_run_id = str(state.state_details.flow_run_id)
    artifacts = artifacts_of(flow_run_id)
    assert "Evaluation gate: FAILED" in artifacts["gate-churn-2"]
    refused = artifacts["promotion-refused-churn-2"]
    assert "Conflict" in refused and "**FAIL**" in refused
    # The version was registered (event sent), but no promotion event exists for this run.
    prefect_events(flow_run_id, "mlops.model.registered")
    assert _promoted_events(flow_run_id) == []


def _promoted_events(flow_run_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    event_filter = EventFilter(
        event=EventNameFilter(name=["mlops.model.promoted"]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    with get_client(sync_client=True) as client:
        return list(client.read_events(filter=event_filter, limit=50).events)  # the server allows at most 50


def test_a_version_whose_registration_failed_cannot_be_promoted(
    registry: RegistryClient, training_data: Any, tmp_path: Path
) -> None:
    from prefect import flow
    from sklearn.linear_model import LogisticRegression

    from tracking_plugin.models import save_model

    X, y = training_data
    model_dir = tmp_path / "model"
    save_model(LogisticRegression().fit(X, y), model_dir, input_example=X.head(2))
    (model_dir / "MLmodel").write_text((model_dir / "MLmodel").read_text() + "# tampered\n")

    @flow
    def release_tampered() -> None:
        try:
            register_model(str(model_dir), "churn")
        except ModelLoadRefused:
            pass  # recorded as FAILED_REGISTRATION; not retried (it is not a transient error)
        evaluate_gate("churn", 1, GATE, candidate_metrics={"accuracy": 0.9})
        promote("churn", 1)

    state = release_tampered(return_state=True)
    with pytest.raises(Conflict, match="status is FAILED_REGISTRATION"):
        state.result()
    versions = registry.store.search_model_versions("name = 'churn'")
    assert [(v.version, v.status) for v in versions] == [(1, ModelVersionStatus.FAILED_REGISTRATION)]
    assert registry.get_by_alias("churn") is None
    assert registry.history("churn") == []


def test_register_task_refuses_a_folder_that_is_not_a_model_without_retrying(
    registry: RegistryClient, tmp_path: Path
) -> None:
    from prefect import flow

    not_a_model = tmp_path / "data"
    not_a_model.mkdir()
    (not_a_model / "rows.csv").write_text("a,b\n1,2\n")

    @flow
    def register_folder() -> None:
        register_model(str(not_a_model), "churn")

    started = time.monotonic()
    state = register_folder(return_state=True)
    with pytest.raises(InvalidArgument, match="not a model directory"):
        state.result()
    assert time.monotonic() - started < 4  # two retries would wait 2 s each
    assert len(registry.store.search_registered_models()) == 0


def test_register_task_takes_any_valid_name_and_refuses_hostile_models_once(
    registry: RegistryClient, training_data: Any, tmp_path: Path
) -> None:
    """Issue 14, item 8: a 256-character name registers; a cause in the input (a model
    naming a file outside itself) fails at once, with no version and no retry."""
    from prefect import flow
    from sklearn.linear_model import LogisticRegression

    from tracking_plugin.models import load_model, save_model

    X, y = training_data
    good, hostile = tmp_path / "good", tmp_path / "hostile"
    for path in (good, hostile):
        save_model(LogisticRegression().fit(X, y), path, input_example=X.head(2))
    mlmodel = (hostile / "MLmodel").read_text().replace("artifact_path: input_example.json", "artifact_path: /etc/hostname")
    (hostile / "MLmodel").write_text(mlmodel)
    (hostile / "manifest.json").unlink()
    long_name = "churn model " + "n" * 244

    @flow
    def release(path: str, name: str) -> int:
        return register_model(path, name).version

    assert release(str(good), long_name) == 1
    version = registry.get_version(long_name, 1)
    assert version.status is ModelVersionStatus.READY
    assert load_model(version.storage_location).predict(X.head(3)).tolist() == registry_predictions(X, y)

    started = time.monotonic()
    state = release(str(hostile), "other", return_state=True)
    with pytest.raises(ModelLoadRefused, match="/etc/hostname"):
        state.result()
    assert time.monotonic() - started < 4  # two retries would wait 2 s each
    assert [m.name for m in registry.store.search_registered_models()] == [long_name]


def registry_predictions(X: pd.DataFrame, y: pd.Series) -> list[int]:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(X, y).predict(X.head(3)).tolist()


def test_rollback_restores_the_previous_champion_and_emits_rolled_back(
    registry: RegistryClient, training_data: Any, prefect_events: Any
) -> None:
    from prefect import flow

    release = _release_flow()
    release(log_trained_model(training_data, 0.80))
    release(log_trained_model(training_data, 0.90, C=0.1))
    assert registry.get_by_alias("churn").version == 2

    @flow(name="roll-back")
    def roll_back(reason: str) -> dict[str, Any]:
        restored = rollback("churn", reason=reason, actor="oncall")
        return {"restored": restored, "flow_run_id": current_flow_run_id()}

    result = roll_back("v2 raises error rates")
    assert result["restored"].version == 1
    assert registry.get_by_alias("churn").version == 1
    last = registry.history("churn")[-1]
    assert (last.kind, last.from_value, last.to_value) == ("alias", "2", "1")
    assert (last.actor, last.reason, last.prefect_flow_run_id) == ("oncall", "v2 raises error rates", result["flow_run_id"])

    [event] = prefect_events(result["flow_run_id"], "mlops.model.rolled_back")
    assert event.resource["prefect.resource.id"] == "mlops.model.churn.1"
    assert event.resource["mlops.model.version"] == "1"
    assert event.payload["from_version"] == 2
    assert "| to version | 1 |" in artifacts_of(result["flow_run_id"])["rollback-churn-champion"]

    # Nothing held the alias before v1: a second rollback is refused and moves nothing.
    state = roll_back("again", return_state=True)
    with pytest.raises(Conflict, match="no earlier"):
        state.result()
    assert registry.get_by_alias("churn").version == 1


# ------------------------------------------------------------------------ README: registry section


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_registry_docs_examples_run(registry: RegistryClient, readme_section) -> None:  # type: ignore[no-untyped-def]
    namespace: dict[str, object] = {"__name__": "__docs__"}
    blocks = python_blocks(readme_section(SECTION))
    assert len(blocks[0].strip().splitlines()) <= 25  # "in a few lines"
    for index, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md {SECTION}[python block {index}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"python block {index} of README.md {SECTION} failed:\n{block}") from exc

    # What the examples say they do: v1 promoted, v2 promoted by the flow, then rolled back.
    assert registry.get_by_alias("cancer").version == 1
    moves = [(r.from_value, r.to_value) for r in registry.history("cancer") if r.kind == "alias"]
    assert moves == [(None, "1"), ("1", "2"), ("2", "1")]


@pytest.mark.slow
def test_register_task_retries_when_the_artifact_store_is_unreachable(
    registry: RegistryClient, training_data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow
    from sklearn.linear_model import LogisticRegression

    from tracking_plugin.errors import BackendUnavailable
    from tracking_plugin.models import save_model

    X, y = training_data
    save_model(LogisticRegression().fit(X, y), tmp_path / "model", input_example=X.head(2))
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", "s3://bucket/root")
    monkeypatch.setenv("PREFECT_MLOPS_S3_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    @flow
    def register_it() -> None:
        register_model(str(tmp_path / "model"), "churn")

    state = register_it(return_state=True)
    with pytest.raises(BackendUnavailable, match=dead):
        state.result()
    # Three attempts (the first and two retries), each recorded as a failed version.
    versions = registry.store.search_model_versions("name = 'churn'")
    assert sorted(v.version for v in versions) == [1, 2, 3]
    assert {v.status for v in versions} == {ModelVersionStatus.FAILED_REGISTRATION}
    assert registry.get_by_alias("churn") is None


def _flow_logging_and_registering(block: str | None, port: int) -> Any:
    from prefect import flow
    from sklearn.linear_model import LogisticRegression

    import tracking_plugin as mlops
    from serving_tasks.tasks import deploy_model
    from tracking_plugin.models import load_model, log_model
    from tracking_plugin.prefect import track

    @track(experiment="release-via-block", block=block)
    @flow(name="release-via-block")
    def logged_and_registered(X: pd.DataFrame, y: pd.Series) -> dict[str, Any]:
        mlops.log_metric("accuracy", 0.9)
        log_model(LogisticRegression().fit(X, y), "model", input_example=X.head(2))
        run_id = mlops.active_run().run_id  # type: ignore[union-attr]
        version = register_model(f"runs:/{run_id}/model", "churn")
        evaluate_gate("churn", version.version, GATE)
        promote("churn", version.version, reason="block backend")
        predicted = load_model("models:/churn@champion").predict(X.head(3))  # resolved in the block's backend
        server = deploy_model("models:/churn@champion", port, expect_version=version.version, timeout=120)
        return {"version": version.version, "predicted": list(np.asarray(predicted).ravel()), "endpoint": server.endpoint}

    return logged_and_registered


@pytest.mark.parametrize("configured", ["in code", "in the environment"])
def test_registry_tasks_use_the_backend_of_a_block_configured_flow(
    registry: RegistryClient, training_data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: str
) -> None:
    """A flow tracked with @track(block=...) or on a worker with PREFECT_MLOPS_BLOCK: its
    registry tasks register and promote in that backend, not in PREFECT_MLOPS_TRACKING_URI's."""
    import uuid

    from tracking_plugin.blocks import MlopsBackend
    from tracking_plugin.client import TrackingClient

    name = f"team-{uuid.uuid4().hex[:8]}"
    team_db = tmp_path / "team.db"
    MlopsBackend(tracking_uri=f"sqlite:///{team_db}", artifact_root=str(tmp_path / "team-artifacts")).save(name)
    if configured == "in the environment":
        monkeypatch.setenv("PREFECT_MLOPS_BLOCK", name)

    from serving_tasks.deploy import stop_server
    from support import free_port

    port = free_port()
    try:
        result = _flow_logging_and_registering(name if configured == "in code" else None, port)(*training_data)
        # The server the flow deployed serves the block's model (the environment has none).
        answer = httpx.post(f"{result['endpoint']}/invocations", json={"dataframe_split": training_data[0].head(3).to_dict(orient="split")}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == result["predicted"]
    finally:
        stop_server(port)
    version = result["version"]

    team = RegistryClient(f"sqlite:///{team_db}", artifact_root=str(tmp_path / "team-artifacts"))
    assert team.get_by_alias("churn").version == version == 1
    assert str(tmp_path / "team-artifacts") in team.get_version("churn", 1).storage_location
    assert TrackingClient(f"sqlite:///{team_db}").get_experiment_by_name("release-via-block") is not None
    with pytest.raises(Exception, match="churn"):
        registry.get_version("churn", 1)  # nothing in the environment's own backend
    if configured == "in the environment":
        # Default clients follow PREFECT_MLOPS_BLOCK as the fluent API and @track do.
        assert RegistryClient().get_by_alias("churn").version == 1
        assert TrackingClient().tracking_uri == f"sqlite:///{team_db}"
