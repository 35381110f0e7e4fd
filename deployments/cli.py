"""The ``prefect-mlops`` command line.

Commands import their packages lazily so ``prefect-mlops --help`` stays fast.

    prefect-mlops demo                    # what `make run` runs: the pipeline end to end
    prefect-mlops serve -m models:/churn@champion -p 5000
    prefect-mlops serve stop -p 5000      # stop a server deploy_model started
    prefect-mlops reconcile               # close runs whose Prefect flow run ended
    prefect-mlops simulate --days 10      # replay days of batches through the flows
    prefect-mlops db upgrade              # apply schema migrations explicitly
    prefect-mlops server --backend-store-uri postgresql+psycopg://... --default-artifact-root s3://...
    prefect-mlops ui                      # the tracking server on ./mlops.db
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from serving_tasks.cli import serve_app

app = typer.Typer(
    name="prefect-mlops",
    help="Experiment tracking, model registry and serving as a Prefect 3 plugin suite.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: typer's rich panels print "<bool>" after flags as if they took a value.
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Tracking database maintenance.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")

app.add_typer(serve_app, name="serve")


def _serve_tracking(
    backend_store_uri: str,
    default_artifact_root: str,
    artifacts_destination: Optional[str],
    serve_artifacts: bool,
    host: str,
    port: int,
    workers: int,
) -> None:
    from serving_tasks.tracking_server import ServerSettings, run_server
    from tracking_plugin.errors import MlopsError

    settings = ServerSettings(
        backend_store_uri=backend_store_uri,
        default_artifact_root=default_artifact_root,
        artifacts_destination=artifacts_destination,
        serve_artifacts=serve_artifacts,
    )
    typer.echo(f"prefect-mlops tracking server on http://{host}:{port} ({workers} worker(s))", err=True)
    try:
        run_server(settings, host=host, port=port, workers=workers)
    except MlopsError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from None


@app.command("server")
def server_command(
    backend_store_uri: Annotated[
        str, typer.Option("--backend-store-uri", help="Database URL: sqlite:///path.db or postgresql+psycopg://...")
    ] = "sqlite:///mlops.db",
    default_artifact_root: Annotated[
        str, typer.Option("--default-artifact-root", help="Artifact root of new experiments: a path or s3://bucket/prefix.")
    ] = "./mlops-artifacts",
    artifacts_destination: Annotated[
        Optional[str],
        typer.Option("--artifacts-destination", help="Where proxied artifacts are stored (default: the artifact root)."),
    ] = None,
    serve_artifacts: Annotated[
        bool,
        typer.Option("--serve-artifacts/--no-serve-artifacts", help="Proxy artifacts so clients need no S3 keys."),
    ] = True,
    host: Annotated[str, typer.Option("--host", "-h", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="Port to listen on.")] = 5000,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the tracking server: MLflow's REST API, so `mlflow.set_tracking_uri("http://host:port")` works."""
    _serve_tracking(backend_store_uri, default_artifact_root, artifacts_destination, serve_artifacts, host, port, workers)


@app.command("ui")
def ui_command(
    host: Annotated[str, typer.Option("--host", "-h", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="Port to listen on.")] = 5000,
) -> None:
    """Run the tracking server on the local default backend (sqlite:///mlops.db, ./mlops-artifacts)."""
    _serve_tracking("sqlite:///mlops.db", "./mlops-artifacts", None, True, host, port, 1)


@db_app.command("upgrade")
def db_upgrade(
    tracking_uri: Annotated[
        Optional[str], typer.Option("--tracking-uri", help="Database URL (default: settings).")
    ] = None,
) -> None:
    """Create or migrate the tracking and registry tables (safe to run repeatedly)."""
    from tracking_plugin.backend import resolve_settings
    from tracking_plugin.errors import MlopsError
    from tracking_plugin.store.db import Database
    from tracking_plugin.urls import redact_uri

    settings = resolve_settings(tracking_uri or None)
    try:
        db = Database(settings.tracking_uri, password=settings.database_password)
        try:
            db.upgrade()
            revision = db.current_revision()
        finally:
            db.dispose()
    except MlopsError as exc:
        typer.echo(f"Error: {redact_uri(exc.message)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{redact_uri(db.uri)}: schema at revision {revision}")


