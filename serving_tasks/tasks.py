"""Prefect tasks for serving: deploy a model, smoke-test an endpoint, score in batch.

    from prefect import flow
    from serving_tasks.tasks import deploy_model, smoke_test, batch_predict, stop_model_server

    @flow
    def release():
        server = deploy_model("models:/churn@champion", port=5000)
        smoke_test(server.endpoint)
        batch_predict("models:/churn@champion", "s3://data/today.parquet", "s3://data/scores.parquet")

    @flow
    def retire():
        stop_model_server(5000)

The tasks are thin wrappers: :mod:`serving_tasks.deploy` starts and stops servers and
:func:`serving_tasks.batch.score_table` scores tables, both usable without Prefect.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

import httpx
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

import tracking_plugin.prefect  # noqa: F401 - lets the fluent API find a tracked flow run's run
from tracking_plugin.entities import Metric
from tracking_plugin.errors import BackendUnavailable, InvalidArgument

from serving_tasks.batch import BatchPredictionResult, score_table
from serving_tasks.deploy import ServerProcess, start_server, stop_server, wait_for_version

__all__ = [
    "BatchPredictionResult",
    "SmokeTestResult",
    "batch_predict",
    "deploy_model",
    "smoke_test",
    "stop_model_server",
]


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextlib.contextmanager
def _deploy_warnings_in_run_log() -> Iterator[None]:
    """Warnings of :mod:`serving_tasks.deploy` (an API token it could not revoke) also go
    to the task run's log, where a Prefect user looks."""
    run_logger = get_run_logger()

    class _Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            run_logger.warning("%s", record.getMessage())

    source, handler = logging.getLogger("serving_tasks.deploy"), _Forward(logging.WARNING)
    source.addHandler(handler)
    try:
        yield
    finally:
        source.removeHandler(handler)


# No retries: a server that cannot start (a model that does not load, a port in use) fails
# the same way on a second attempt, and the error already carries the server's log.
@task(name="deploy-model", cache_policy=NO_CACHE)
def deploy_model(
    model_uri: str,
    port: int = 5000,
    *,
    host: str = "127.0.0.1",
    expect_version: int | None = None,
    workers: int = 1,
    token_env: str | None = None,
    max_batch_size: int | None = None,
    max_wait_ms: float | None = None,
    max_body_mb: float | None = None,
    max_rows: int | None = None,
    max_decoded_mb: float | None = None,
    poll_interval: float | None = 1.0,
    log_predictions: float | None = None,
    prediction_log_uri: str | None = None,
    timeout: float = 90.0,
) -> ServerProcess:
    """Start (or reuse) a scoring server for ``model_uri`` and wait until ``/health`` is 200.

    Idempotent: the same URI and options on the same port reuse the running process (same
    pid, ``reused=True``); a different URI replaces it. With ``expect_version`` (e.g. the
    version just promoted), also wait until ``/version`` reports it: an alias-following
    server swaps to it by itself, and if it refuses the new version (it fails to load or
    to score its input example) it keeps serving the old one and this task fails.
    Raises Conflict when a foreign process holds the port, BackendUnavailable (with the
    end of the server's log) when the server does not come up. The server reads the
    backend the flow records to (e.g. its ``@track(block=...)``).

    ``host`` is the interface to bind (default 127.0.0.1, this machine only; "0.0.0.0"
    for all, then set ``token_env``). ``max_body_mb``, ``max_rows`` and ``max_decoded_mb``
    are the server's request limits (None: ``prefect-mlops serve``'s defaults).
    ``log_predictions`` (0 < rate <= 1) logs that share of requests as Parquet under
    ``prediction_log_uri`` (default ``<artifact root>/prediction-logs``). The
    server outlives the flow run: :func:`stop_model_server` (or ``prefect-mlops serve stop
    -p PORT`` on the same machine) stops it.
    """
    from tracking_plugin.fluent import current_client

    logger = get_run_logger()
    with _deploy_warnings_in_run_log():
        server = start_server(
            model_uri, port=port, host=host, workers=workers, token_env=token_env, max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms, max_body_mb=max_body_mb, max_rows=max_rows, max_decoded_mb=max_decoded_mb,
            poll_interval=poll_interval, log_predictions=log_predictions, prediction_log_uri=prediction_log_uri,
            timeout=timeout,
            settings=current_client().settings,  # the flow's backend (e.g. its @track block)
        )
    logger.info(
        "%s scoring server for %s at %s (pid %s, log %s)",
        "Reusing" if server.reused else "Started", model_uri, server.endpoint, server.pid, server.log_file,
    )
    if expect_version is not None:
        headers = _bearer(os.environ.get(token_env)) if token_env else None
        info = wait_for_version(server.endpoint, expect_version, timeout=timeout, headers=headers)
        logger.info("%s serves %s version %s", server.endpoint, info.get("name"), info.get("version"))
    return server


@task(name="stop-model-server", cache_policy=NO_CACHE)
def stop_model_server(port: int = 5000, *, host: str = "127.0.0.1", timeout: float = 10.0) -> bool:
    """Stop the scoring server :func:`deploy_model` started on ``host:port`` of this machine.

    Returns True if one was running (it gets SIGTERM, then SIGKILL after ``timeout``
    seconds), False if there was none. Only a server that this user's ``deploy_model``
    recorded is stopped, never a foreign process on the port. Run it on the machine (the
    worker) that deployed the server. The API token ``deploy_model`` created for the
    server (a caller with a password, against ``--auth``) is revoked; a token the caller
    supplied is not.
    """
    from tracking_plugin.fluent import current_client

    logger = get_run_logger()
    with _deploy_warnings_in_run_log():
        stopped = stop_server(port, host=host, timeout=timeout, settings=current_client().settings)
    if stopped:
        logger.info("Stopped the scoring server on %s:%s", host, port)
    else:
        logger.info("No scoring server started by deploy_model runs on %s:%s: nothing to stop", host, port)
    return stopped


