"""The README's Prefect section: its examples run as written."""

from __future__ import annotations

from readme_blocks import python_blocks

from tracking_plugin.client import TrackingClient
from tracking_plugin.entities import RunStatus

SECTION = "Tracking Prefect flows"  # the README section whose examples must run


def test_the_tracked_flow_example_is_under_15_lines(readme_section) -> None:  # type: ignore[no-untyped-def]
    first = python_blocks(readme_section(SECTION))[0].strip().splitlines()
    assert len(first) < 15
    assert first.index('@track(experiment="churn")') == first.index("@flow") - 1


def test_prefect_docs_examples_run(tracking, tmp_path, runs_in, readme_section) -> None:  # type: ignore[no-untyped-def]
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for index, block in enumerate(python_blocks(readme_section(SECTION))):
        try:
            exec(compile(block, f"README.md {SECTION}[python block {index}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"python block {index} of README.md {SECTION} failed:\n{block}") from exc

    [run] = runs_in(tracking, "churn")
    assert run.info.status is RunStatus.FINISHED
    assert run.data.params == {"n_estimators": "50", "max_depth": "8"}
    assert 0.9 <= run.data.metrics["train_accuracy"] <= 1.0
    assert len(runs_in(tracking, "sweep")) == 5
    # The block example recorded into the block's backend, not the environment's.
    [worker_run] = runs_in(TrackingClient(f"sqlite:///{tmp_path / 'team.db'}"), "on-a-worker")
    assert worker_run.data.metrics == {"rows": 1000.0}
