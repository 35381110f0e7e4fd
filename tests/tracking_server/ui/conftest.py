"""Fixtures of the web UI's tests: a server on a populated SQLite backend.

- ``ui_site``: module-scoped; ``prefect-mlops server`` (subprocess, free port) on a fresh
  SQLite database and artifact folder filled by ``populate``; returns ``(url, Populated)``.
  A test module sets ``DENSE_POINTS`` to size the dense metric (default 100,000).

``populate(store, artifact_root)`` writes, through the store's public API, one experiment of runs with
params, metrics (one dense series with known spikes), tags (a Prefect flow-run URL, git
commit, data digest), a parent with child runs, a run whose name is HTML, artifacts (PNG,
CSV, Markdown with script, JSON, a saved sklearn model), and a registered model with a
gate decision and an audit trail.
"""

from __future__ import annotations

import io
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest

from registry_tasks.gates import EvaluationGate
from tracking_plugin.artifacts import get_artifact_repository
from tracking_plugin.entities import Metric, ModelVersionStatus, Param, RunStatus, RunTag
from tracking_plugin.store.sql import SqlStore

XSS_NAME = "<script>alert(1)</script>"
XSS_MARKDOWN = "# Notes\n\n<script>alert('md')</script>\n\n<img src=x onerror=alert('img')>\n\n**bold** and [a link](javascript:alert('link'))\n"
SPIKE_STEP = 6_543
SPIKE_HIGH = 1_000.0
DIP_STEP = 77_777  # within the range: the tests use 100,000 and 200,000 points
DIP_LOW = -500.0
DENSE_POINTS = 100_000


@dataclass
class Populated:
    experiment_id: str
    runs: dict[str, str] = field(default_factory=dict)  # label -> run id
    model: str = "churn-model"
    dense_points: int = DENSE_POINTS
    xss_name: str = XSS_NAME
    spike: tuple[int, float] = (SPIKE_STEP, SPIKE_HIGH)
    dip: tuple[int, float] = (DIP_STEP, DIP_LOW)
    drift_experiment_id: str = ""
    drift_runs: list[str] = field(default_factory=list)  # against v3, oldest first
    paging_experiment_id: str = ""


@pytest.fixture(scope="module")
def ui_site(request: pytest.FixtureRequest, start_server: Callable[..., Any],
            tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Populated]:
    base = tmp_path_factory.mktemp("ui")
    db_uri = f"sqlite:///{base / 'mlops.db'}"
    server = start_server(db_uri, str(base / "artifacts"))
    with SqlStore.from_uri(db_uri) as store:
        data = populate(store, str(base / "artifacts"), dense_points=getattr(request.module, "DENSE_POINTS", DENSE_POINTS))
    return server.url, data


