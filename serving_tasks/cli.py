"""``prefect-mlops serve``: the scoring server's command line (wired in ``deployments.cli``).

    prefect-mlops serve -m models:/churn@champion -p 5000     # serve until interrupted
    prefect-mlops serve stop -p 5000                          # stop a server deploy_model started
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from serving_tasks.deploy import stop_server
from serving_tasks.server import ServeOptions, run
from tracking_plugin.errors import InvalidArgument, MlopsError

__all__ = ["main", "serve_app", "serve_command", "stop_command"]

# Exit code when the model cannot be loaded (uvicorn's own code for a failed startup).
_STARTUP_FAILED = 3


def serve_command(
    ctx: typer.Context,
    model_uri: Annotated[
        Optional[str],
        typer.Option("-m", "--model-uri", help="Model to serve: models:/name@alias, models:/name/3, runs:/<id>/model, a path."),
    ] = None,
    port: Annotated[int, typer.Option("-p", "--port", help="TCP port to listen on.")] = 5000,
    host: Annotated[str, typer.Option("--host", help="Interface to bind; 0.0.0.0 for all.")] = "127.0.0.1",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Server processes, each with its own model copy.")] = 1,
    token_env: Annotated[
        Optional[str],
        typer.Option(
            "--token-env",
            help="Require 'Authorization: Bearer <token>' on every route but /ping and /health, "
            "the token read from this environment variable.",
        ),
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", min=1, help="Most rows coalesced into one predict call; 1 turns batching off.")
    ] = 64,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0, help="Longest a queued request waits for others to batch with.")
    ] = 2.0,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.001, help="Larger request bodies get HTTP 413.")] = 10,
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=1, help="Most rows in one request, any format; more get HTTP 413.")
    ] = 1_000_000,
    max_decoded_mb: Annotated[
        float,
        typer.Option(
            "--max-decoded-mb", min=0.001,
            help="Most memory a CSV or Parquet body may decode to (compressed Parquet included); more gets HTTP 413.",
        ),
    ] = 256,
    request_timeout: Annotated[
        float,
        typer.Option("--request-timeout", min=0.001, help="Seconds a request's headers and body have to arrive; then the connection is closed."),
    ] = 30.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", min=1, help="Open connections past which requests get HTTP 503 at once.")
    ] = 1024,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0, help="Seconds between registry checks of the alias; 0 never checks.")
    ] = 5.0,
    allow_pickle: Annotated[
        bool,
        typer.Option("--allow-pickle", help="Also load pickle/cloudpickle models (unpickling runs code: trusted models only)."),
    ] = False,
    log_predictions: Annotated[
        Optional[float],
        typer.Option(
            "--log-predictions",
            help="Log this share of requests (0 < RATE <= 1; 1 = all): inputs, predictions, request id, "
            "written as Parquet partitioned by model/version/date. Off by default.",
        ),
    ] = None,
    prediction_log_uri: Annotated[
        Optional[str],
        typer.Option(
            "--prediction-log-uri",
            help="Folder or s3:// URI of the prediction log (default <artifact root>/prediction-logs).",
        ),
    ] = None,
    prediction_log_queue_rows: Annotated[
        int,
        typer.Option(
            "--prediction-log-queue-rows", min=1,
            help="Most logged rows waiting to be written; past it rows are dropped and counted (/metadata).",
        ),
    ] = 100_000,
) -> None:
    """Serve a model over HTTP with MLflow's scoring protocol (POST /invocations).

    Example: prefect-mlops serve -m models:/churn@champion -p 5000 --token-env SCORING_TOKEN
    """
    if ctx.invoked_subcommand is not None:  # `serve stop ...`: the subcommand does the work
        return
    if not model_uri:
        raise typer.BadParameter("Missing option '-m' / '--model-uri': the model to serve.")
    try:
        options = ServeOptions(
            model_uri=model_uri,
            port=port,
            host=host,
            workers=workers,
            token_env=token_env,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_body_bytes=int(max_body_mb * 2**20),
            max_rows=max_rows,
            max_decoded_bytes=int(max_decoded_mb * 2**20),
            request_timeout=request_timeout,
            max_connections=max_connections,
            poll_interval=poll_interval or None,
            allow_pickle=allow_pickle,
            log_predictions=log_predictions,
            prediction_log_uri=prediction_log_uri,
            prediction_log_queue_rows=prediction_log_queue_rows,
        )
        options.token()
    except InvalidArgument as exc:
        raise typer.BadParameter(exc.message) from None
    try:
        run(options)
    except MlopsError as exc:  # the model cannot be found or loaded: one line, no traceback
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(_STARTUP_FAILED) from None


def stop_command(
    port: Annotated[int, typer.Option("-p", "--port", help="Port of the server to stop.")] = 5000,
    host: Annotated[str, typer.Option("--host", help="Interface it was started on.")] = "127.0.0.1",
) -> None:
    """Stop a scoring server that deploy_model (or start_server) started on this machine.

    Only servers recorded in this user's serving state folder are stopped; exits 1 when
    there is none on that host and port. The API token deploy created for the server is
    revoked (a warning says how, if the tracking server cannot be reached).
    """
    try:
        stopped = stop_server(port, host=host)
    except MlopsError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    if not stopped:
        typer.echo(f"No scoring server started by deploy_model is running on {host}:{port}.", err=True)
        raise typer.Exit(1)
    typer.echo(f"Stopped the scoring server on {host}:{port}.")


serve_app = typer.Typer(
    help="Serve a model over HTTP with MLflow's scoring protocol; `serve stop` stops a deployed one.",
    add_completion=False,
    pretty_exceptions_enable=False,
)
serve_app.callback(invoke_without_command=True)(serve_command)
serve_app.command("stop")(stop_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m serving_tasks.cli`` (the process ``deploy_model`` starts)."""
    serve_app(args=argv, prog_name="python -m serving_tasks.cli")


if __name__ == "__main__":
    main()
