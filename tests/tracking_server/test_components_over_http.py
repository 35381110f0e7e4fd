"""The rest of our components with only the tracking server's URL in the environment:
``simulate`` (``ct_pipeline`` -> ``deploy_model`` of ``models:/<name>@champion``, then
``drift_monitor`` day after day), ``batch_predict`` of the champion in a tracked flow, and
tracked tasks on a Dask cluster of worker processes. No database URI, artifact root or
S3 key reaches them: everything they record goes through ``prefect-mlops server``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from support import free_port

from tracking_plugin import fluent
from tracking_plugin.prefect import track

WORKER_ENV_DROPPED = ("PREFECT_MLOPS_", "AWS_", "MLFLOW_TRACKING_")


@track
@task(cache_policy=NO_CACHE)
def fit_on_worker(i: int) -> float:
    fluent.log_metric("score", float(i), step=i)
    fluent.log_metric("pid", float(os.getpid()))
    return float(i)


@track(experiment="dask-over-http")
@flow
def dask_sweep(n: int) -> float:
    total = sum(f.result() for f in fit_on_worker.map(list(range(n))))
    fluent.log_metric("total", total)
    return total


@pytest.mark.slow
def test_simulate_batch_predict_and_dask_with_only_the_server_url(
    start_server: Callable[..., Any], prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_dask import DaskTaskRunner
    from support import reset_tracking

    from prefect_mlops.flows.data import ChurnGenerator
    from prefect_mlops.flows.simulate import simulate
    from registry_tasks import RegistryClient
    from serving_tasks.deploy import state_dir
    from serving_tasks.tasks import batch_predict
    from tracking_plugin.client import TrackingClient
    from tracking_plugin.entities import RunStatus

    server_root = tmp_path / "server"
    server = start_server(f"sqlite:///{server_root / 'mlops.db'}", str(server_root / "artifacts"))
    workdir = tmp_path / "worker"
    workdir.mkdir()
    for name in list(os.environ):
        if name.startswith(WORKER_ENV_DROPPED):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", server.url)
    monkeypatch.setenv("PREFECT_MLOPS_SERVING_STATE_DIR", str(tmp_path / "serving"))
    monkeypatch.chdir(workdir)
    reset_tracking()
    try:
        # simulate: day 0 trains and serves a champion (deploy_model on models:/...@champion,
        # a scoring server that itself knows only the URL); day 1 drifts, so drift_monitor
        # flags it and the pipeline retrains; requests to the served champion never fail.
        port = free_port()
        rows = simulate(days=3, drift_start=1, corrupt_day=None, drift_level=2.0, n_rows=1000, n_estimators=15,
                        port=port, model_name="churn-http-sim", echo=lambda _line: None, workdir=tmp_path / "simulate")
        assert [r.day for r in rows] == [0, 1, 2]
        assert (rows[0].retrained, rows[0].gate_passed, rows[0].champion_version) == (True, True, 1)
        assert rows[1].valid and rows[1].drifted and rows[1].drift_score > 0.2 and rows[1].retrained, rows[1]
        for row in rows[1:]:
            assert row.requests > 0 and row.failed_requests == 0, row
        assert not list(state_dir().glob("*.json")), "the scoring server was not stopped"
        registry = RegistryClient()
        champion = registry.get_by_alias("churn-http-sim", "champion")
        assert champion is not None and champion.version == rows[-1].champion_version
        tracking = TrackingClient()

        # batch_predict of the champion, by alias, in a tracked flow: the model files come
        # through the artifact proxy and the throughput lands on the flow's run.
        batch = ChurnGenerator(seed=7, day=0, n_rows=2000).load()

        @track(experiment="batch-over-http")
        @flow
        def score() -> int:
            return batch_predict("models:/churn-http-sim@champion", batch, chunk_size=500).rows

        assert score() == 2000
        [scored] = tracking.search_runs([tracking.get_experiment_by_name("batch-over-http").experiment_id])
        assert scored.info.status is RunStatus.FINISHED
        assert scored.data.metrics["batch_predict_rows"] == 2000.0

        # Tracked tasks on Dask worker processes: the workers inherit only the URL.
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "processes": True, "threads_per_worker": 1})
        assert dask_sweep.with_options(task_runner=runner)(6) == 15.0
        runs = tracking.search_runs([tracking.get_experiment_by_name("dask-over-http").experiment_id])
        [parent] = [r for r in runs if r.info.prefect_flow_run_id]
        children = [r for r in runs if r.info.parent_run_id == parent.info.run_id]
        assert len(children) == 6 and parent.data.metrics["total"] == 15.0
        assert sorted(c.data.metrics["score"] for c in children) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        assert all(c.info.status is RunStatus.FINISHED for c in children)
        assert str(float(os.getpid())) not in {str(c.data.metrics["pid"]) for c in children}
    finally:
        reset_tracking(end_runs=True)
    # Nothing landed next to the worker: no local database, no artifact folder.
    assert sorted(p.name for p in workdir.iterdir()) == []
    assert (server_root / "artifacts").is_dir()
