"""register_model: registry-owned copies, verification, and failures that leave no damage.

Databases: SQLite and PostgreSQL (``db_uri``); artifacts: a local folder and S3 over HTTP
on moto (``artifact_root``). The S3 interruption tests run their own moto server so they
can stop it in the middle of a copy.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from support import free_port

from tracking_plugin.artifacts import get_artifact_repository, join_artifact_uri
from tracking_plugin.entities import ModelVersionStatus, Stage
from tracking_plugin.errors import BackendUnavailable, InvalidArgument, ModelLoadRefused, NotFound
from tracking_plugin.models._manifest import write_manifest
from tracking_plugin.registry import register_model, registry_location
from tracking_plugin.store.db import Database
from tracking_plugin.store.sql import SqlStore

READY = ModelVersionStatus.READY
FAILED = ModelVersionStatus.FAILED_REGISTRATION

MLMODEL = """\
artifact_path: model
flavors:
  python_function:
    loader_module: tests.fake
    python_version: 3.11.0
"""


def make_model_dir(path: Path, *, files: int = 2, size: int = 64) -> Path:
    """A tiny model directory: an MLmodel file, some payload files and a sha256 manifest."""
    path.mkdir(parents=True)
    (path / "MLmodel").write_text(MLMODEL)
    (path / "data").mkdir()
    for i in range(files):
        (path / "data" / f"part-{i}.bin").write_bytes(bytes([i % 256]) * size)
    (path / "requirements.txt").write_text("scikit-learn==1.9.1\n")
    write_manifest(path)
    return path


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_model_dir(tmp_path / "model")


def files_under(uri: str) -> dict[str, bytes]:
    repo = get_artifact_repository(uri)
    out: dict[str, bytes] = {}
    pending = [""]
    while pending:
        for info in repo.list_artifacts(pending.pop() or None):
            if info.is_dir:
                pending.append(info.path)
            else:
                out[info.path] = repo.read_bytes(info.path)
    return out


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def log_run_model(store: SqlStore, artifact_root: str, model_dir: Path) -> tuple[str, str]:
    """A run whose artifacts hold the model under ``model``; returns (run id, artifact URI)."""
    experiment_id = store.create_experiment("exp", artifact_location=join_artifact_uri(artifact_root, "experiments", "1"))
    run = store.create_run(experiment_id, user_id="ana", start_time=int(time.time() * 1000))
    get_artifact_repository(run.info.artifact_uri).log_artifacts(model_dir, "model")
    return run.info.run_id, run.info.artifact_uri


# ---------------------------------------------------------------- happy paths


def test_registration_copies_the_files_so_deleting_the_run_keeps_the_version(
    store: SqlStore, artifact_root: str, model_dir: Path
) -> None:
    run_id, run_artifacts = log_run_model(store, artifact_root, model_dir)

    version = register_model(
        f"runs:/{run_id}/model", "churn", tags={"data": "nov"}, description="weekly", store=store, artifact_root=artifact_root
    )

    assert (version.name, version.version, version.status) == ("churn", 1, READY)
    assert (version.source, version.run_id, version.tags, version.description) == (
        f"runs:/{run_id}/model", run_id, {"data": "nov"}, "weekly"
    )
    assert version.storage_location == registry_location(artifact_root, "churn", 1)
    assert version.storage_location.startswith(artifact_root)

    # the run and its files go away; the registered version keeps its own copy
    get_artifact_repository(run_artifacts).delete_artifacts()
    store.delete_run(run_id)
    assert files_under(run_artifacts) == {}
    assert files_under(store.get_model_version("churn", 1).storage_location) == local_files(model_dir)

    # the run's files are gone: a new registration has nothing to copy, and records nothing
    with pytest.raises(InvalidArgument, match="not a model directory"):
        register_model(f"runs:/{run_id}/model", "churn", store=store, artifact_root=artifact_root)
    assert [v.version for v in store.search_model_versions("name = 'churn'")] == [1]


def test_register_from_paths_and_models_uris(store: SqlStore, artifact_root: str, model_dir: Path) -> None:
    first = register_model(str(model_dir), "a", store=store, artifact_root=artifact_root)
    second = register_model(model_dir.as_uri(), "a", store=store, artifact_root=artifact_root)
    store.set_registered_model_alias("a", "champion", 2)

    from_version = register_model("models:/a/1", "b", store=store, artifact_root=artifact_root)
    from_alias = register_model("models:/a@champion", "b", store=store, artifact_root=artifact_root)

    assert [first.version, second.version, from_version.version, from_alias.version] == [1, 2, 1, 2]
    assert first.storage_location != second.storage_location
    for version in (first, second, from_version, from_alias):
        assert version.status is READY
        assert files_under(version.storage_location) == local_files(model_dir)
    assert from_version.source == "models:/a/1"


def test_names_that_are_not_path_safe_get_distinct_folders(tmp_path: Path, model_dir: Path) -> None:
    root = str(tmp_path / "root")
    locations = {registry_location(root, name, 1) for name in ("a b", "a_b", "a?b", "..x", "Churn")}
    assert len(locations) == 5
    assert all(loc.startswith(os.path.join(root, "registry")) for loc in locations)
    assert registry_location(root, "Churn", 1) == os.path.join(root, "registry", "Churn", "1")


def test_defaults_come_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'default.db'}"
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", uri)
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(tmp_path / "default-artifacts"))

    version = register_model(str(model_dir), "m")

    assert version.status is READY
    assert version.storage_location == str(tmp_path / "default-artifacts" / "registry" / "m" / "1")
    assert SqlStore.from_uri(uri).get_model_version("m", 1).status is READY


# ---------------------------------------------------------------- refusals


def test_a_directory_without_mlmodel_is_refused_before_anything_is_recorded(
    store: SqlStore, tmp_path: Path
) -> None:
    not_a_model = tmp_path / "plots"
    not_a_model.mkdir()
    (not_a_model / "roc.png").write_bytes(b"png")

    with pytest.raises(InvalidArgument, match=f"{str(not_a_model)!r}.*not a model directory"):
        register_model(str(not_a_model), "m", store=store, artifact_root=str(tmp_path / "root"))
    with pytest.raises(InvalidArgument, match="not a model directory"):
        register_model(str(tmp_path / "missing"), "m", store=store, artifact_root=str(tmp_path / "root"))
    with pytest.raises(NotFound, match="'m'"):
        store.get_registered_model("m")


def test_unknown_run_and_bad_uris(store: SqlStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="0123abcd"):
        register_model("runs:/0123abcd/model", "m", store=store, artifact_root=str(tmp_path))
    with pytest.raises(NotFound, match="'nope'"):
        register_model("models:/nope/1", "m", store=store, artifact_root=str(tmp_path))
    with pytest.raises(InvalidArgument):
        register_model("models:/a/b/c", "m", store=store, artifact_root=str(tmp_path))
    with pytest.raises(InvalidArgument, match="model name"):
        register_model(str(tmp_path), "bad/name", store=store, artifact_root=str(tmp_path))
    assert list(store.search_registered_models()) == []


def test_a_tampered_model_file_is_refused_and_the_champion_stays(
    store: SqlStore, artifact_root: str, model_dir: Path, tmp_path: Path
) -> None:
    register_model(str(model_dir), "m", store=store, artifact_root=artifact_root)
    store.promote("m", 1, require_passed_gate=False)
    tampered = make_model_dir(tmp_path / "tampered")
    (tampered / "data" / "part-1.bin").write_bytes(b"\x01" * 63 + b"\xff")  # same size, other bytes

    with pytest.raises(ModelLoadRefused, match=r"version 2 of 'm'.*'data/part-1.bin'.*changed"):
        register_model(str(tampered), "m", store=store, artifact_root=artifact_root)

    failed = store.get_model_version("m", 2)
    assert failed.status is FAILED and "data/part-1.bin" in (failed.status_message or "")
    assert failed.storage_location is None
    assert store.get_model_version_by_alias("m", "champion").version == 1
    assert [v.version for v in store.get_latest_versions("m")] == [1]


def test_a_file_added_after_saving_is_refused(store: SqlStore, model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "extra.py").write_text("import os; os.system('echo hi')\n")
    with pytest.raises(ModelLoadRefused, match="extra.py"):
        register_model(str(model_dir), "m", store=store, artifact_root=str(tmp_path / "root"))
    assert store.get_model_version("m", 1).status is FAILED


# ---------------------------------------------------------------- S3 failures


def test_unreachable_s3_destination_fails_the_registration(
    store: SqlStore, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("PREFECT_MLOPS_S3_ENDPOINT_URL", closed)

    with pytest.raises(BackendUnavailable, match="127.0.0.1"):
        register_model(str(model_dir), "m", store=store, artifact_root="s3://registry-bucket/root")

    version = store.get_model_version("m", 1)
    assert version.status is FAILED and version.storage_location is None
    assert closed in (version.status_message or "")


class StoppableS3:
    """A moto server of one test, which the test may stop in the middle of a copy."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.endpoint = f"http://127.0.0.1:{free_port()}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(self.endpoint.rsplit(":", 1)[1]), verbose=False)
        self._server.start()
        self._lock = threading.Lock()
        self._running = True

    def stop(self) -> None:
        with self._lock:
            if self._running:
                self._running = False
                self._server.stop()


