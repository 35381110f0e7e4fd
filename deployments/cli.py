"""The ``prefect-mlops`` command line.

Commands import their packages lazily so ``prefect-mlops --help`` stays fast.

    prefect-mlops demo                    # what `make run` runs: the pipeline end to end
    prefect-mlops serve -m models:/churn@champion -p 5000
    prefect-mlops serve stop -p 5000      # stop a server deploy_model started
    prefect-mlops reconcile               # close runs whose Prefect flow run ended
    prefect-mlops gc --older-than 30d     # permanently remove deleted runs (never registered ones)
    prefect-mlops simulate --days 10      # replay days of batches through the flows
    prefect-mlops simulate --scenario concept-drift --days 30   # labels turn; late labels; retraining
    prefect-mlops db upgrade              # apply schema migrations explicitly
    prefect-mlops server --backend-store-uri postgresql+psycopg://... --default-artifact-root s3://...
    prefect-mlops ui                      # the tracking server on ./mlops.db
    prefect-mlops server --auth --host 0.0.0.0   # credentials and permissions on
    prefect-mlops users create alice      # users and API tokens of an --auth server
    prefect-mlops tokens create alice --name ci
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
users_app = typer.Typer(help="Users of the tracking server (with --auth).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(users_app, name="users")
tokens_app = typer.Typer(help="API tokens of the tracking server (with --auth).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(tokens_app, name="tokens")

app.add_typer(serve_app, name="serve")


def _serve_tracking(
    backend_store_uri: str,
    default_artifact_root: str,
    artifacts_destination: Optional[str],
    serve_artifacts: bool,
    host: str,
    port: int,
    workers: int,
    auth: bool = False,
) -> None:
    import os

    from serving_tasks.tracking_server import ServerSettings, run_server
    from tracking_plugin.errors import MlopsError

    if auth:
        os.environ["PREFECT_MLOPS_AUTH"] = "true"  # read by every worker process's create_app
    from serving_tasks.tracking_server.auth import AuthSettings

    if not AuthSettings().enabled and host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(
            f"Warning: serving on {host} without authentication: anyone who can reach it can read and "
            "change every experiment and model. Pass --auth (or set PREFECT_MLOPS_AUTH=true).",
            err=True,
        )

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
    auth: Annotated[
        bool,
        typer.Option(
            "--auth",
            help="Require credentials (HTTP Basic or API token) and check per-experiment/model permissions. "
            "The first start needs PREFECT_MLOPS_AUTH_ADMIN_USERNAME and PREFECT_MLOPS_AUTH_ADMIN_PASSWORD.",
        ),
    ] = False,
) -> None:
    """Run the tracking server: MLflow's REST API, so `mlflow.set_tracking_uri("http://host:port")` works."""
    _serve_tracking(
        backend_store_uri, default_artifact_root, artifacts_destination, serve_artifacts, host, port, workers, auth
    )


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


