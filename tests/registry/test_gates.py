"""Evaluation gate rules: each rule failing alone fails the decision and says why."""

from __future__ import annotations

import json
import math

import pytest

from registry_tasks.gates import EvaluationGate, Guard
from tracking_plugin.errors import InvalidArgument

GATE = EvaluationGate(
    primary_metric="roc_auc",
    min_improvement=0.01,
    thresholds={"roc_auc": (0.7, None), "log_loss": (None, 0.6)},
    guards=(Guard("recall", tolerance=0.02),),
    min_eval_rows=100,
)
CHAMPION = {"roc_auc": 0.80, "recall": 0.60, "log_loss": 0.45}
GOOD = {"roc_auc": 0.83, "recall": 0.59, "log_loss": 0.40}


def failed_rules(decision) -> list[tuple[str, str | None]]:  # type: ignore[no-untyped-def]
    return [(o.rule, o.metric) for o in decision.outcomes if o.passed is False]


def test_a_good_candidate_passes_every_rule() -> None:
    decision = GATE.evaluate(GOOD, CHAMPION, eval_rows=500, candidate_version=2, champion_version=1)
    assert decision.passed, decision.reason
    assert failed_rules(decision) == []
    assert decision.reason.startswith("Accepted")
    assert decision.champion_version == 1 and decision.candidate_version == 2


@pytest.mark.parametrize(
    ("candidate", "eval_rows", "expected"),
    [
        ({**GOOD, "roc_auc": 0.805}, 500, [("min_improvement", "roc_auc")]),
        ({**GOOD, "log_loss": 0.7}, 500, [("threshold", "log_loss")]),
        ({**GOOD, "recall": 0.55}, 500, [("guard", "recall")]),
        (GOOD, 99, [("min_eval_rows", None)]),
    ],
    ids=["no-improvement", "threshold", "guard-regressed", "too-few-rows"],
)
def test_each_rule_failing_alone_fails_the_gate(candidate, eval_rows, expected) -> None:  # type: ignore[no-untyped-def]
    decision = GATE.evaluate(candidate, CHAMPION, eval_rows=eval_rows)
    assert not decision.passed
    assert failed_rules(decision) == expected
    rule, metric = expected[0]
    assert rule in decision.reason and (metric is None or metric in decision.reason)


def test_absolute_threshold_on_the_primary_metric_fails_alone_without_champion() -> None:
    decision = GATE.evaluate({**GOOD, "roc_auc": 0.65}, None, eval_rows=500)
    assert not decision.passed
    assert failed_rules(decision) == [("threshold", "roc_auc")]


def test_without_champion_thresholds_decide_and_comparisons_are_skipped() -> None:
    decision = GATE.evaluate({"roc_auc": 0.72, "log_loss": 0.5, "recall": 0.1}, None, eval_rows=100)
    assert decision.passed
    skipped = [(o.rule, o.metric) for o in decision.outcomes if o.passed is None]
    assert ("min_improvement", "roc_auc") in skipped and ("guard", "recall") in skipped
    assert "no champion" in decision.reason


def test_missing_or_nan_primary_metric_fails() -> None:
    for candidate in ({"log_loss": 0.3, "recall": 0.9}, {**GOOD, "roc_auc": math.nan}):
        decision = GATE.evaluate(candidate, CHAMPION, eval_rows=500)
        assert not decision.passed
        assert ("primary_metric_present", "roc_auc") in failed_rules(decision)


def test_minimize_direction_counts_a_drop_as_improvement() -> None:
    gate = EvaluationGate("rmse", direction="minimize", min_improvement=0.1)
    assert gate.evaluate({"rmse": 1.0}, {"rmse": 1.2}).passed
    assert not gate.evaluate({"rmse": 1.15}, {"rmse": 1.2}).passed


def test_decision_is_json_serializable_and_renders_markdown() -> None:
    decision = GATE.evaluate({**GOOD, "recall": 0.5}, CHAMPION, eval_rows=500)
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["passed"] is False and data["gate"]["primary_metric"] == "roc_auc"
    markdown = decision.to_markdown()
    assert "FAILED" in markdown and "| guard | recall |" in markdown and "**FAIL**" in markdown


def test_gate_round_trips_through_a_dict() -> None:
    assert EvaluationGate.from_dict(GATE.to_dict()) == GATE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"primary_metric": ""},
        {"primary_metric": "auc", "direction": "up"},
        {"primary_metric": "auc", "min_improvement": -1},
        {"primary_metric": "auc", "thresholds": {"auc": 0.7}},
        {"primary_metric": "auc", "min_eval_rows": -5},
    ],
)
def test_malformed_gates_are_refused_with_the_value(kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as excinfo:
        EvaluationGate(**kwargs)
    assert "Invalid" in str(excinfo.value)


def test_unknown_gate_keys_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="primary_metrc"):
        EvaluationGate.from_dict({"primary_metric": "auc", "primary_metrc": "x"})
