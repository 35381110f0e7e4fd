"""The ``prefect-mlops`` command line, invoked as a user would (typer's runner in-process,
the installed console script once). The long-running commands have their own tests:
``demo`` in tests/flows/test_demo.py, ``simulate`` in tests/flows/test_simulate.py,
``serve`` in tests/serving."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefect_mlops.deployments.cli import app

runner = CliRunner()


def test_help_lists_every_command_quickly() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("demo", "serve", "reconcile", "gc", "simulate", "db"):
        assert command in result.output
    # The console script answers --help without importing Prefect, pandas or scikit-learn.
    code = "import sys, deployments.cli; print(sorted(m for m in ('prefect', 'pandas', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("prefect-mlops")
    result = subprocess.run([str(script), "simulate", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--days" in result.stdout and "--corrupt-day" in result.stdout


def test_db_upgrade_creates_the_schema_and_is_repeatable(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    first = runner.invoke(app, ["db", "upgrade", "--tracking-uri", uri])
    assert first.exit_code == 0, first.output
    assert "schema at revision" in first.output and (tmp_path / "fresh.db").is_file()
    second = runner.invoke(app, ["db", "upgrade", "--tracking-uri", uri])
    assert second.exit_code == 0 and second.output.split()[-1] == first.output.split()[-1]


def test_db_upgrade_takes_the_database_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env.db").is_file()


def test_db_upgrade_with_a_bad_uri_names_it_without_a_traceback() -> None:
    result = runner.invoke(app, ["db", "upgrade", "--tracking-uri", "mysql://nowhere/db"])
    assert result.exit_code == 1
    assert "mysql://nowhere/db" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [["simulate", "--days", "0"], ["simulate", "--rows", "10"], ["simulate", "--corrupt-day", "-2"],
     ["demo", "--port", "0"], ["demo", "--port", "70000"]],
)
def test_out_of_range_options_are_refused_before_any_work(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def test_reconcile_dry_run_on_an_empty_backend(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", f"sqlite:///{tmp_path / 'mlops.db'}")
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    result = runner.invoke(app, ["reconcile", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "0 run(s) would be reconciled" in result.output
    assert os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") is None  # not left behind


@pytest.mark.parametrize("command", [[], ["demo"], ["serve"], ["reconcile"], ["gc"], ["simulate"], ["db"], ["db", "upgrade"]])
def test_help_shows_flags_as_flags(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "BOOLEAN" not in result.output
    assert "--help  " in result.output or "--help " in result.output


def test_reconcile_help_names_every_status_it_sets() -> None:
    output = " ".join(runner.invoke(app, ["reconcile", "--help"]).output.split())
    assert "Completed -> FINISHED" in output and "Failed -> FAILED" in output
    assert "Crashed/Cancelled" in output and "KILLED" in output


def test_an_unreachable_configured_prefect_api_is_one_line_saying_how_to_go_back(tmp_path: Path) -> None:
    """After `prefect config set PREFECT_API_URL=...` and stopping that server, `make run`
    (the demo), `simulate` and `reconcile` say so in one line instead of a long traceback."""
    from support import free_port

    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_MLOPS_"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    subprocess.run([str(bin_dir / "prefect"), "config", "set", f"PREFECT_API_URL={url}"],
                   env=env, check=True, capture_output=True, timeout=120)
    for args in (["demo"], ["simulate", "--days", "1"], ["reconcile"]):
        result = subprocess.run([str(bin_dir / "prefect-mlops"), *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "Traceback" not in output, output
        [line] = [line for line in output.splitlines() if url in line]
        assert "not reachable" in line and "prefect config unset PREFECT_API_URL" in line, line
    assert not (tmp_path / "mlops.db").exists()  # stopped before any work