@pytest.fixture
def own_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[StoppableS3]:
    """Our S3 settings pointed at a fresh moto server with the bucket ``interrupted``."""
    import boto3

    s3 = StoppableS3()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("PREFECT_MLOPS_S3_ENDPOINT_URL", s3.endpoint)
    boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1").create_bucket(Bucket="interrupted")
    try:
        yield s3
    finally:
        s3.stop()


@pytest.mark.slow  # 40 MB through moto, twice (SQLite and PostgreSQL)
def test_s3_copy_interrupted_midway_leaves_failed_registration_and_champion(
    store: SqlStore, tmp_path: Path, own_s3: StoppableS3
) -> None:
    import boto3

    bucket = "interrupted"
    root = f"s3://{bucket}/root"
    register_model(str(make_model_dir(tmp_path / "small")), "m", store=store, artifact_root=root)
    store.promote("m", 1, require_passed_gate=False)
    big = make_model_dir(tmp_path / "big", files=40, size=1024 * 1024)  # 40 MB in 40 files

    watcher = boto3.client("s3", endpoint_url=own_s3.endpoint, region_name="us-east-1")
    first_file_of_v2 = threading.Event()

    def stop_when_the_copy_has_started() -> None:
        while not first_file_of_v2.is_set():
            listing = watcher.list_objects_v2(Bucket=bucket, Prefix="root/registry/m/2/")
            if listing.get("KeyCount", 0):
                first_file_of_v2.set()
                own_s3.stop()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=stop_when_the_copy_has_started, daemon=True)
    thread.start()
    try:
        with pytest.raises(BackendUnavailable, match="S3"):
            register_model(str(big), "m", store=store, artifact_root=root)
    finally:
        first_file_of_v2.set()
        thread.join(10)

    failed = store.get_model_version("m", 2)
    assert failed.status is FAILED and failed.storage_location is None
    assert "Copying" in (failed.status_message or "")
    champion = store.get_model_version_by_alias("m", "champion")
    assert (champion.version, champion.status, champion.current_stage) == (1, READY, Stage.NONE)
    assert [v.version for v in store.get_latest_versions("m")] == [1]
    with pytest.raises(InvalidArgument, match="FAILED_REGISTRATION"):
        register_model("models:/m/2", "copy", store=store, artifact_root=root)


