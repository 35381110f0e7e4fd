"""``prefect-mlops serve``: the scoring server's command line (wired in ``deployments.cli``)."""

from __future__ import annotations

from typing import Annotated

import typer

from tracking_plugin.errors import InvalidArgument

__all__ = ["serve_command"]


def serve_command(
    model_uri: Annotated[
        str,
        typer.Option("-m", "--model-uri", help="Model to serve: models:/name@alias, models:/name/3, runs:/<id>/model, a path."),
    ],
    port: Annotated[int, typer.Option("-p", "--port", help="TCP port to listen on.")] = 5000,
    host: Annotated[str, typer.Option("--host", help="Interface to bind; 0.0.0.0 for all.")] = "127.0.0.1",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Server processes, each with its own model copy.")] = 1,
    token_env: Annotated[
        str | None,
        typer.Option("--token-env", help="Require 'Authorization: Bearer <token>', the token read from this environment variable."),
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", min=1, help="Most rows coalesced into one predict call; 1 turns batching off.")
    ] = 64,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0, help="Longest a queued request waits for others to batch with.")
    ] = 2.0,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.001, help="Larger request bodies get HTTP 413.")] = 10,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0, help="Seconds between registry checks of the alias; 0 never checks.")
    ] = 5.0,
    allow_pickle: Annotated[
        bool,
        typer.Option("--allow-pickle", help="Also load pickle/cloudpickle models (unpickling runs code: trusted models only)."),
    ] = False,
) -> None:
    """Serve a model over HTTP with MLflow's scoring protocol (POST /invocations).

    Example: prefect-mlops serve -m models:/churn@champion -p 5000 --token-env SCORING_TOKEN
    """
    from serving_tasks.server import ServeOptions, run

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
            poll_interval=poll_interval or None,
            allow_pickle=allow_pickle,
        )
        options.token()
    except InvalidArgument as exc:
        raise typer.BadParameter(exc.message) from None
    run(options)