@dataclass(frozen=True)
class SmokeTestResult:
    """What :func:`smoke_test` sent and got back."""

    endpoint: str
    model_uri: str | None
    version: int | None
    rows: int
    predictions: list[Any]
    latency_ms: float


def _smoke_payload(endpoint: str, example: Any) -> tuple[dict[str, Any], int]:
    """The request body for the served model's input example, and its number of rows."""
    if isinstance(example, dict) and isinstance(example.get("data"), list):
        return {"dataframe_split": example}, len(example["data"])
    if isinstance(example, list) and example:
        return {"instances": example}, len(example)
    raise InvalidArgument(
        f"The model served at {endpoint} has no usable input example ({example!r:.100}); log it "
        "with log_model(..., input_example=df) so that it can be smoke-tested."
    )


@task(name="smoke-test", cache_policy=NO_CACHE)
def smoke_test(endpoint: str, *, token: str | None = None, timeout: float = 30.0) -> SmokeTestResult:
    """POST the served model's own input example to ``/invocations`` and check the answer.

    Passes when the server answers 200 with one prediction per example row. Raises
    BackendUnavailable naming the endpoint when it cannot be reached, is not a scoring
    server, or answers wrongly; InvalidArgument when the model has no input example or the
    server wants a token that was not given.
    """
    logger = get_run_logger()
    endpoint = endpoint.rstrip("/")
    try:
        with httpx.Client(base_url=endpoint, headers=_bearer(token), timeout=timeout) as http:
            meta = http.get("/metadata")
            if meta.status_code in (401, 403):
                raise InvalidArgument(
                    f"{endpoint} refused the smoke test (HTTP {meta.status_code}): pass token=<the server's "
                    "bearer token> (the value of its --token-env variable)."
                )
            if meta.status_code != 200 or "input_example" not in _json(meta):
                raise BackendUnavailable(
                    f"Smoke test failed: {endpoint}/metadata answered HTTP {meta.status_code} "
                    f"{meta.text[:200]!r}; is {endpoint} a prefect-mlops scoring server (deploy_model's "
                    "server.endpoint)?"
                )
            info = _json(meta)
            payload, rows = _smoke_payload(endpoint, info.get("input_example"))
            started = time.perf_counter()
            response = http.post("/invocations", json=payload)
            latency_ms = (time.perf_counter() - started) * 1000
    except httpx.HTTPError as exc:
        raise BackendUnavailable(
            f"Smoke test failed: cannot reach {endpoint} ({type(exc).__name__}: {exc}). Check the "
            "endpoint (deploy_model returns it as server.endpoint) and that the server is running."
        ) from exc
    if response.status_code != 200:
        raise BackendUnavailable(
            f"Smoke test of {endpoint} failed: POST /invocations with the model's input example "
            f"answered HTTP {response.status_code}: {response.text[:500]}"
        )
    predictions = _json(response).get("predictions")
    if not isinstance(predictions, list) or len(predictions) != rows:
        raise BackendUnavailable(
            f"Smoke test of {endpoint} failed: expected {rows} predictions for the input example, "
            f"got {str(predictions)[:200]}"
        )
    logger.info(
        "Smoke test of %s (%s version %s) passed: %d rows in %.1f ms",
        endpoint, info.get("name") or info.get("model_uri"), info.get("version"), rows, latency_ms,
    )
    return SmokeTestResult(
        endpoint=endpoint, model_uri=info.get("model_uri"), version=info.get("version"),
        rows=rows, predictions=predictions, latency_ms=latency_ms,
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@task(name="batch-predict", cache_policy=NO_CACHE)
def batch_predict(
    model_uri: str,
    input: pd.DataFrame | str,  # noqa: A002 - the issue's name for it
    output: str | None = None,
    *,
    chunk_size: int = 50_000,
    prediction_column: str = "prediction",
    keep_columns: list[str] | None = None,
) -> BatchPredictionResult:
    """Score a DataFrame or a CSV/Parquet file (local or S3) in chunks; see :func:`score_table`.

    Logs progress per chunk. When the flow run is tracked (``@track``) or a run is active,
    records ``batch_predict_rows``, ``batch_predict_seconds`` and
    ``batch_predict_rows_per_second`` on that tracking run.
    """
    from tracking_plugin import fluent

    logger = get_run_logger()
    source = input if isinstance(input, str) else f"a DataFrame of {len(input)} rows"
    logger.info("batch_predict: scoring %s with %s", source, model_uri)
    result = score_table(
        model_uri, input, output, chunk_size=chunk_size, prediction_column=prediction_column,
        keep_columns=keep_columns,
        progress=lambda done, total, rows: logger.info(
            "batch_predict: chunk %d/%d scored (%d rows)", done, total, rows
        ),
    )
    run = fluent.active_run()
    if run is not None:
        now = int(time.time() * 1000)
        values = {
            "batch_predict_rows": result.rows,
            "batch_predict_seconds": result.seconds,
            "batch_predict_rows_per_second": result.rows_per_second,
        }
        # Written before the task returns, even when the fluent API buffers metrics.
        run.client.log_batch(
            run.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()], synchronous=True
        )
    logger.info(
        "batch_predict: %d rows in %.2f s (%.0f rows/s)%s%s",
        result.rows, result.seconds, result.rows_per_second, f" -> {output}" if output else "",
        f"; recorded on tracking run {run.run_id}" if run is not None else "",
    )
    return result
