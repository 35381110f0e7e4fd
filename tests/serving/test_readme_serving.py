"""The README's serving section: its serve command and example request work as written."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from prefect_mlops.flows.data import FEATURE_COLUMNS, LABEL_COLUMN, ChurnGenerator
from prefect_mlops.flows.training import TrainingConfig, build_pipeline
from registry_tasks import RegistryClient
from tracking_plugin.models import save_model

def _section(readme_section) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    text = readme_section("Serving a model")
    [command] = re.findall(r"^```bash\n(.*?)\n```", text, flags=re.S | re.M)
    [example] = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    return command, example


@pytest.mark.slow
def test_readme_serve_command_and_request_work(readme_section, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # The README's command names port 5000; the suite runs this test alone on that port.
    command, example = _section(readme_section)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", f"sqlite:///{tmp_path / 'mlops.db'}")
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    batch = ChurnGenerator(seed=0, n_rows=800).load()
    model = build_pipeline(TrainingConfig(n_estimators=10)).fit(batch[list(FEATURE_COLUMNS)], batch[LABEL_COLUMN])
    save_model(model, str(tmp_path / "model"), input_example=batch[list(FEATURE_COLUMNS)].head(3))
    registry = RegistryClient()
    version = registry.register(str(tmp_path / "model"), "churn")
    registry.promote("churn", version.version, require_passed_gate=False)

    argv = shlex.split(command, comments=True)  # the README says "# runs until Ctrl-C"
    assert argv[0].endswith("prefect-mlops") and argv[1] == "serve"
    argv[0] = str(Path(sys.executable).parent / "prefect-mlops")
    proc = subprocess.Popen(argv, cwd=tmp_path, env=dict(os.environ), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                if httpx.get("http://127.0.0.1:5000/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.2)
        namespace: dict[str, object] = {"__name__": "__readme__"}
        exec(compile(example, "README.md[serving example]", "exec"), namespace)
        response = namespace["response"]
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == [int(p) for p in model.predict(pd_rows(example))]
        assert httpx.get("http://127.0.0.1:5000/version").json()["version"] == version.version
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def pd_rows(example: str):  # type: ignore[no-untyped-def]
    import pandas as pd

    namespace: dict[str, object] = {}
    exec(example.split("response =")[0], namespace)
    split = namespace["rows"]["dataframe_split"]  # type: ignore[index]
    return pd.DataFrame(split["data"], columns=split["columns"])
