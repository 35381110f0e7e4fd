"""The README's "Tracking server: who may do what": its commands and snippet run as written
(the test's database file and port in place of the README's)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from tracking_server.conftest import CONSOLE_SCRIPT


@pytest.mark.slow
def test_readme_auth_section_runs(
    readme_section: Any, start_server: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    text = readme_section("Tracking server: who may do what (`--auth`)")
    start, manage = re.findall(r"^```bash\n(.*?)\n```", text, flags=re.S | re.M)
    [example] = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    db_uri = f"sqlite:///{tmp_path / 'mlops.db'}"

    words = shlex.split(start.replace("\\\n", " "), comments=True)
    assert words[0] == "export" and "&&" in words
    env = dict(w.split("=", 1) for w in words[1 : words.index("&&")])
    argv = words[words.index("&&") + 1 :]
    assert argv[0].endswith("prefect-mlops") and argv[1:3] == ["server", "--auth"] and "--host" in argv
    assert set(env) == {"PREFECT_MLOPS_AUTH_ADMIN_USERNAME", "PREFECT_MLOPS_AUTH_ADMIN_PASSWORD"}
    server = start_server(db_uri, str(tmp_path / "artifacts"), "--auth", env=env)

    outputs = []
    for line in manage.splitlines():
        args = shlex.split(line.replace("sqlite:///mlops.db", db_uri))
        assert args[0].endswith("prefect-mlops")
        done = subprocess.run([CONSOLE_SCRIPT, *args[1:]], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (line, done.stderr)
        outputs.append(done.stdout)
    token = outputs[2].strip()
    assert token.startswith("mlops_") and token not in outputs[3]

    url = re.search(r'set_tracking_uri\("([^"]+)"\)', example).group(1)  # type: ignore[union-attr]
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(name, "restored-after-the-test")
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    exec(compile(example.replace(url, server.url), "README.md[auth]", "exec"), namespace)
    experiment_id = namespace["experiment_id"]

    get = f"{server.url}/api/2.0/mlflow/experiments/get"
    assert httpx.get(get, params={"experiment_id": experiment_id}, auth=("bob", "bob-pw-4567")).status_code == 200
    r = httpx.post(f"{server.url}/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id},
                   auth=("bob", "bob-pw-4567"))
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"
    r = httpx.get(get, params={"experiment_id": experiment_id}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert httpx.get(get, params={"experiment_id": experiment_id}).status_code == 401
