"""``make run``: the whole pipeline once on the embedded defaults, then a prediction.

SQLite (``./mlops.db``), a local artifact folder (``./mlops-artifacts``) and Prefect's
ephemeral API: no configuration needed. Each run trains on the next day's generated
batch, so running it again shows the gate at work. The scoring server it starts is
stopped before it returns, and Prefect stops its ephemeral API when the process exits,
so nothing is left running.

    from prefect_mlops.flows.demo import run_demo
    exit_code = run_demo()
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "EPHEMERAL_STARTUP_TIMEOUT",
    "choose_serving_port",
    "ephemeral_api_defaults",
    "quiet_library_logs",
    "require_reachable_api",
    "run_demo",
]

#: Seconds Prefect may take to start its ephemeral API (its own default, 20 s, is too short
#: for a first start on a fresh PREFECT_HOME on a busy 2-core machine, which takes 10-40 s).
EPHEMERAL_STARTUP_TIMEOUT = 180
_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
# Prefect's server telemetry competes with the first flow run for the fresh SQLite
# database and prints "database is locked" tracebacks; the demo leaves it off unless set.
_ANALYTICS_ENV = "PREFECT_SERVER_ANALYTICS_ENABLED"
_EXPERIMENT = "churn-ct-pipeline"


@contextlib.contextmanager
def ephemeral_api_defaults() -> Iterator[None]:
    """Settings for Prefect's ephemeral API that the user did not choose: a generous
    startup timeout (:data:`EPHEMERAL_STARTUP_TIMEOUT`) and no server telemetry."""
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    updates: dict[Any, Any] = {}
    if not os.environ.get(_TIMEOUT_ENV) and PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() < EPHEMERAL_STARTUP_TIMEOUT:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = EPHEMERAL_STARTUP_TIMEOUT
    if not os.environ.get(_ANALYTICS_ENV):
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    # temporary_settings for this process; the environment for the server's own process.
    added = {setting.name: str(value).lower() for setting, value in updates.items()}
    os.environ.update({k: v for k, v in added.items() if k not in os.environ})
    try:
        with temporary_settings(updates):
            yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def require_reachable_api(timeout: float = 5.0) -> None:
    """Raise BackendUnavailable, in one line saying how to go back, when a configured
    Prefect API (``PREFECT_API_URL``) does not answer.

    After ``prefect config set PREFECT_API_URL=...`` the URL stays in the Prefect profile;
    once that server is stopped every flow would fail deep inside Prefect's client with a
    long traceback. No URL (the ephemeral API) needs no check.
    """
    import httpx
    from prefect.context import get_settings_context
    from prefect.settings import PREFECT_API_URL

    from tracking_plugin.errors import BackendUnavailable

    url = PREFECT_API_URL.value()
    if not url:
        return
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)  # any answer means it is up
    except httpx.HTTPError as exc:
        if os.environ.get("PREFECT_API_URL"):
            where, undo = "the environment variable PREFECT_API_URL", "`unset PREFECT_API_URL`"
        else:
            profile = get_settings_context().profile.name
            where = f"Prefect profile {profile!r}"
            undo = "`.venv/bin/prefect config unset PREFECT_API_URL`"
        raise BackendUnavailable(
            f"The Prefect API {url} ({where}) is not reachable ({type(exc).__name__}): start that "
            f"server (`.venv/bin/prefect server start`), or go back to the ephemeral API with {undo}."
        ) from None


def quiet_library_logs() -> None:
    """Keep great-expectations' per-validation INFO line ("Created temporary directory ...
    for ephemeral docs site") out of command-line output."""
    import logging

    # That module sets its own logger to INFO when imported: import it first.
    import great_expectations.data_context.types.base  # noqa: F401

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_serving_port(port: int | None) -> int:
    """``port`` if it is free now, else a free one (said on stdout).

    The demo and the simulation stop their server at the end and must not stop one that
    something else (a served deployment, say) runs on the port they were given.
    """
    if port is not None and _port_is_free(port):
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = int(sock.getsockname()[1])
    if port is not None:
        print(f"Port {port} is busy; serving on {free} instead.")
    return free


def run_demo(*, port: int | None = 5055, model_name: str = "churn", n_rows: int = 2000) -> int:
    """Run ct_pipeline, query the served model, print a summary; returns an exit code.

    ``port``: where to serve the champion while the demo runs (another free port is used
    if it is busy). The returned code is 0 when the pipeline ran and the served model
    answered, 1 otherwise (the reason is printed).
    """
    from tracking_plugin.errors import MlopsError

    started = time.perf_counter()
    with ephemeral_api_defaults():
        try:
            require_reachable_api()
        except MlopsError as exc:
            print(f"The demo did not start: {exc.message}")
            return 1
        quiet_library_logs()
        from prefect_mlops.flows.ct_pipeline import ct_pipeline

        try:
            return _demo(ct_pipeline, started, port=port, model_name=model_name, n_rows=n_rows)
        except MlopsError as exc:  # a backend that cannot be opened, say: the message says why
            print(f"\nThe demo stopped: {exc.message}")
            return 1


