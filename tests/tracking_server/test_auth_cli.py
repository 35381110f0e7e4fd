"""``prefect-mlops users ...`` and ``prefect-mlops tokens ...`` on the backend database
(typer's runner in-process), and what they leave in it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from deployments.cli import app

runner = CliRunner()


def _run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.output


def test_users_and_tokens_commands(tmp_path: Path) -> None:
    db = ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlops.db'}"]
    code, out = _run("users", "create", "ada", "--admin", *db, input="ada-password-1\nada-password-1\n")
    assert code == 0 and "created user 'ada' (admin)" in out, out
    assert "ada-password-1" not in out.replace("Password: ", "").split("created")[1]
    code, out = _run("users", "create", "bo", "--password", "bo-password-2", *db)
    assert code == 0, out
    code, out = _run("users", "create", "bo", "--password", "bo-password-2", *db)
    assert code == 1 and "already exists" in out
    code, out = _run("users", "create", "short", "--password", "x", *db)
    assert code == 1 and "8 to 1024 characters" in out

    code, out = _run("users", "delete", "ada", *db)
    assert code == 1 and "last admin" in out
    code, out = _run("users", "set-admin", "ada", "--no-admin", *db)
    assert code == 1 and "last admin" in out
    code, out = _run("users", "set-admin", "bo", *db)
    assert code == 0 and "is an admin" in out
    code, out = _run("users", "list", *db)
    assert out.splitlines() == ["ada  admin", "bo  admin"]

    code, out = _run("tokens", "create", "bo", "--name", "ci", "--expires-in-days", "30", *db)
    assert code == 0, out
    token = out.strip().splitlines()[-1]
    assert token.startswith("mlops_")
    token_id = token.split("_")[1]
    code, out = _run("tokens", "list", *db)
    assert f"{token_id}  bo  active" in out and token not in out
    code, out = _run("tokens", "revoke", token_id, *db)
    assert code == 0
    code, out = _run("tokens", "list", "bo", *db)
    assert f"{token_id}  bo  revoked" in out
    code, out = _run("tokens", "revoke", "nope", *db)
    assert code == 1 and "does not exist" in out
    code, out = _run("users", "delete", "ada", *db)
    assert code == 0
    assert token.encode() not in (tmp_path / "mlops.db").read_bytes()
