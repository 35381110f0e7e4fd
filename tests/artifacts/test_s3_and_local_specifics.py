"""What only one kind of repository does: S3 multipart, paging, endpoints, credentials and
server-side copies (moto over HTTP); local roots, file:// URIs and symlink containment."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from support import free_port
from pydantic import SecretStr

from tracking_plugin.artifacts import LocalArtifactRepository, S3ArtifactRepository, get_artifact_repository
from tracking_plugin.errors import BackendUnavailable, Conflict, InvalidArgument, NotFound
from tracking_plugin.settings import MlopsSettings


def s3(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


# -- S3 --------------------------------------------------------------------------------


def test_big_file_is_uploaded_multipart_and_round_trips(s3_bucket: str, s3_env: str, tmp_path: Path) -> None:
    big = tmp_path / "weights.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # over the 8 MB threshold: 2 parts
    repo = get_artifact_repository(f"s3://{s3_bucket}/runs/1")
    repo.log_artifact(big, "model")

    head = s3(s3_env).head_object(Bucket=s3_bucket, Key="runs/1/model/weights.bin")
    assert head["ETag"].strip('"').endswith("-2"), head["ETag"]
    assert head["ContentLength"] == big.stat().st_size

    local = repo.download_artifacts("model/weights.bin", dst_path=tmp_path / "dl")
    assert hashlib.sha256(Path(local).read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()


def test_small_file_is_a_single_put(s3_bucket: str, s3_env: str, tmp_path: Path) -> None:
    get_artifact_repository(f"s3://{s3_bucket}/r").log_bytes(b"small", "a.txt")
    assert "-" not in s3(s3_env).head_object(Bucket=s3_bucket, Key="r/a.txt")["ETag"]


def put_keys(endpoint: str, bucket: str, keys: list[str]) -> None:
    client = s3(endpoint)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))


@pytest.mark.slow  # 1001 requests to moto: 10-30 s on a busy 2-core machine
def test_listing_and_deleting_more_than_1000_keys(s3_bucket: str, s3_env: str) -> None:
    names = [f"f{i:04d}.txt" for i in range(1001)]
    put_keys(s3_env, s3_bucket, [f"root/many/{n}" for n in names] + ["root/many/sub/last.txt"])
    repo = get_artifact_repository(f"s3://{s3_bucket}/root")

    listed = repo.list_artifacts("many")  # S3 returns at most 1000 keys a request
    assert [i.path for i in listed] == [f"many/{n}" for n in names] + ["many/sub"]
    assert all(i.file_size == 1 for i in listed[:-1]) and listed[-1].is_dir

    repo.delete_artifacts("many")  # more than one DeleteObjects batch
    assert repo.list_artifacts() == []
    assert s3(s3_env).list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_every_operation_follows_listing_pages(s3_bucket: str, s3_env: str, tmp_path: Path) -> None:
    names = [f"f{i:02d}.txt" for i in range(12)]
    put_keys(s3_env, s3_bucket, [f"root/d/{n}" for n in names] + ["root/d/sub/last.txt"])
    # 5 keys a page: 3 pages for the 13 keys.
    repo = S3ArtifactRepository(f"s3://{s3_bucket}/root", settings=MlopsSettings(), page_size=5)

    assert [i.path for i in repo.list_artifacts("d")] == [f"d/{n}" for n in names] + ["d/sub"]
    local = Path(repo.download_artifacts("d", dst_path=tmp_path / "dl"))
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*.txt")) == names + ["sub/last.txt"]
    dest = S3ArtifactRepository(f"s3://{s3_bucket}/copy", settings=MlopsSettings(), page_size=5)
    repo.copy_to(dest, "d")
    assert len(dest.list_artifacts()) == 13
    repo.delete_artifacts("d")
    assert repo.list_artifacts() == []
    with pytest.raises(InvalidArgument, match="page_size"):
        S3ArtifactRepository(f"s3://{s3_bucket}/root", settings=MlopsSettings(), page_size=5000)


def test_server_side_copy_between_buckets(
    s3_bucket: str, s3_env: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = "b-" + uuid.uuid4().hex[:12]
    s3(s3_env).create_bucket(Bucket=other)
    src = get_artifact_repository(f"s3://{s3_bucket}/runs/1/artifacts")
    big = os.urandom(9 * 1024 * 1024)
    src.log_bytes(big, "model/data/big.bin")
    src.log_bytes(b"flavors: {}", "model/MLmodel")
    dest = get_artifact_repository(f"s3://{other}/models/m/1")

    with caplog.at_level(logging.INFO, logger="werkzeug"):  # moto's request log
        src.copy_to(dest, "model")
    requests = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert requests and not [r for r in requests if f"GET /{s3_bucket}/runs" in r], requests  # no bytes came down
    assert [i.path for i in dest.list_artifacts()] == ["MLmodel", "data"]
    assert dest.read_bytes("data/big.bin") == big
    with pytest.raises(NotFound, match="model/missing"):
        src.copy_to(dest, "model/missing")


def test_missing_bucket_is_named(s3_env: str, tmp_path: Path) -> None:
    repo = get_artifact_repository("s3://bucket-that-is-not-there/x")
    for call in (
        lambda: repo.list_artifacts(),
        lambda: repo.read_bytes("a.txt"),
        lambda: repo.log_bytes(b"x", "a.txt"),
        lambda: repo.download_artifacts("a", dst_path=tmp_path),
    ):
        with pytest.raises(NotFound, match="bucket-that-is-not-there"):
            call()


def test_unreachable_endpoint_fails_fast_naming_endpoint_and_setting(
    monkeypatch: pytest.MonkeyPatch, s3_env: str, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("PREFECT_MLOPS_S3_ENDPOINT_URL", dead)
    repo = get_artifact_repository("s3://bucket/prefix")
    src = tmp_path / "f.txt"
    src.write_text("x")
    for call in (lambda: repo.list_artifacts(), lambda: repo.log_artifact(src), lambda: repo.read_bytes("f.txt")):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            call()
        assert time.monotonic() - started < 10
        assert dead in str(info.value) and "PREFECT_MLOPS_S3_ENDPOINT_URL" in str(info.value)


def test_explicit_credentials_from_settings(
    monkeypatch: pytest.MonkeyPatch, s3_bucket: str, s3_env: str
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    settings = MlopsSettings(
        s3_endpoint_url=s3_env,
        s3_region="us-east-1",
        aws_access_key_id=SecretStr("explicit-key"),
        aws_secret_access_key=SecretStr("explicit-secret"),
    )
    repo = get_artifact_repository(f"s3://{s3_bucket}/x", settings=settings)
    repo.log_bytes(b"ok", "a.txt")
    assert repo.read_bytes("a.txt") == b"ok"

    with pytest.raises(InvalidArgument, match="PREFECT_MLOPS_AWS_SECRET_ACCESS_KEY"):
        get_artifact_repository(
            f"s3://{s3_bucket}/x",
            settings=MlopsSettings(s3_endpoint_url=s3_env, aws_access_key_id=SecretStr("only-id")),
        )


def test_keys_escaping_the_download_folder_are_refused(s3_bucket: str, s3_env: str, tmp_path: Path) -> None:
    # Another tool wrote a key with '..' into the bucket: downloading must not follow it.
    s3(s3_env).put_object(Bucket=s3_bucket, Key="root/model/../../../escaped.txt", Body=b"evil")
    repo = get_artifact_repository(f"s3://{s3_bucket}/root")
    dst = tmp_path / "a" / "b"
    with pytest.raises(InvalidArgument, match=r"\.\."):
        repo.download_artifacts("model", dst_path=dst)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_concurrent_writers_share_one_client(s3_bucket: str, s3_env: str) -> None:
    def write(i: int) -> bytes:
        repo = get_artifact_repository(f"s3://{s3_bucket}/c")
        repo.log_bytes(str(i).encode(), f"{i}.txt")
        return repo.read_bytes(f"{i}.txt")

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(write, range(32))) == [str(i).encode() for i in range(32)]
    repos = {id(get_artifact_repository(f"s3://{s3_bucket}/c")._client) for _ in range(3)}  # type: ignore[attr-defined]
    assert len(repos) == 1


def test_s3_uri_must_name_a_bucket(s3_env: str) -> None:
    with pytest.raises(InvalidArgument, match="s3://<bucket>"):
        S3ArtifactRepository("s3:///prefix", settings=MlopsSettings())


# -- local -----------------------------------------------------------------------------


def test_relative_root_is_fixed_at_construction(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    monkeypatch.chdir(tmp_path / "one")
    repo = get_artifact_repository("./mlops-artifacts")
    monkeypatch.chdir(tmp_path / "two")
    repo.log_bytes(b"x", "a.txt")
    assert (tmp_path / "one" / "mlops-artifacts" / "a.txt").read_bytes() == b"x"
    assert not (tmp_path / "two" / "mlops-artifacts").exists()
    assert repo.artifact_uri == str(tmp_path.resolve() / "one" / "mlops-artifacts")


def test_file_uri_root(tmp_path: Path) -> None:
    root = tmp_path / "with space"
    repo = get_artifact_repository(root.as_uri())
    assert isinstance(repo, LocalArtifactRepository)
    assert repo.artifact_uri == root.resolve().as_uri()
    repo.log_bytes(b"x", "a.txt")
    assert (root / "a.txt").read_bytes() == b"x"
    with pytest.raises(InvalidArgument, match="otherhost"):
        get_artifact_repository("file://otherhost/share/x")


def test_symlink_in_the_destination_cannot_lead_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "file-link.txt").symlink_to(outside / "target.txt")
    repo = get_artifact_repository(str(root))
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / "a.txt").write_text("a")

    for call in (
        lambda: repo.log_bytes(b"evil", "link/evil.txt"),
        lambda: repo.log_bytes(b"evil", "file-link.txt"),
        lambda: repo.log_artifact(src_dir / "a.txt", "link"),
        lambda: repo.log_artifacts(src_dir, "link/deeper"),
        lambda: repo.read_bytes("file-link.txt"),
    ):
        with pytest.raises(InvalidArgument, match="outside"):
            call()
    assert list(outside.iterdir()) == []
    repo.delete_artifacts("link")  # removes the link, not what it points to
    assert outside.is_dir() and not (root / "link").exists()


def test_file_and_directory_clash_is_a_conflict(tmp_path: Path) -> None:
    repo = get_artifact_repository(str(tmp_path / "root"))
    repo.log_bytes(b"x", "a")
    with pytest.raises(Conflict, match="a/b.txt"):
        repo.log_bytes(b"y", "a/b.txt")
    assert repo.read_bytes("a") == b"x"


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    repo = get_artifact_repository(str(tmp_path / "root"))
    repo.log_bytes(b"x", "a.txt")
    mode = stat.S_IMODE((tmp_path / "root" / "a.txt").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_missing_local_sources_are_refused(tmp_path: Path) -> None:
    repo = get_artifact_repository(str(tmp_path / "root"))
    with pytest.raises(InvalidArgument, match="does not exist"):
        repo.log_artifact(tmp_path / "nope.txt")
    with pytest.raises(InvalidArgument, match="use log_artifacts"):
        repo.log_artifact(tmp_path)
    with pytest.raises(InvalidArgument, match="does not exist"):
        repo.log_artifacts(tmp_path / "nope")


def test_package_imports_neither_prefect_nor_fastapi() -> None:
    code = (
        "import sys, tracking_plugin.artifacts, tracking_plugin.artifacts.s3;"
        "bad = [m for m in ('prefect', 'fastapi') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