@app.command("reconcile")
def reconcile_command(
    older_than: Annotated[
        float, typer.Option(help="Only runs started more than this many seconds ago.")
    ] = 0.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would change.")] = False,
) -> None:
    """Close RUNNING tracking runs whose Prefect flow run has ended, with its final state.

    Completed -> FINISHED, Failed -> FAILED, Crashed/Cancelled (or a flow run that no
    longer exists) -> KILLED. Runs whose flow run is still going are left alone.
    """
    from prefect_mlops.flows.demo import ephemeral_api_defaults, require_reachable_api
    from tracking_plugin.errors import MlopsError
    from tracking_plugin.reconcile import reconcile_runs

    with ephemeral_api_defaults():
        try:
            require_reachable_api()
            changes = reconcile_runs(older_than_seconds=older_than, dry_run=dry_run)
        except MlopsError as exc:
            typer.echo(f"Error: {exc.message}", err=True)
            raise typer.Exit(1) from None
    for change in changes:
        typer.echo(f"{change.run_id}  {change.prefect_state:<10} -> {change.new_status.value}")
    typer.echo(f"{len(changes)} run(s) {'would be ' if dry_run else ''}reconciled")


@app.command("simulate")
def simulate_command(
    days: Annotated[int, typer.Option("--days", min=1, help="Number of daily batches to replay.")] = 10,
    drift_start: Annotated[int, typer.Option(min=0, help="First day whose batch drifts.")] = 6,
    corrupt_day: Annotated[int, typer.Option(min=-1, help="Day whose batch is corrupted (-1: none).")] = 3,
    drift_level: Annotated[float, typer.Option(min=0.0, help="Generator drift of the drifted batches.")] = 2.0,
    seed: Annotated[int, typer.Option(min=0, help="Generator seed.")] = 0,
    rows: Annotated[int, typer.Option(min=200, help="Rows per daily batch.")] = 1500,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to serve the champion on (0: do not serve).")] = 5056,
    model_name: Annotated[
        Optional[str], typer.Option(help="Registered model to use (default: a new churn-sim-<time>).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the flows' and tasks' log lines too.")] = False,
) -> None:
    """Replay N days of generated batches through validation, drift monitoring and retraining.

    Prints one line per day as it goes (and under it one line per flow that failed, such
    as a quarantined batch), then the table: batch valid?, drift score, retrained?, gate
    passed?, champion version, served requests and how many failed.
    """
    import os

    if not verbose:
        # The table, and one line under a day for each flow that failed, say what happened;
        # the flows' own log lines (an expected quarantine alone is ~90 ERROR lines and two
        # tracebacks) would bury them. Set before Prefect is imported: it configures its
        # loggers from the environment.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    from prefect_mlops.flows.demo import choose_serving_port, ephemeral_api_defaults, quiet_library_logs, require_reachable_api
    from tracking_plugin.errors import MlopsError

    if not verbose:
        quiet_library_logs()
    with ephemeral_api_defaults():
        from prefect_mlops.flows.simulate import simulate

        try:
            require_reachable_api()
            simulate(
                days=days, drift_start=drift_start, corrupt_day=None if corrupt_day < 0 else corrupt_day,
                drift_level=drift_level, seed=seed, n_rows=rows,
                port=choose_serving_port(port) if port else None, model_name=model_name, echo=typer.echo,
            )
        except MlopsError as exc:
            typer.echo(f"Error: {exc.message}", err=True)
            raise typer.Exit(1) from None


@app.command("demo")
def demo_command(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port for the served model (another free one if busy).")] = 5055,
) -> None:
    """Run the continuous-training pipeline once on generated data and query the served model.

    What `make run` runs: SQLite (./mlops.db), ./mlops-artifacts and Prefect's ephemeral
    API unless configured otherwise. Exits 0 after printing a summary.
    """
    from prefect_mlops.flows.demo import run_demo

    raise typer.Exit(run_demo(port=port))


def main() -> None:  # pragma: no cover - console script
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