# ---------------------------------------------------------------- a real saved model


@pytest.fixture(scope="module")
def sklearn_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from tracking_plugin.models import save_model

    path = tmp_path_factory.mktemp("sk") / "model"
    estimator = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    save_model(estimator, path, pip_requirements=["scikit-learn"])
    return path


def test_a_registered_sklearn_model_loads_from_the_registry_copy(
    store: SqlStore, artifact_root: str, sklearn_model_dir: Path
) -> None:
    import numpy as np

    from tracking_plugin.models import load_model

    run_id, run_artifacts = log_run_model(store, artifact_root, sklearn_model_dir)
    version = register_model(f"runs:/{run_id}/model", "sk", store=store, artifact_root=artifact_root)
    get_artifact_repository(run_artifacts).delete_artifacts()

    assert version.storage_location is not None
    model = load_model(version.storage_location)  # verifies the manifest again at load
    assert model.predict(np.array([[0.0], [3.0]])).tolist() == [0, 1]


def test_an_unsupported_artifact_root_is_refused_before_a_version_is_taken(store: SqlStore, model_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match="ftp://"):
        register_model(str(model_dir), "m", store=store, artifact_root="ftp://host/registry")
    with pytest.raises(NotFound):
        store.get_registered_model("m")


# ---------------------------------------------------------------- storage keys (issue 14, items 4 and 8)


def _linear_model(path: Path, slope: float) -> Path:
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from tracking_plugin.models import save_model

    X = pd.DataFrame({"x": [0.0, 1.0, 2.0]})
    save_model(LinearRegression().fit(X, [0.0, slope, 2 * slope]), path)
    return path


def _predict(store: SqlStore, name: str, version: int) -> float:
    import pandas as pd

    from tracking_plugin.models import load_model

    location = store.get_model_version(name, version).storage_location
    assert location is not None
    return round(float(load_model(location).predict(pd.DataFrame({"x": [1.0]}))[0]), 6)