@app.command("gc")
def gc_command(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Remove deleted runs and experiments older than this (30d, 12h, 90m).")
    ] = "30d",
    experiment_ids: Annotated[
        Optional[str], typer.Option("--experiment-ids", help="Only these experiments (comma-separated ids).")
    ] = None,
    run_ids: Annotated[Optional[str], typer.Option("--run-ids", help="Only these runs (comma-separated ids).")] = None,
    keep_last: Annotated[
        Optional[int],
        typer.Option("--keep-last", min=0, help="Keep the N most recent finished runs per experiment; remove older ones."),
    ] = None,
    quarantine_older_than: Annotated[
        Optional[str],
        typer.Option("--quarantine-older-than", help="Remove quarantined batches older than this (default: keep all)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be removed; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (for scripts).")] = False,
    backend_store_uri: Annotated[
        Optional[str],
        typer.Option("--backend-store-uri", "--tracking-uri", help="Tracking database URL (default: settings)."),
    ] = None,
    artifact_root: Annotated[
        Optional[str], typer.Option("--artifact-root", help="Root holding quarantine/ (default: settings).")
    ] = None,
) -> None:
    """Permanently remove deleted runs and experiments (rows and artifacts), never what a
    registered model version needs (its source run, alias and stage holders): those runs
    are listed as kept, with the reason."""
    import json

    from tracking_plugin.errors import MlopsError
    from tracking_plugin.gc import collect_garbage, parse_duration
    from tracking_plugin.urls import redact_uri

    def ids(value: Optional[str]) -> Optional[list[str]]:
        return None if value is None else [v.strip() for v in value.split(",") if v.strip()]

    try:
        report = collect_garbage(
            older_than_seconds=parse_duration(older_than),
            experiment_ids=ids(experiment_ids),
            run_ids=ids(run_ids),
            keep_last=keep_last,
            quarantine_older_than_seconds=None if quarantine_older_than is None else parse_duration(quarantine_older_than),
            dry_run=dry_run,
            tracking_uri=backend_store_uri,
            artifact_root=artifact_root,
        )
    except MlopsError as exc:
        typer.echo(f"Error: {redact_uri(exc.message)}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print_gc_report(report)


def _print_gc_report(report) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    verb = "Would remove" if report.dry_run else "Removed"
    table = Table(title=f"prefect-mlops gc{' (dry run)' if report.dry_run else ''}")
    for column in ("what", "count", "bytes"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for kind, label in (("run", "runs"), ("experiment", "experiments"), ("quarantine", "quarantined batches")):
        table.add_row(label, str(report.count(kind)), f"{sum(i.bytes for i in report.removed if i.kind == kind):,}")
    table.add_row("total", str(len(report.removed)), f"{report.bytes_removed:,}")
    console = Console(width=120)
    console.print(table)
    for item in report.removed:
        console.print(f"{verb.lower()} {item.kind} {item.id} ({item.why}, {item.bytes:,} bytes)", highlight=False)
    for kept in report.kept:
        console.print(f"kept run {kept.run_id}: {kept.reason}", highlight=False)
    console.print(
        f"{verb} {report.runs_removed} run(s), {report.experiments_removed} experiment(s), "
        f"{report.quarantine_removed} quarantined batch(es), {report.bytes_removed:,} bytes; "
        f"kept {len(report.kept)} run(s) a model version needs",
        highlight=False,
    )


@app.command("simulate")
def simulate_command(
    scenario: Annotated[
        Optional[str],
        typer.Option("--scenario", help="A shipped scenario (covariate-drift, concept-drift, gradual-drift, "
                     "poisoned-batch, corrupted-days, steady-load) or a scenario YAML file. Default: covariate-drift."),
    ] = None,
    days: Annotated[
        Optional[int], typer.Option("--days", min=1, help="Days to replay; a scenario's story is told over that many days.")
    ] = None,
    drift_start: Annotated[Optional[int], typer.Option(min=0, help="First day whose batch drifts (default 6; not with --scenario).")] = None,
    corrupt_day: Annotated[Optional[int], typer.Option(min=-1, help="Day whose batch is corrupted (default 3, -1: none; not with --scenario).")] = None,
    drift_level: Annotated[Optional[float], typer.Option(min=0.0, help="Generator drift of the drifted batches (default 2; not with --scenario).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Generator seed (without --scenario).")] = 0,
    rows: Annotated[Optional[int], typer.Option(min=200, help="Rows per daily batch (default: the scenario's, 1500).")] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to serve the champion on (0: do not serve).")] = 5056,
    model_name: Annotated[
        Optional[str], typer.Option(help="Registered model to use (default: a new churn-sim-<time>).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the flows' and tasks' log lines too.")] = False,
) -> None:
    """Replay the days of a scenario through validation, monitoring, retraining and the gate.

    Prints one line per day as it goes (and under it one line per flow that failed, such
    as a quarantined batch), then the table: batch valid?, drift score, retrained?, gate
    passed?, champion version, live ROC AUC on late labels, served requests and how many
    failed; then a summary ending with one `name: value` line per figure
    (corrupted_stopped, regressions_promoted, failed_requests, detection_days.<kind>,
    predictions_logged, predictions_dropped).
    """
    import os

    legacy = {"drift_start": drift_start, "corrupt_day": corrupt_day, "drift_level": drift_level}
    given = [f"--{k.replace('_', '-')}" for k, v in legacy.items() if v is not None]
    if scenario is not None and given:
        typer.echo(f"Error: {', '.join(given)} cannot be combined with --scenario: edit a copy of the scenario "
                   "file instead (README: \"Scenarios\").", err=True)
        raise typer.Exit(2)
    if not verbose:
        # The table, and one line under a day for each flow that failed, say what happened;
        # the flows' own log lines (an expected quarantine alone is ~90 ERROR lines and two
        # tracebacks) would bury them. Set before Prefect is imported: it configures its
        # loggers from the environment.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
        # Prefect's own background services log through prefect._internal, configured
        # apart (an events worker stopped at exit logs one ERROR line with nothing lost).
        os.environ.setdefault("PREFECT_INTERNAL_LOGGING_LEVEL", "CRITICAL")
    from prefect_mlops.flows.demo import choose_serving_port, ephemeral_api_defaults, quiet_library_logs, require_reachable_api
    from tracking_plugin.errors import MlopsError

    if not verbose:
        quiet_library_logs()
    with ephemeral_api_defaults():
        from prefect_mlops.flows.scenario import load_scenario
        from prefect_mlops.flows.simulate import legacy_scenario, simulate_scenario

        try:
            if scenario is not None:
                chosen = load_scenario(scenario)
            elif given or seed:
                chosen = legacy_scenario(
                    days=days or 10, drift_start=6 if drift_start is None else drift_start,
                    corrupt_day=None if corrupt_day == -1 else (3 if corrupt_day is None else corrupt_day),
                    drift_level=2.0 if drift_level is None else drift_level, seed=seed, n_rows=rows or 1500,
                )
            else:
                chosen = load_scenario("covariate-drift")
            require_reachable_api()
            simulate_scenario(
                chosen, days=days, rows=rows, port=choose_serving_port(port) if port else None,
                model_name=model_name, echo=typer.echo,
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


# ----------------------------------------------------------- users and tokens

_DbUri = Annotated[
    Optional[str],
    typer.Option("--backend-store-uri", "--tracking-uri", help="Database of the tracking server (default: settings)."),
]


def _auth_store(uri: Optional[str]):  # type: ignore[no-untyped-def]
    """The users/tokens store of a backend database, migrated to head."""
    from serving_tasks.tracking_server.auth import AuthStore
    from tracking_plugin.backend import resolve_settings
    from tracking_plugin.store.db import Database

    settings = resolve_settings(uri or None)
    db = Database(settings.tracking_uri, password=settings.database_password)
    db.ensure_schema()
    return AuthStore(db)


def _run_auth(action):  # type: ignore[no-untyped-def]
    from tracking_plugin.errors import MlopsError
    from tracking_plugin.urls import redact_uri

    try:
        return action()
    except MlopsError as exc:
        typer.echo(f"Error: {redact_uri(exc.message)}", err=True)
        raise typer.Exit(1) from None


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="The new user's name.")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Asked for when not given.")
    ],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an admin.")] = False,
    backend_store_uri: _DbUri = None,
) -> None:
    """Create a user of the tracking server (password hashed with argon2)."""
    user = _run_auth(lambda: _auth_store(backend_store_uri).create_user(username, password, is_admin=admin))
    typer.echo(f"created user {user.username!r}{' (admin)' if user.is_admin else ''}")


