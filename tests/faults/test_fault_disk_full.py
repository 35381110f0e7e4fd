"""Fault 5: the artifact root's file system is full (a 2 MiB tmpfs mounted for the test).

Promise: ``log_artifact`` and ``log_model`` fail with an error naming the artifact root and
its free space; nothing half-written stays (no partial file, no model folder without its
weights, no registered version of a model that was not stored); the tracking server that
writes there keeps running and serves the next request; once space is freed, logging works.

Mounting needs root (the suite runs as root, as ``make test``'s PostgreSQL setup does).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from support import free_port, reset_tracking

import tracking_plugin as mlops
from tracking_plugin.client import TrackingClient
from tracking_plugin.errors import BackendUnavailable

pytestmark = pytest.mark.slow

SIZE = 2 * 1024 * 1024


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs at ``tmp_path / "small"``, unmounted after the test (mounting needs
    root, as the rest of `make test` does: it starts PostgreSQL as its own user)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _blob(path: Path, size: int) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(size))
    return path


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_full_artifact_root_refuses_artifacts_and_models_and_keeps_nothing_half_written(
    full_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.linear_model import LogisticRegression

    root = full_disk / "artifacts"
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", f"sqlite:///{tmp_path / 'mlops.db'}")
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(root))
    monkeypatch.chdir(tmp_path)
    reset_tracking()
    client = TrackingClient()
    try:
        mlops.set_experiment("disk-full")
        with mlops.start_run() as run:
            mlops.log_artifact(str(_blob(tmp_path / "first.bin", 1500 * 1024)))
            before = _files_under(root)

            with pytest.raises(BackendUnavailable) as too_big:
                mlops.log_artifact(str(_blob(tmp_path / "second.bin", 1000 * 1024)))
            message = str(too_big.value)
            assert str(root) in message and "bytes free of" in message and "second.bin" in message

            # About 600 KB of coefficients: more than is left.
            wide = np.random.default_rng(1).normal(size=(4, 75_000))
            estimator = LogisticRegression().fit(wide, [0, 0, 1, 1])
            with pytest.raises(BackendUnavailable, match="bytes free of"):
                mlops.log_model(estimator, "model", registered_model_name="churn")

            # What the failures left behind: nothing.
            assert _files_under(root) == before
            assert client.list_artifacts(run.info.run_id, "model") == []
            assert list(client.search_model_versions("name = 'churn'")) == []

            # Space freed: the model logs, registers and loads from the registry.
            (root / before[0]).unlink()
            info = mlops.log_model(estimator, "model", registered_model_name="churn")
        assert info.registered_model_version == 1
        loaded = mlops.load_model("models:/churn/1")
        assert list(loaded.predict(wide)) == [0, 0, 1, 1]
    finally:
        client.close()
        reset_tracking()


def test_the_tracking_server_on_a_full_disk_answers_clearly_and_keeps_running(
    full_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = full_disk / "artifacts"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("prefect-mlops")), "server", "--backend-store-uri",
             f"sqlite:///{tmp_path / 'mlops.db'}", "--default-artifact-root", str(root), "--serve-artifacts",
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/health", timeout=1).text == "OK":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

        monkeypatch.setenv("PREFECT_MLOPS_RETRY_DEADLINE", "1")  # a full disk stays full
        reset_tracking()
        client = TrackingClient(url)
        run_id = client.create_run(client.create_experiment("disk-full-server")).info.run_id
        client.log_artifact(run_id, str(_blob(tmp_path / "first.bin", 1200 * 1024)))
        with pytest.raises(BackendUnavailable) as too_big:
            client.log_artifact(run_id, str(_blob(tmp_path / "second.bin", 1200 * 1024)))
        message = str(too_big.value)
        assert str(root) in message and "bytes free of" in message, message

        assert server.poll() is None and httpx.get(url + "/health", timeout=5).text == "OK"
        assert [f.path for f in client.list_artifacts(run_id)] == ["first.bin"]
        client.log_artifact(run_id, str(_blob(tmp_path / "small.txt", 10)))
        assert [f.path for f in client.list_artifacts(run_id)] == ["first.bin", "small.txt"]
        assert not [p for p in root.rglob(".mlops-*.tmp")]
        client.close()
    finally:
        server.terminate()
        server.wait(30)
        reset_tracking()
