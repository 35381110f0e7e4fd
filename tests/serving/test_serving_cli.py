"""The ``serve`` command line: options and refusals that happen before any server starts."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from serving_tasks.cli import serve_command


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(serve_command)
    return app


def test_help_lists_the_serving_options() -> None:
    result = CliRunner().invoke(_app(), ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ["--model-uri", "--port", "--host", "--workers", "--token-env", "--max-batch-size", "--max-wait-ms", "--max-body-mb", "--max-rows", "--max-decoded-mb", "--request-timeout", "--max-connections", "--poll-interval"]:
        assert option in result.output


def test_token_env_naming_an_unset_variable_is_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MLOPS_TEST_NO_SUCH_TOKEN", raising=False)
    result = CliRunner().invoke(_app(), ["-m", "models:/churn@champion", "--token-env", "MLOPS_TEST_NO_SUCH_TOKEN"])
    assert result.exit_code == 2
    assert "MLOPS_TEST_NO_SUCH_TOKEN" in result.output


def test_serve_without_a_model_uri_is_refused() -> None:
    result = CliRunner().invoke(_app(), ["-p", "5000"])
    assert result.exit_code == 2
    assert "--model-uri" in result.output


def test_batch_size_below_one_is_refused() -> None:
    result = CliRunner().invoke(_app(), ["-m", "models:/churn@champion", "--max-batch-size", "0"])
    assert result.exit_code == 2
    assert "max-batch-size" in result.output


def test_a_model_that_cannot_load_stops_the_server_at_startup(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    missing = tmp_path / "no-such-model"
    result = subprocess.run(
        [sys.executable, "-m", "serving_tasks.cli", "-m", str(missing), "-p", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert f"No model directory at '{missing}'" in result.stderr + result.stdout
