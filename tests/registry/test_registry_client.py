"""``RegistryClient`` without Prefect, on SQLite and PostgreSQL: register, gate, promote,
roll back, and the audit trail a reviewer reads afterwards."""

from __future__ import annotations

import getpass
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from registry_tasks import EvaluationGate, Guard, RegistryClient
from tracking_plugin.client import TrackingClient
from tracking_plugin.entities import ModelVersionStatus, Stage
from tracking_plugin.errors import Conflict, InvalidArgument, NotFound

GATE = EvaluationGate("accuracy", min_improvement=0.01, thresholds={"accuracy": (0.7, None)})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One small scikit-learn model saved in the MLmodel format (registered many times)."""
    from sklearn.linear_model import LogisticRegression

    from tracking_plugin.models import save_model

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    y = (X["a"] + X["b"] > 0).astype(int)
    path = tmp_path_factory.mktemp("model") / "model"
    save_model(LogisticRegression().fit(X, y), path, input_example=X.head(2))
    return str(path)


@pytest.fixture
def registry(db_uri: str, tmp_path: Path) -> RegistryClient:
    return RegistryClient(db_uri, artifact_root=str(tmp_path / "artifacts"))


def _logged_run(registry: RegistryClient, model_dir: str, metrics: dict[str, float]) -> str:
    """A tracking run holding the model under ``model`` and ``metrics``; returns runs:/ URI."""
    client = TrackingClient(registry.tracking_uri, artifact_root=registry.artifact_root)
    experiment = client.get_experiment_by_name("registry-tests") or client.get_experiment(
        client.create_experiment("registry-tests")
    )
    run = client.create_run(experiment.experiment_id)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.log_artifacts(run.info.run_id, model_dir, "model")
    return f"runs:/{run.info.run_id}/model"


def test_register_evaluate_promote_records_the_decision_in_the_audit_trail(
    registry: RegistryClient, model_dir: str
) -> None:
    version = registry.register(model_dir, "churn", tags={"team": "ml"})
    assert (version.version, version.status) == (1, ModelVersionStatus.READY)
    assert version.storage_location and version.storage_location != model_dir

    decision = registry.evaluate("churn", 1, GATE, candidate_metrics={"accuracy": 0.8}, eval_rows=100)
    assert decision.passed, decision.reason
    assert decision.champion_version is None  # no champion yet: thresholds decide
    assert registry.get_version("churn", 1).gate_decision_id == decision.decision_id

    promoted = registry.promote("churn", 1, reason="first release", prefect_flow_run_id="flow-run-1")
    assert promoted.aliases == ("champion",)
    assert registry.get_by_alias("churn").version == 1

    [row] = registry.history("churn")
    assert (row.kind, row.subject, row.from_value, row.to_value) == ("alias", "champion", None, "1")
    assert row.actor == getpass.getuser()
    assert row.reason == "first release"
    assert row.prefect_flow_run_id == "flow-run-1"
    assert row.gate_decision_id == decision.decision_id


def test_gate_metrics_default_to_the_training_runs_of_candidate_and_champion(
    registry: RegistryClient, model_dir: str
) -> None:
    registry.register(_logged_run(registry, model_dir, {"accuracy": 0.80, "recall": 0.7}), "churn")
    registry.evaluate("churn", 1, GATE)
    registry.promote("churn", 1)
    registry.register(_logged_run(registry, model_dir, {"accuracy": 0.85, "recall": 0.6}), "churn")

    gate = EvaluationGate("accuracy", min_improvement=0.01, guards=[Guard("recall", tolerance=0.05)])
    decision = registry.evaluate("churn", 2, gate)
    assert decision.champion_version == 1
    assert decision.candidate_metrics == {"accuracy": 0.85, "recall": 0.6}
    assert decision.champion_metrics == {"accuracy": 0.80, "recall": 0.7}
    assert not decision.passed  # accuracy improved, but recall regressed by 0.1 > 0.05
    assert "recall" in decision.reason


def test_failed_gate_refuses_promotion_and_nothing_moves(registry: RegistryClient, model_dir: str) -> None:
    for _ in range(2):
        registry.register(model_dir, "churn")
    registry.evaluate("churn", 1, GATE, candidate_metrics={"accuracy": 0.8})
    registry.promote("churn", 1, stage="production")
    before = registry.history("churn")

    failed = registry.evaluate("churn", 2, GATE, candidate_metrics={"accuracy": 0.805})
    assert not failed.passed
    with pytest.raises(Conflict, match="evaluation gate failed") as refused:
        registry.promote("churn", 2, stage="Production")
    assert failed.decision_id in str(refused.value)

    assert registry.get_by_alias("churn").version == 1
    assert registry.get_version("churn", 1).current_stage is Stage.PRODUCTION
    assert registry.get_version("churn", 2).current_stage is Stage.NONE
    assert registry.history("churn") == before


def test_promotion_without_any_decision_is_refused_unless_asked(registry: RegistryClient, model_dir: str) -> None:
    registry.register(model_dir, "churn")
    with pytest.raises(Conflict, match="no evaluation-gate decision"):
        registry.promote("churn", 1)
    assert registry.get_by_alias("churn") is None

    registry.promote("churn", 1, require_passed_gate=False, actor="alice")
    [row] = registry.history("churn")
    assert (row.actor, row.gate_decision_id) == ("alice", None)
    assert "without an evaluation gate" in (row.reason or "")


def test_a_version_that_is_not_ready_cannot_be_promoted(registry: RegistryClient, tmp_path: Path, model_dir: str) -> None:
    import shutil

    from tracking_plugin.errors import ModelLoadRefused

    tampered = tmp_path / "tampered"
    shutil.copytree(model_dir, tampered)
    (tampered / "MLmodel").write_text((tampered / "MLmodel").read_text() + "\n# edited\n")
    with pytest.raises(ModelLoadRefused):
        registry.register(str(tampered), "churn")
    assert registry.get_version("churn", 1).status is ModelVersionStatus.FAILED_REGISTRATION

    decision = registry.evaluate("churn", 1, GATE, candidate_metrics={"accuracy": 0.9})
    assert decision.passed  # the metrics are fine; the files are not
    with pytest.raises(Conflict, match="FAILED_REGISTRATION"):
        registry.promote("churn", 1)
    assert registry.get_by_alias("churn") is None
    assert registry.history("churn") == []


def test_promote_to_a_stage_archives_the_previous_holder(registry: RegistryClient, model_dir: str) -> None:
    for version, accuracy in ((1, 0.8), (2, 0.9)):
        registry.register(model_dir, "churn")
        registry.evaluate("churn", version, GATE, candidate_metrics={"accuracy": accuracy})
        registry.promote("churn", version, alias=None, stage="production")
    assert registry.get_version("churn", 2).current_stage is Stage.PRODUCTION
    assert registry.get_version("churn", 1).current_stage is Stage.ARCHIVED
    assert registry.get_by_alias("churn") is None  # alias=None: only the stage moved
    stage_rows = [(r.version, r.from_value, r.to_value) for r in registry.history("churn")]
    assert stage_rows == [(1, "None", "Production"), (2, "None", "Production"), (1, "Production", "Archived")]


def test_invalid_stage_names_the_value_and_the_choices(registry: RegistryClient, model_dir: str) -> None:
    registry.register(model_dir, "churn")
    with pytest.raises(InvalidArgument, match=r"'prod'.*Production"):
        registry.promote("churn", 1, stage="prod", require_passed_gate=False)
    assert registry.history("churn") == []


def test_rollback_steps_back_through_previous_champions(registry: RegistryClient, model_dir: str) -> None:
    for version in (1, 2, 3):
        registry.register(model_dir, "churn")
        registry.evaluate("churn", version, EvaluationGate("accuracy"), candidate_metrics={"accuracy": 0.8 + version / 100})
        registry.promote("churn", version)
    assert registry.rollback("churn", reason="v3 misbehaves", actor="oncall").version == 2
    assert registry.get_by_alias("churn").version == 2
    last = registry.history("churn")[-1]
    assert (last.from_value, last.to_value, last.reason, last.actor) == ("3", "2", "v3 misbehaves", "oncall")
    assert registry.rollback("churn").version == 1
    with pytest.raises(Conflict, match="no earlier"):
        registry.rollback("churn")
    assert registry.get_by_alias("churn").version == 1


def test_rollback_of_an_unset_alias_is_not_found(registry: RegistryClient, model_dir: str) -> None:
    registry.register(model_dir, "churn")
    with pytest.raises(NotFound, match="challenger"):
        registry.rollback("churn", "challenger")


def test_stored_decisions_round_trip_with_their_rule_table(registry: RegistryClient, model_dir: str) -> None:
    registry.register(model_dir, "churn")
    gate = EvaluationGate("log_loss", direction="minimize", thresholds={"log_loss": (None, 0.6)}, min_eval_rows=50)
    decision = registry.evaluate("churn", 1, gate, candidate_metrics={"log_loss": math.inf}, eval_rows=10)
    assert not decision.passed

    stored = registry.decision_for("churn", 1)
    assert stored is not None
    assert stored.decision_id == decision.decision_id
    assert stored.outcomes == decision.outcomes  # inf survives the JSON round trip
    assert stored.to_markdown() == decision.to_markdown()
    assert "| min_eval_rows | - | 10 | >= 50 | **FAIL** |" in stored.to_markdown()


def test_unknown_model_or_version_is_not_found(registry: RegistryClient, model_dir: str) -> None:
    with pytest.raises(NotFound, match="nope"):
        registry.evaluate("nope", 1, GATE, candidate_metrics={"accuracy": 1.0})
    registry.register(model_dir, "churn")
    with pytest.raises(NotFound, match="Version 7"):
        registry.promote("churn", 7, require_passed_gate=False)
    assert registry.get_by_alias("nope") is None


def test_a_gate_may_be_given_in_its_dict_form(registry: RegistryClient, model_dir: str) -> None:
    registry.register(model_dir, "churn")
    decision = registry.evaluate("churn", 1, GATE.to_dict(), candidate_metrics={"accuracy": 0.6})
    assert not decision.passed and decision.gate == GATE.to_dict()
    with pytest.raises(InvalidArgument, match="Unknown gate keys"):
        registry.evaluate("churn", 1, {"metric": "accuracy"}, candidate_metrics={"accuracy": 0.9})
    with pytest.raises(InvalidArgument, match="pass an EvaluationGate"):
        registry.evaluate("churn", 1, "accuracy", candidate_metrics={"accuracy": 0.9})  # type: ignore[arg-type]
    assert registry.decision_for("churn", 1).decision_id == decision.decision_id  # refusals stored nothing