def _demo(ct_pipeline: Any, started: float, *, port: int | None, model_name: str, n_rows: int) -> int:
    import httpx

    from registry_tasks import RegistryClient
    from serving_tasks.deploy import stop_server
    from tracking_plugin.client import TrackingClient
    from tracking_plugin.settings import get_settings
    from tracking_plugin.urls import redact_uri

    from prefect_mlops.flows.data import FEATURE_COLUMNS, ChurnGenerator

    settings = get_settings()
    registry = RegistryClient()
    tracking = TrackingClient()
    day = len(tracking.search_model_versions(f"name = '{model_name}'").items)
    source = f"generator://churn?seed=0&day={day}&n_rows={n_rows}"
    port = choose_serving_port(port)
    print(f"Running ct_pipeline on {source} (day {day}) ...", flush=True)
    try:
        state = ct_pipeline(source=source, model_name=model_name, serve_port=port, return_state=True)
        if not state.is_completed():
            error = state.result(raise_on_failure=False)
            print(f"\nThe pipeline did not complete ({state.name}): {error}")
            return 1
        metrics = state.result()
        # Three customers the model has never seen (a later day, another seed).
        customers = ChurnGenerator(seed=42, day=day + 1, n_rows=3).load()[list(FEATURE_COLUMNS)]
        payload = {"dataframe_split": {"columns": list(customers.columns),
                                       "data": customers.astype(object).values.tolist()}}
        try:
            response = httpx.post(f"http://127.0.0.1:{port}/invocations", json=payload, timeout=30)
            response.raise_for_status()
            served = httpx.get(f"http://127.0.0.1:{port}/version", timeout=10).json()
        except httpx.HTTPError as exc:
            print(f"\nThe served model did not answer: {exc}")
            return 1
        predictions = response.json()["predictions"]
    finally:
        stop_server(port)

    version = int(metrics["model_version"])
    decision = registry.decision_for(model_name, version)
    champion = registry.get_by_alias(model_name, "champion")
    experiment = tracking.get_experiment_by_name(_EXPERIMENT)
    runs = list(tracking.search_runs([experiment.experiment_id], max_results=1000)) if experiment else []
    run_id = registry.get_version(model_name, version).run_id
    run = tracking.get_run(run_id) if run_id else None
    root = settings.artifact_root if "://" in settings.artifact_root else str(Path(settings.artifact_root).resolve())
    db = redact_uri(settings.tracking_uri)
    verdict = "promoted to @champion" if metrics["promoted"] else "gated out, the champion stays"
    reason = decision.reason if decision else "-"
    say = lambda label, text: print(f"  {label:<18}{text}")  # noqa: E731

    print()
    print("=== prefect-mlops demo: done ===")
    say("Data", f"{source}: validated, {n_rows} rows")
    say("Held-out metrics", f"roc_auc={metrics['roc_auc']:.4f}  recall={metrics['recall']:.4f}  "
                            f"f1={metrics['f1']:.4f}  accuracy={metrics['accuracy']:.4f}")
    say("Registered", f"{model_name} version {version}: {verdict}")
    say("Gate decision", reason if len(reason) <= 160 else reason[:157] + "...")
    say("Champion now", f"{model_name} version {champion.version if champion else '-'}  (models:/{model_name}@champion)")
    say("Served", f"version {served.get('version')} at http://127.0.0.1:{port} answered "
                  f"{predictions} for 3 new customers (1 = will churn); server stopped")
    say("Runs", f"{len(runs)} in experiment {_EXPERIMENT!r}; this one {run_id} "
                f"({run.info.status.value if run else '-'})")
    say("Tracking database", db)
    say("Artifacts", root)
    if run is not None:
        say("This run's files", f"{run.info.artifact_uri}  (evaluation/*.png, model/, validation/result.json)")
    print()
    print("  Look at it:")
    print("    .venv/bin/prefect server start    # then http://127.0.0.1:4200: flow runs, task graph, artifacts")
    print("    .venv/bin/python -c \"import tracking_plugin as t; "
          f"print(t.search_runs(experiment_names=['{_EXPERIMENT}'])[['run_id', 'status', 'metrics.roc_auc']])\"")
    print(f"    .venv/bin/prefect-mlops serve -m models:/{model_name}@champion -p {port}")
    print("    make run                          # again: trains on the next day's batch, the gate decides")
    print("    .venv/bin/prefect-mlops simulate --days 10   # drift, a corrupted day, retraining")
    print(f"  Wall time         {time.perf_counter() - started:.1f} s")
    return 0