@users_app.command("delete")
def users_delete(username: Annotated[str, typer.Argument()], backend_store_uri: _DbUri = None) -> None:
    """Delete a user with their tokens and permissions (never the last admin)."""
    _run_auth(lambda: _auth_store(backend_store_uri).delete_user(username))
    typer.echo(f"deleted user {username!r}")


@users_app.command("set-admin")
def users_set_admin(
    username: Annotated[str, typer.Argument()],
    admin: Annotated[bool, typer.Option("--admin/--no-admin", help="Grant or remove the admin role.")] = True,
    backend_store_uri: _DbUri = None,
) -> None:
    """Grant (or with --no-admin remove) the admin role."""
    user = _run_auth(lambda: _auth_store(backend_store_uri).set_admin(username, admin))
    typer.echo(f"user {user.username!r} is {'an admin' if user.is_admin else 'not an admin'}")


@users_app.command("list")
def users_list(backend_store_uri: _DbUri = None) -> None:
    """List the users (never their passwords)."""
    for user in _run_auth(lambda: _auth_store(backend_store_uri).list_users()):
        typer.echo(f"{user.username}{'  admin' if user.is_admin else ''}")


@tokens_app.command("create")
def tokens_create(
    username: Annotated[str, typer.Argument(help="Owner of the token.")],
    name: Annotated[str, typer.Option("--name", help="What the token is for (shown by `tokens list`).")] = "",
    expires_in_days: Annotated[
        Optional[float], typer.Option("--expires-in-days", min=0.0, help="Expiry (default: never).")
    ] = None,
    backend_store_uri: _DbUri = None,
) -> None:
    """Create an API token and print it once (MLFLOW_TRACKING_TOKEN); only its hash is stored."""
    expires = None if expires_in_days is None else expires_in_days * 86400
    new = _run_auth(lambda: _auth_store(backend_store_uri).create_token(username, name, expires_in_seconds=expires))
    typer.echo(f"token {new.info.token_id} of {new.info.username!r} (shown once, store it now):", err=True)
    typer.echo(new.token)


@tokens_app.command("list")
def tokens_list(
    username: Annotated[Optional[str], typer.Argument(help="Only this user's tokens.")] = None,
    backend_store_uri: _DbUri = None,
) -> None:
    """List API tokens (id, owner, name, state); never the tokens themselves."""
    import time

    now = time.time() * 1000
    for t in _run_auth(lambda: _auth_store(backend_store_uri).list_tokens(username)):
        state = "revoked" if t.revoked_time else "expired" if t.expiry_time and t.expiry_time <= now else "active"
        typer.echo(f"{t.token_id}  {t.username}  {state:<8} {t.name}")


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument()], backend_store_uri: _DbUri = None) -> None:
    """Revoke an API token (servers stop accepting it within their credential cache time)."""
    _run_auth(lambda: _auth_store(backend_store_uri).revoke_token(token_id))
    typer.echo(f"revoked token {token_id}")


def main() -> None:  # pragma: no cover - console script
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