def _png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1, 2], [0, 1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def populate(store: SqlStore, artifact_root: str, *, dense_points: int = DENSE_POINTS) -> Populated:
    exp = store.create_experiment("churn-training", f"{artifact_root}/churn-training")
    out = Populated(exp, dense_points=dense_points)
    now = int(time.time() * 1000) - 3_600_000
    models = ["rf", "gb", "lr", "rf", "gb", "lr"]
    for i, model in enumerate(models):
        run = store.create_run(exp, user_id="alice", start_time=now + i * 60_000, run_name=f"trial-{i}")
        rid = run.info.run_id
        out.runs[f"trial-{i}"] = rid
        metrics = [Metric("auc", 0.7 + 0.03 * i, now + i * 60_000 + 50_000, 10), Metric("rmse", 1.0 / (i + 1), now + i * 60_000 + 50_000, 10)]
        metrics += [Metric("loss", 1.0 / (s + 1 + i), now + i * 60_000 + s * 1000, s) for s in range(10)]
        store.log_batch(
            rid, metrics=metrics,
            params=[Param("model", model), Param("max_depth", str(3 + i % 3)), Param("seed", "42")],
            tags=[RunTag("prefect.flow_run_url", f"http://127.0.0.1:4200/runs/flow-run/{i:08d}-0000-0000-0000-000000000000"),
                  RunTag("mlflow.source.git.commit", f"{i:07d}abcdef"), RunTag("data.digest", f"sha256:{i:04d}feed"),
                  RunTag("validation.success", "true"), RunTag("mlops.package.scikit-learn", "1.7.2")],
        )
        store.update_run_info(rid, status=RunStatus.FINISHED if i != 4 else RunStatus.FAILED, end_time=now + i * 60_000 + 55_000)
    # A parent with two children (a sweep).
    parent = store.create_run(exp, user_id="bob", start_time=now + 10 * 60_000, run_name="sweep")
    out.runs["sweep"] = parent.info.run_id
    for j in range(2):
        child = store.create_run(exp, user_id="bob", start_time=now + 10 * 60_000 + j, run_name=f"sweep-child-{j}",
                                 parent_run_id=parent.info.run_id,
                                 tags=[RunTag("mlflow.parentRunId", parent.info.run_id)])
        store.log_batch(child.info.run_id, metrics=[Metric("auc", 0.8 + j / 100, now, 0)], params=[Param("model", "rf")])
        out.runs[f"sweep-child-{j}"] = child.info.run_id
    # The XSS run: HTML in its name, a param, a tag and a markdown artifact.
    xss = store.create_run(exp, user_id="mallory", start_time=now + 20 * 60_000, run_name=XSS_NAME)
    out.runs["xss"] = xss.info.run_id
    store.log_batch(xss.info.run_id, params=[Param("note", "<img src=x onerror=alert('param')>")],
                    tags=[RunTag("html", "<b onmouseover=alert('tag')>x</b>")], metrics=[Metric("auc", 0.5, now, 0)])
    get_artifact_repository(xss.info.artifact_uri).log_bytes(XSS_MARKDOWN.encode(), "notes.md")
    get_artifact_repository(xss.info.artifact_uri).log_bytes(b"<html><script>alert('file')</script></html>", "page.html")
    # The showcase run: dense metric with a spike and a dip, artifacts of every kind, a model.
    best = out.runs["trial-5"]
    t0 = store.get_run(best).info.start_time
    steps = np.arange(dense_points)
    values = np.sin(steps / 500.0) * 0.1 + 0.5
    batch: list[Metric] = []
    for s, v in zip(steps.tolist(), values.tolist()):
        if s == SPIKE_STEP:
            v = SPIKE_HIGH
        elif s == DIP_STEP:
            v = DIP_LOW
        batch.append(Metric("train_loss", v, t0 + s * 10, s))
        if len(batch) == 1000:
            store.log_batch(best, metrics=batch)
            batch = []
    if batch:
        store.log_batch(best, metrics=batch)
    repo = get_artifact_repository(store.get_run(best).info.artifact_uri)
    repo.log_bytes(_png(), "plots/roc.png")
    repo.log_bytes(b"customer_id,churned,score\n1,0,0.12\n2,1,0.93\n3,0,0.40\n", "data/predictions.csv")
    repo.log_bytes(b'{"threshold": 0.5, "classes": ["stay", "churn"]}', "config.json")
    repo.log_bytes(b"# Report\n\nAUC improved to **0.85**.\n", "report.md")
    import pandas as pd

    parquet = io.BytesIO()
    pd.DataFrame({"tenure": range(200), "plan": ["basic", "pro"] * 100}).to_parquet(parquet)
    repo.log_bytes(parquet.getvalue(), "data/features.parquet")
    repo.log_bytes(b"x" * 2_500_000, "logs/big.log")
    _log_sklearn_model(repo)
    _register(store, out, best)
    _drift_monitor_runs(store, out, artifact_root)
    _paged_sweep(store, out, artifact_root)
    return out


DRIFT_FEATURES = ("tenure", "monthly_charges", "plan")
DRIFT_BATCHES = 6  # days 1-6 scored against v3; drift starts on day 4 in "monthly_charges"


def _drift_monitor_runs(store: SqlStore, out: Populated, artifact_root: str) -> None:
    """What ``flows.drift_monitor`` records for each batch it scores (metrics
    ``drift/<feature>``, tags ``drift.*``, ``model.name``/``model.version``, its threshold
    params), here for six daily batches against v3 and one against v1."""
    exp = store.create_experiment("churn-drift-monitor", f"{artifact_root}/churn-drift-monitor")
    out.drift_experiment_id = exp
    day0 = int(time.time() * 1000) - 7 * 86_400_000
    for version, days in ((3, range(1, DRIFT_BATCHES + 1)), (1, range(1, 2))):
        for day in days:
            scores = {"tenure": 0.01 * day, "monthly_charges": 0.05 if day < 4 else 0.1 * day, "plan": 0.02}
            drifted = [f for f, v in scores.items() if v > 0.2]
            run = store.create_run(exp, user_id="monitor", start_time=day0 + day * 86_400_000,
                                   run_name=f"drift-v{version}-day-{day}")
            store.log_batch(
                run.info.run_id,
                metrics=[Metric(f"drift/{f}", v, day0 + day * 86_400_000, 0) for f, v in scores.items()]
                + [Metric("drift_score", max(scores.values()), day0 + day * 86_400_000, 0)],
                params=[Param("method", "psi"), Param("psi_threshold", "0.2"), Param("ks_threshold", "0.2")],
                tags=[RunTag("drift.method", "psi"), RunTag("drift.drifted", str(bool(drifted)).lower()),
                      RunTag("drift.features", ",".join(drifted)), RunTag("model.name", out.model),
                      RunTag("model.version", str(version))],
            )
            store.update_run_info(run.info.run_id, status=RunStatus.FINISHED, end_time=day0 + day * 86_400_000 + 1000)
            if version == 3:
                out.drift_runs.append(run.info.run_id)


SWEEP_TOP_LEVEL = 30  # top-level runs of the "sweep-paging" experiment besides the parent


def _paged_sweep(store: SqlStore, out: Populated, artifact_root: str) -> None:
    """An experiment where a parent started first (the last page, newest first) and its
    three children started last (the first page, were the table flat)."""
    exp = store.create_experiment("sweep-paging", f"{artifact_root}/sweep-paging")
    out.paging_experiment_id = exp
    t0 = int(time.time() * 1000) - 86_400_000
    parent = store.create_run(exp, user_id="carol", start_time=t0, run_name="old-sweep")
    out.runs["old-sweep"] = parent.info.run_id
    for i in range(SWEEP_TOP_LEVEL):
        store.create_run(exp, user_id="carol", start_time=t0 + (i + 1) * 1000, run_name=f"single-{i}")
    for j in range(3):
        child = store.create_run(exp, user_id="carol", start_time=t0 + 3_600_000 + j, run_name=f"old-sweep-child-{j}",
                                 parent_run_id=parent.info.run_id)
        store.log_batch(child.info.run_id, metrics=[Metric("auc", 0.6 + j / 10, t0, 0)])
        out.runs[f"old-sweep-child-{j}"] = child.info.run_id


def _log_sklearn_model(repo: object) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import tracking_plugin as tp

    x = pd.DataFrame({"tenure": [1.0, 5.0, 9.0, 2.0], "spend": [10.0, 3.0, 1.0, 8.0]})
    y = [1, 0, 0, 1]
    with tempfile.TemporaryDirectory() as tmp:
        tp.sklearn.save_model(LogisticRegression().fit(x, y), f"{tmp}/model", input_example=x.head(2))
        repo.log_artifacts(f"{tmp}/model", "model")  # type: ignore[attr-defined]


def _register(store: SqlStore, out: Populated, best_run: str) -> None:
    gate = EvaluationGate(primary_metric="auc", thresholds={"auc": (0.8, None), "rmse": (None, 0.5)})
    # v1 fails the gate (auc 0.70 < 0.8); v2 and v3 pass and take @champion in turn.
    for label, passed_run in (("trial-0", out.runs["trial-0"]), ("trial-4", out.runs["trial-4"]), ("trial-5", best_run)):
        run = store.get_run(passed_run)
        mv = store.create_model_version(out.model, f"runs:/{passed_run}/model", run_id=passed_run, user_id="alice")
        store.finish_model_version(out.model, mv.version, status=ModelVersionStatus.READY, storage_location=f"runs:/{passed_run}/model")
        decision = gate.evaluate(run.data.metrics, None, candidate_version=mv.version)
        store.record_gate_decision(out.model, mv.version, passed=decision.passed, reason=decision.reason,
                                   details=decision.to_dict(), prefect_flow_run_id="f1a2b3c4-flow")
        if decision.passed:
            store.promote(out.model, mv.version, alias="champion", actor="alice", reason=f"{label} passed the gate",
                          prefect_flow_run_id="f1a2b3c4-flow")
