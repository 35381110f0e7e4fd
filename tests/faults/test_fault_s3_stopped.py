"""Fault 3: the S3 endpoint stops in the middle of ``register_model``'s copy.

Promise: the version being registered never becomes READY (it is FAILED_REGISTRATION, with
the reason), registering again once S3 is back gives a clean READY version, and no READY
version points at files that are missing or differ from its manifest.

The endpoint is a moto server of this test, on its own port: it is stopped while the copy
runs and started again on the same port (moto keeps the bucket's objects in this process,
as a real S3 would keep them through an outage of its endpoint).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import boto3
import pytest
from support import free_port

from tracking_plugin.artifacts import get_artifact_repository
from tracking_plugin.entities import ModelVersionStatus
from tracking_plugin.errors import BackendUnavailable
from tracking_plugin.models._manifest import read_manifest, verify_manifest, write_manifest
from tracking_plugin.registry import register_model
from tracking_plugin.store.sql import SqlStore

pytestmark = pytest.mark.slow

MLMODEL = "artifact_path: model\nflavors:\n  python_function:\n    loader_module: tests.fake\n    python_version: 3.11.0\n"
BUCKET = "outage"


def _model_dir(path: Path, *, files: int, size: int) -> Path:
    path.mkdir(parents=True)
    (path / "MLmodel").write_text(MLMODEL)
    (path / "data").mkdir()
    for i in range(files):
        (path / "data" / f"part-{i}.bin").write_bytes(bytes([i % 256]) * size)
    write_manifest(path)
    return path


class RestartableS3:
    """A moto endpoint on a fixed port that the test stops and starts again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None
        self.start()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[RestartableS3]:
    server = RestartableS3()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("PREFECT_MLOPS_S3_ENDPOINT_URL", server.endpoint)
    boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    try:
        yield server
    finally:
        server.stop()


def _ready_versions_with_bad_files(store: SqlStore, name: str, tmp_path: Path) -> list[str]:
    """Every READY version whose stored files do not match its manifest, with why."""
    bad = []
    for version in store.search_model_versions(f"name = '{name}'"):
        if version.status is not ModelVersionStatus.READY:
            continue
        local = tmp_path / f"check-{version.version}-{time.monotonic_ns()}"
        get_artifact_repository(version.storage_location).download_artifacts("", str(local))
        entries = read_manifest(local)
        try:
            assert entries, "no manifest"
            verify_manifest(local, entries)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted empty by the caller
            bad.append(f"v{version.version}: {exc}")
    return bad


def test_s3_stopped_mid_registration_fails_the_version_and_a_retry_registers(
    store: SqlStore, tmp_path: Path, s3: RestartableS3
) -> None:
    root = f"s3://{BUCKET}/root"
    register_model(str(_model_dir(tmp_path / "small", files=2, size=64)), "m", store=store, artifact_root=root)
    big = _model_dir(tmp_path / "big", files=30, size=1024 * 1024)

    watcher = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    copying = threading.Event()

    def stop_once_the_copy_has_started() -> None:
        while not copying.is_set():
            if watcher.list_objects_v2(Bucket=BUCKET, Prefix="root/registry/m/2/").get("KeyCount", 0):
                copying.set()
                s3.stop()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=stop_once_the_copy_has_started, daemon=True)
    thread.start()
    try:
        with pytest.raises(BackendUnavailable, match="S3|127.0.0.1"):
            register_model(str(big), "m", store=store, artifact_root=root)
    finally:
        copying.set()
        thread.join(10)

    failed = store.get_model_version("m", 2)
    assert failed.status is ModelVersionStatus.FAILED_REGISTRATION
    assert "Copying" in (failed.status_message or ""), failed.status_message  # the reason is kept
    assert failed.storage_location is None

    s3.start()  # the endpoint is back, with what it held
    retried = register_model(str(big), "m", store=store, artifact_root=root)
    assert (retried.version, retried.status) == (3, ModelVersionStatus.READY)

    statuses = {v.version: v.status for v in store.search_model_versions("name = 'm'")}
    assert statuses == {1: ModelVersionStatus.READY, 2: ModelVersionStatus.FAILED_REGISTRATION, 3: ModelVersionStatus.READY}
    assert _ready_versions_with_bad_files(store, "m", tmp_path) == []
