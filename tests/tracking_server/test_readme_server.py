"""The README's "Tracking server (team setup)": the team's command starts the server on
PostgreSQL + S3 (the test's database and bucket in place of the team's) and the mlflow
snippet runs against it. (tests/test_readme.py runs the section's local variant as written.)"""

from __future__ import annotations

import re
import shlex
import uuid
from typing import Any, Callable

import pytest


@pytest.mark.slow
@pytest.mark.postgres
def test_readme_team_setup_runs(
    readme_section: Any, start_server: Callable[..., Any], pg_server: str, s3_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3
    from support import create_pg_database

    pytest.importorskip("mlflow")
    text = readme_section("Tracking server (team setup)")
    commands = re.findall(r"^```(?:bash)?\n((?:\.venv/bin/)?prefect-mlops server.*?)\n```", text, flags=re.S | re.M)
    [command] = [c for c in commands if "postgresql" in c]  # the team's; the other is the local variant
    [example] = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[0] in ("prefect-mlops", ".venv/bin/prefect-mlops") and argv[1] == "server"
    options = dict(zip(argv[2::2], argv[3::2]))
    assert options["--backend-store-uri"].startswith("postgresql+psycopg://")
    assert options["--default-artifact-root"].startswith("s3://")

    # mlflow infers pip requirements in a subprocess (20-40 s on a busy machine); the
    # snippet's result does not depend on them.
    monkeypatch.setenv("MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT", "2")
    # The snippet's registry follows its tracking URI only when no earlier test in this
    # process left a registry URI behind.
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setattr("mlflow.tracking._model_registry.utils._registry_uri", None)
    bucket = "readme-" + uuid.uuid4().hex[:10]
    boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    ).create_bucket(Bucket=bucket)
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "PREFECT_MLOPS_S3_ENDPOINT_URL": s3_server,
    }
    server = start_server(create_pg_database(pg_server), f"s3://{bucket}/mlops", "--workers", options["--workers"], env=env)
    url = re.search(r'set_tracking_uri\("([^"]+)"\)', example).group(1)  # type: ignore[union-attr]
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    exec(compile(example.replace(url, server.url), "README.md[tracking server]", "exec"), namespace)
    assert list(namespace["champion"].predict([[2.5]])) == [1]
