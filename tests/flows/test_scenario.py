"""Scenario files for ``simulate --scenario``: the shipped ones load, a bad file is refused
naming the key or value and the fix, and every corrupted-day kind is stopped by the
batch suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prefect_mlops.flows.data import ChurnGenerator
from prefect_mlops.flows.scenario import (
    CORRUPTION_KINDS,
    Scenario,
    corrupt_batch,
    day_generator_args,
    load_scenario,
    poison_batch,
    shipped_scenarios,
)
from tracking_plugin.errors import InvalidArgument, NotFound

SHIPPED = ("concept-drift", "corrupted-days", "covariate-drift", "gradual-drift", "poisoned-batch", "steady-load")


def test_every_shipped_scenario_loads_and_says_what_it_does() -> None:
    assert sorted(shipped_scenarios()) == list(SHIPPED)
    for name in SHIPPED:
        scenario = load_scenario(name)
        assert scenario.name == name and len(scenario.description) > 20, name
    assert load_scenario("concept-drift").labels.delay_days == 1  # type: ignore[union-attr]
    assert {c.kind for c in load_scenario("corrupted-days").corrupted} == set(CORRUPTION_KINDS)
    assert load_scenario("steady-load").load.requests_per_second >= 20


def test_the_default_scenario_is_what_simulate_did_before() -> None:
    from prefect_mlops.flows.simulate import legacy_scenario

    shipped = load_scenario("covariate-drift")
    legacy = legacy_scenario()
    assert (shipped.days, shipped.drifts, shipped.corrupted) == (legacy.days, legacy.drifts, legacy.corrupted)


def test_with_days_tells_the_same_story_over_fewer_or_more_days() -> None:
    thirty = load_scenario("covariate-drift").with_days(30)
    assert (thirty.days, thirty.drifts[0].start, thirty.corrupted[0].day) == (30, 18, 9)
    assert thirty.drifts[0].ramp_days == 1  # a shift at once stays at once
    short = load_scenario("corrupted-days").with_days(6)
    days = [c.day for c in short.corrupted]
    assert days == sorted(set(days)) and days[-1] < 6, days  # each fault keeps a day of its own
    gradual = load_scenario("gradual-drift").with_days(6)
    assert [day_generator_args(gradual, d)["drift"] for d in range(6)] == pytest.approx(
        [0, 0, 2 / 3, 4 / 3, 2, 2], abs=1e-6)
    assert load_scenario("concept-drift").with_days(None).days == 30


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("name: x\ndayz: 5\n", ["unknown key 'dayz'", "days"]),
        ("name: x\ndrifts:\n  - {kind: covariate, start: 2, level: 1, speed: 3}\n", ["'drifts.0.speed'", "ramp_days"]),
        ("name: x\ndrifts:\n  - {kind: sudden, start: 2, level: 1}\n", ["drifts.0.kind", "'sudden'", "covariate"]),
        ("name: x\ndrifts:\n  - {kind: concept, start: 2, level: 3}\nlabels: {}\n", ["drifts.0", "0 to 1"]),
        ("name: x\ndrifts:\n  - {kind: concept, start: 2, level: 1}\n", ["labels: {delay_days: 1}"]),
        ("name: x\ncorrupted:\n  - {day: 2, kind: gremlins}\n", ["corrupted.0.kind", "'gremlins'", "label-leak"]),
        ("name: x\ndays: 0\n", ["days = 0", "greater than or equal to 1"]),
        ("name: x\npoisoned:\n  - {day: 2, label_noise: 0.9}\n", ["poisoned.0.label_noise", "0.5"]),
        ("name: x\ncorrupted: [{day: 2}]\npoisoned: [{day: 2, label_noise: 0.2}]\n", ["day 2 is both"]),
        ("name: x\nload: {requests_per_second: 0}\n", ["load.requests_per_second", "greater than or equal to 1"]),
        ("days: 3\n", ["missing key 'name'"]),
        ("- just\n- a list\n", ["must hold a mapping"]),
        ("name: [unclosed\n", ["not valid YAML"]),
    ],
)
def test_a_bad_scenario_file_is_refused_naming_the_key_or_value(tmp_path: Path, text: str, named: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InvalidArgument) as info:
        load_scenario(path)
    assert str(path) in info.value.message
    for part in named:
        assert part in info.value.message, info.value.message


def test_an_unknown_scenario_name_lists_the_shipped_ones() -> None:
    with pytest.raises(NotFound) as info:
        load_scenario("concept-drfit")
    assert "'concept-drfit'" in info.value.message and "concept-drift" in info.value.message


def test_the_command_refuses_a_bad_scenario_with_the_message(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from prefect_mlops.deployments.cli import app

    path = _write(tmp_path, "name: x\ndrifts:\n  - {kind: covariate, start: 2, level: 1, speed: 3}\n")
    result = CliRunner().invoke(app, ["simulate", "--scenario", str(path), "--port", "0"])
    assert result.exit_code == 1, result.output
    assert "unknown key 'drifts.0.speed'" in result.output and "ramp_days" in result.output
    mixed = CliRunner().invoke(app, ["simulate", "--scenario", "concept-drift", "--drift-start", "3"])
    assert mixed.exit_code == 2 and "--drift-start cannot be combined with --scenario" in mixed.output


@pytest.mark.parametrize("kind", [k for k in CORRUPTION_KINDS if k != "generator"])
def test_each_kind_of_corrupted_batch_is_stopped_by_the_suite(kind: str) -> None:
    from prefect_mlops.flows.validation import validate_batch

    clean = ChurnGenerator(seed=3, day=4, n_rows=500).load()
    assert validate_batch(clean).success
    report = validate_batch(corrupt_batch(clean, kind, seed=1))
    assert not report.success, kind
    failed = {(o.type, o.column) for o in report.failed}
    expected = {
        "schema": ("expect_table_columns_to_match_set", None),
        "nulls": ("expect_column_values_to_not_be_null", "payment_method"),
        "type": ("expect_column_values_to_be_in_type_list", "tenure_months"),
        "label-leak": ("expect_table_columns_to_match_set", None),
    }[kind]
    assert expected in failed, failed
    if kind == "label-leak":
        assert "churned_next_month" in report.failure_summary()


def test_a_poisoned_batch_flips_about_its_share_of_labels_and_nothing_else() -> None:
    clean = ChurnGenerator(seed=3, day=4, n_rows=4000).load()
    poisoned = poison_batch(clean, 0.35, seed=1)
    flipped = float(np.mean(poisoned["churn"] != clean["churn"]))
    assert 0.32 < flipped < 0.38
    assert poisoned.drop(columns="churn").equals(clean.drop(columns="churn"))


def test_scenarios_are_immutable_and_strict() -> None:
    scenario = Scenario(name="x")
    with pytest.raises(Exception):
        scenario.days = 3  # type: ignore[misc]
    assert scenario.drift_kinds() == [] and scenario.labels is None
