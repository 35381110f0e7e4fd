"""``simulate``: days of batches through the real flows, a real scoring server logging
its predictions and a client querying it; the table must say what the batches warrant,
and every shipped scenario (on short settings) must end with the figures it promises."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_mlops.flows.simulate import DayResult, batch_drift, render_table, simulate, simulate_scenario


def test_render_table_shows_every_column_plainly() -> None:
    rows = [
        DayResult(day=0, drift=0.0, corrupt=False, source="s", valid=True, retrained=True, gate_passed=True,
                  champion_version=1, requests=3),
        DayResult(day=1, drift=0.0, corrupt=True, source="s", valid=False, champion_version=1, requests=40),
        DayResult(day=2, drift=2.0, corrupt=False, source="s", valid=True, drift_score=4.25, drifted=True,
                  retrained=True, gate_passed=False, champion_version=1, requests=41, failed_requests=2,
                  note="ct_pipeline: ServingRefreshFailed"),
    ]
    header, rule, *lines = render_table(rows).splitlines()
    assert header.split() == ["day", "drift", "valid", "drift", "score", "drifted", "retrained", "gate",
                              "champion", "requests", "failed"]
    assert set(rule) == {"-"}
    assert lines[0].split() == ["0", "0.00", "yes", "-", "-", "yes", "yes", "v1", "3", "0"]
    assert lines[1].split() == ["1", "0.00", "no", "-", "-", "no", "-", "v1", "40", "0"]
    assert lines[2].split()[:10] == ["2", "2.00", "yes", "4.250", "yes", "yes", "no", "v1", "41", "2"]
    assert lines[2].endswith("ct_pipeline: ServingRefreshFailed")
    assert "requests" not in render_table(rows, requests=False)


def test_batches_drift_from_the_start_day() -> None:
    assert [batch_drift(d, drift_start=3, drift_level=1.5) for d in range(5)] == [0, 0, 0, 1.5, 1.5]


@pytest.mark.slow
def test_ten_days_match_what_the_batches_warrant(backend: Any, helpers: Any) -> None:
    from serving_tasks.deploy import state_dir

    port = helpers.free_port()
    printed: list[str] = []
    rows = simulate(days=10, drift_start=6, corrupt_day=3, n_rows=1000, n_estimators=20, port=port,
                    model_name="churn-sim", echo=printed.append, workdir=backend.root / "simulate")
    assert [r.day for r in rows] == list(range(10))

    # Day 0: no champion yet, so the pipeline trains one and serves it.
    first = rows[0]
    assert (first.valid, first.retrained, first.gate_passed, first.champion_version) == (True, True, True, 1)

    # The corrupted day is stopped at validation: nothing retrained, champion unchanged.
    corrupted = rows[3]
    assert corrupted.corrupt and corrupted.valid is False
    assert not corrupted.retrained and corrupted.gate_passed is None and corrupted.drift_score is None
    assert corrupted.champion_version == rows[2].champion_version
    assert len(list((backend.artifact_root / "quarantine").iterdir())) == 1

    # Before the drift starts, valid days look like the champion's data.
    for row in rows[1:6]:
        if row.day != 3:
            assert row.valid and row.drifted is False and row.drift_score < 0.2 and not row.retrained, row

    # From day 6 the batches drift away from day 0's distribution: a batch counts as
    # drifted exactly when the serving champion was trained before the drift started.
    trained_on_day = {1: 0}  # champion version -> the day of the batch it was trained on
    for previous, row in zip(rows, rows[1:]):
        if row.day == 3:
            continue
        champion_day = trained_on_day[previous.champion_version]
        warranted = row.drift > 0 and champion_day < 6
        assert row.drifted is warranted, (row, champion_day)
        assert (row.drift_score > 0.2) is warranted, row
        assert row.retrained is warranted, row
        if row.gate_passed:
            trained_on_day[row.champion_version] = row.day
    assert rows[6].drifted and rows[6].retrained

    # The gate column and the champion agree: the version moves up by one exactly when the
    # gate passed, and stays put otherwise; a candidate is there only when retrained.
    for previous, row in zip(rows, rows[1:]):
        assert (row.gate_passed is not None) == row.retrained, row
        expected = previous.champion_version + 1 if row.gate_passed else previous.champion_version
        assert row.champion_version == expected, row
        assert row.note == ("batch quarantined" if row.day == 3 else ""), row
    registry = backend.registry()
    assert registry.get_by_alias("churn-sim", "champion").version == rows[-1].champion_version
    versions = backend.tracking().search_model_versions("name = 'churn-sim'").items
    assert len(versions) == sum(r.retrained for r in rows)

    # The client kept asking the served champion all along and nothing failed.
    for row in rows[1:]:
        assert row.requests > 0 and row.failed_requests == 0, row
    assert not list(state_dir().glob("*.json")), "the scoring server was not stopped"

    # What the user sees: a line per day as it goes, then the table.
    # The quarantined day gets one line under its row saying where the batch went.
    [detail] = [line for line in printed if "quarantined at" in line]
    assert detail.strip().startswith("day 3, drift monitor: The batch failed data validation"), detail
    table = printed[-3].splitlines()
    assert table[0].split()[:3] == ["day", "drift", "valid"] and len(table) == 12
    assert table[2 + 3].split()[2] == "no" and table[2 + 3].endswith("batch quarantined")  # day 3


@pytest.mark.slow
def test_the_command_reports_an_expected_quarantine_in_one_line_without_log_noise(tmp_path: Any) -> None:
    """`prefect-mlops simulate` without --verbose: the table, and one line under the
    quarantined day, no ERROR lines or tracebacks; the header names only replayed days."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_MLOPS_", "PREFECT_LOGGING"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    script = Path(sys.executable).with_name("prefect-mlops")
    result = subprocess.run(
        [str(script), "simulate", "--days", "3", "--corrupt-day", "1", "--rows", "400", "--port", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ERROR" not in output and "Traceback" not in output, output
    header = output.splitlines()[0]
    assert "no covariate drift (it starts on day 6, after the last day, 2)" in header, header
    assert "a corrupted batch on day 1" in header, header
    [detail] = [line for line in output.splitlines() if "quarantined at" in line]
    assert detail.strip().startswith("day 1, ct_pipeline: The batch failed data validation"), detail
    assert "expectations of suite 'churn_batch' failed" in detail


# --------------------------------------------------------------------------- scenarios
# Every shipped scenario, told over a few days with small batches (1,000 rows: the gate
# needs 200 held-out rows). Each asserts the summary's machine-readable lines.

def figures_of(printed: list[str]) -> dict[str, str]:
    """The `key: value` lines the summary ends with."""
    lines = printed[-1].splitlines()
    out: dict[str, str] = {}
    for line in reversed(lines):
        key, sep, value = line.partition(": ")
        if not sep or " " in key or line.startswith(" "):
            break
        out[key] = value
    return out


def run(name: str, days: int, helpers: Any, *, serve: bool = True) -> tuple[Any, dict[str, str]]:
    printed: list[str] = []
    from pathlib import Path

    result = simulate_scenario(name, days=days, rows=1000, port=helpers.free_port() if serve else None,
                               model_name=f"sim-{name}", echo=printed.append, workdir=Path.cwd() / "simulate")
    figures = figures_of(printed)
    # The figures are printed last, in this order, and say what the result holds.
    keys = list(figures)[::-1]
    assert keys[:3] == ["corrupted_stopped", "regressions_promoted", "failed_requests"], keys
    assert {k: str(v) for k, v in result.figures.items() if k in figures} == figures
    return result, figures


@pytest.mark.slow
def test_concept_drift_is_caught_by_the_performance_monitor_and_retrained(backend: Any, helpers: Any) -> None:
    result, figures = run("concept-drift", 6, helpers)  # concept from day 2, labels 1 day late
    onset = result.scenario.drifts[0].start
    assert onset == 2
    assert figures["detection_days.concept"] in ("1", "2"), figures
    assert figures["regressions_promoted"] == "0" and figures["failed_requests"] == "0"
    assert int(figures["predictions_logged"]) > 0 and figures["predictions_dropped"] == "0"
    rows = result.rows
    # The drift monitor sees nothing: the features do not move.
    assert not any(r.drifted for r in rows[1:]), rows
    detected = next(r for r in rows if r.day >= onset and r.degraded)
    # The performance monitor emitted the event, and the retraining on the labelled batch
    # of the onset day was promoted through the gate.
    [event] = helpers.events_of(detected.monitor_run_id, "mlops.performance.degraded")
    assert event.resource["mlops.model.name"] == "sim-concept-drift"
    assert detected.retrained and detected.gate_passed, detected
    version = backend.registry().get_by_alias("sim-concept-drift", "champion")
    assert version.version == detected.champion_version
    assert "concept=" in version.tags["data.source"]
    [judged] = [j for j in result.judgements if j["day"] == detected.day]
    assert judged["roc_auc"] > judged["replaced_roc_auc"] + 0.2, judged
    # Before the onset, live quality was that of the training data.
    assert all(r.live_auc is None or r.live_auc > 0.7 for r in rows if r.day <= onset), rows


@pytest.mark.slow
def test_poisoned_batch_candidate_is_rejected_by_the_gate(backend: Any, helpers: Any) -> None:
    result, figures = run("poisoned-batch", 4, helpers, serve=False)
    [poisoned] = [r for r in result.rows if r.poisoned]
    assert poisoned.retrained and poisoned.gate_passed is False, poisoned
    assert poisoned.champion_version == 1 and poisoned.note == "poisoned batch: gate rejected it"
    assert figures["poisoned_rejected"] == "1/1" and figures["regressions_promoted"] == "0"
    registry = backend.registry()
    decision = registry.decision_for("sim-poisoned-batch", 2)
    assert not decision.passed and "roc_auc" in decision.reason, decision.reason


@pytest.mark.slow
def test_corrupted_days_are_each_stopped_by_validation(backend: Any, helpers: Any) -> None:
    result, figures = run("corrupted-days", 6, helpers, serve=False)
    assert figures["corrupted_stopped"] == "5/5", figures
    kinds = [r.corrupt_kind for r in result.rows if r.corrupt]
    assert sorted(kinds) == ["generator", "label-leak", "nulls", "schema", "type"]
    for row in result.rows:
        assert (row.valid is False) == row.corrupt and not (row.corrupt and row.retrained), row
    assert len(list((backend.artifact_root / "quarantine").iterdir())) == 5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["covariate-drift", "gradual-drift"])
def test_covariate_and_gradual_drift_are_detected_without_regressions(backend: Any, helpers: Any, name: str) -> None:
    result, figures = run(name, 6, helpers)
    kind = result.scenario.drifts[0].kind
    assert figures[f"detection_days.{kind}"] != "none", figures
    assert int(figures[f"detection_days.{kind}"]) <= 2
    assert figures["regressions_promoted"] == "0" and figures["failed_requests"] == "0"
    assert int(figures["predictions_logged"]) > 0
    if name == "covariate-drift":
        assert figures["corrupted_stopped"] == "1/1"


@pytest.mark.slow
def test_steady_load_keeps_every_request_through_each_swap(backend: Any, helpers: Any) -> None:
    result, figures = run("steady-load", 5, helpers)
    assert figures["failed_requests"] == "0" and figures["regressions_promoted"] == "0"
    # Two shifts: at least one swap (the gate decides on the second), each under load.
    assert result.figures["swaps"] >= 1, result.rows
    assert float(figures["swap_requests_per_second_min"]) >= 20, figures
    # Every answered request was logged (the smoke tests too), none dropped.
    assert int(figures["predictions_logged"]) >= 5 * sum(r.requests - r.failed_requests for r in result.rows)
