"""A hyper-parameter sweep as a mapped tracked task: one child run per configuration, on
Prefect's thread pool and on a Dask cluster of worker processes (``prefect-dask``)."""

from __future__ import annotations

import itertools
import os

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from tracking_plugin import fluent
from tracking_plugin.entities import RunStatus
from tracking_plugin.prefect import track

GRID = [
    {"lr": lr, "depth": depth, "model": model}
    for lr, depth, model in itertools.product([0.01, 0.1, 1.0], [2, 4], ["rf", "gb"])
]  # 12 configurations


@track
@task(cache_policy=NO_CACHE)
def fit_config(config: dict, seed: int = 0) -> dict[str, float]:
    # Fluent calls in a tracked task go to its own child run.
    fluent.log_metric("pid", float(os.getpid()))
    fluent.set_tag("worker_pid", str(os.getpid()))
    return {"score": config["lr"] * config["depth"] + (1.0 if config["model"] == "gb" else 0.0)}


@task(cache_policy=NO_CACHE)
def summarize(scores: list[float]) -> float:
    # An untracked task: fluent calls go to the flow run's run, also on a Dask worker.
    best = max(scores)
    fluent.log_metric("best_from_task", best)
    return best


@track(experiment="sweep")
@flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
def sweep_threads(grid: list[dict]) -> dict[str, float]:
    results = [f.result() for f in fit_config.map(grid)]
    best = summarize.submit([r["score"] for r in results]).result()
    return {"best_score": best, "n_configs": float(len(results))}


def expected_score(config: dict) -> float:
    return config["lr"] * config["depth"] + (1.0 if config["model"] == "gb" else 0.0)


def assert_sweep_recorded(client, runs_in) -> set[str]:  # type: ignore[no-untyped-def]
    runs = runs_in(client, "sweep")
    [parent] = [r for r in runs if r.info.prefect_flow_run_id]
    children = [r for r in runs if r.info.parent_run_id == parent.info.run_id]
    assert len(children) == 12 and len(runs) == 13
    assert parent.info.status is RunStatus.FINISHED
    assert parent.data.metrics["best_score"] == max(expected_score(c) for c in GRID)
    assert parent.data.metrics["best_from_task"] == parent.data.metrics["best_score"]
    seen = set()
    for child in children:
        params = child.data.params
        config = {"lr": float(params["config.lr"]), "depth": int(params["config.depth"]), "model": params["config.model"]}
        assert config in GRID
        seen.add((config["lr"], config["depth"], config["model"]))
        assert params["seed"] == "0"
        assert child.data.metrics["score"] == pytest.approx(expected_score(config))
        assert child.info.status is RunStatus.FINISHED
        assert child.info.prefect_task_run_id and child.data.tags["prefect.task_run_id"] == child.info.prefect_task_run_id
        assert child.data.tags["prefect.flow_run_id"] == parent.info.prefect_flow_run_id
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert client.get_run_by_prefect_id(task_run_id=child.info.prefect_task_run_id).info.run_id == child.info.run_id
    assert len(seen) == 12  # every configuration exactly once
    return {c.data.tags["worker_pid"] for c in children}


def test_mapped_tracked_task_on_threads_gives_one_child_run_per_config(tracking, runs_in) -> None:
    sweep_threads(GRID)

    pids = assert_sweep_recorded(tracking, runs_in)
    assert pids == {str(os.getpid())}


@pytest.mark.slow
def test_mapped_tracked_task_on_dask_worker_processes(tracking, runs_in) -> None:
    from prefect_dask import DaskTaskRunner

    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "processes": True, "threads_per_worker": 1})
    sweep_dask = sweep_threads.with_options(task_runner=runner)

    sweep_dask(GRID)

    pids = assert_sweep_recorded(tracking, runs_in)
    # The children really ran in the Dask worker processes, not in this one.
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 2