def test_a_name_equal_to_another_names_folder_never_shares_it(store: SqlStore, artifact_root: str, tmp_path: Path) -> None:
    import hashlib

    u1, u2 = _linear_model(tmp_path / "u1", 1.0), _linear_model(tmp_path / "u2", 2.0)
    lookalike = "a_b-" + hashlib.sha256(b"a b").hexdigest()[:8]  # the old folder name of "a b"

    first = register_model(str(u1), "a b", store=store, artifact_root=artifact_root)
    second = register_model(str(u2), lookalike, store=store, artifact_root=artifact_root)

    assert first.storage_location != second.storage_location
    assert (_predict(store, "a b", 1), _predict(store, lookalike, 1)) == (1.0, 2.0)
    assert files_under(first.storage_location) == local_files(u1)


def test_versions_stored_under_the_old_layout_keep_loading_and_are_never_overwritten(
    store: SqlStore, artifact_root: str, tmp_path: Path
) -> None:
    """A registry written before the storage key changed: "a b" version 1 lives in the
    folder ``a_b-<8 hex>`` (recorded in its storage_location). A model literally named
    like that folder registers next to it, not over it."""
    import hashlib

    old_folder = "a_b-" + hashlib.sha256(b"a b").hexdigest()[:8]
    old_location = join_artifact_uri(artifact_root, "registry", old_folder, "1")
    u1, u2 = _linear_model(tmp_path / "u1", 1.0), _linear_model(tmp_path / "u2", 2.0)
    get_artifact_repository(old_location).log_artifacts(u1)
    old = store.create_model_version("a b", str(u1))
    store.finish_model_version("a b", old.version, status=READY, storage_location=old_location)

    new = register_model(str(u2), old_folder, store=store, artifact_root=artifact_root)

    assert new.status is READY and new.storage_location != old_location
    assert store.get_model_version("a b", 1).storage_location == old_location
    assert files_under(old_location) == local_files(u1)
    assert (_predict(store, "a b", 1), _predict(store, old_folder, 1)) == (1.0, 2.0)


def test_a_renamed_or_deleted_models_files_are_never_reused(store: SqlStore, artifact_root: str, tmp_path: Path) -> None:
    u1, u2, u3 = (_linear_model(tmp_path / f"u{i}", float(i)) for i in (1, 2, 3))
    register_model(str(u1), "m", store=store, artifact_root=artifact_root)
    store.rename_registered_model("m", "renamed")
    register_model(str(u2), "m", store=store, artifact_root=artifact_root)  # "m" version 1 again
    assert (_predict(store, "renamed", 1), _predict(store, "m", 1)) == (1.0, 2.0)

    store.delete_registered_model("m")  # its files stay where they were
    again = register_model(str(u3), "m", store=store, artifact_root=artifact_root)
    assert (_predict(store, "renamed", 1), _predict(store, "m", 1)) == (1.0, 3.0)
    assert again.storage_location not in (
        store.get_model_version("renamed", 1).storage_location,
        registry_location(artifact_root, "m", 1),
    )


@pytest.mark.parametrize("name", ["n" * 256, "long name with spaces " * 11 + "end", "é" * 256])
def test_any_name_the_validator_accepts_registers(store: SqlStore, artifact_root: str, tmp_path: Path, name: str) -> None:
    from tracking_plugin.validation import validate_model_name

    assert validate_model_name(name) == name and len(name) <= 256
    model = _linear_model(tmp_path / "u", 5.0)

    version = register_model(str(model), name, store=store, artifact_root=artifact_root)

    assert version.status is READY
    assert _predict(store, name, 1) == 5.0
    assert len(version.storage_location.rsplit("/registry/", 1)[1]) < 130


def test_a_model_whose_files_cannot_be_stored_is_refused_before_a_version(
    store: SqlStore, tmp_path: Path
) -> None:
    deep = make_model_dir(tmp_path / "deep")
    nested = deep / "data" / ("d" * 250) / ("e" * 250) / ("f" * 250)
    nested.mkdir(parents=True)
    (nested / "x.bin").write_bytes(b"x")
    write_manifest(deep)
    long_root = "s3://bucket/" + "r" * 300

    with pytest.raises(InvalidArgument, match="the limit is 1024"):
        register_model(str(deep), "m", store=store, artifact_root=long_root)
    deep_local_root = str(tmp_path / "/".join(["r" * 200] * 16))  # never created: refused first
    with pytest.raises(InvalidArgument, match="file path in the registry"):
        register_model(str(deep), "m", store=store, artifact_root=deep_local_root)
    with pytest.raises(NotFound):
        store.get_registered_model("m")
