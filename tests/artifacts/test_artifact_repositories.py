"""Behaviour shared by every artifact repository: each test runs on a local folder and on
S3 over HTTP (moto server), through the public ``get_artifact_repository`` entry point."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tracking_plugin.artifacts import ArtifactRepository, get_artifact_repository, join_artifact_uri
from tracking_plugin.entities import FileInfo
from tracking_plugin.errors import InvalidArgument, NotFound


def walk(repo: ArtifactRepository, path: str | None = None) -> dict[str, int | None]:
    """Every file of the repository (path -> size), found through one-level listings."""
    files: dict[str, int | None] = {}
    for info in repo.list_artifacts(path):
        if info.is_dir:
            files.update(walk(repo, info.path))
        else:
            files[info.path] = info.file_size
    return files


def make_tree(base: Path) -> Path:
    """model/MLmodel, model/data/weights.bin, model/data/deep/er/x.txt, README.md"""
    (base / "data" / "deep" / "er").mkdir(parents=True)
    (base / "MLmodel").write_text("flavors: {}\n")
    (base / "data" / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (base / "data" / "deep" / "er" / "x.txt").write_text("deep")
    return base


def tree_of(base: Path) -> dict[str, bytes]:
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.fixture
def repo(artifact_root: str) -> ArtifactRepository:
    return get_artifact_repository(artifact_root)


def test_repository_satisfies_the_protocol(repo: ArtifactRepository, artifact_root: str) -> None:
    assert isinstance(repo, ArtifactRepository)
    assert repo.artifact_uri.rstrip("/").endswith(artifact_root.rstrip("/").rsplit("/", 1)[-1])


def test_log_artifact_and_list_one_level(repo: ArtifactRepository, tmp_path: Path) -> None:
    src = tmp_path / "metrics.csv"
    src.write_text("a,b\n1,2\n")
    repo.log_artifact(src)
    repo.log_artifact(src, artifact_path="reports/daily")

    assert repo.list_artifacts() == [
        FileInfo("metrics.csv", is_dir=False, file_size=8),
        FileInfo("reports", is_dir=True, file_size=None),
    ]
    assert repo.list_artifacts("reports") == [FileInfo("reports/daily", is_dir=True)]
    assert repo.list_artifacts("reports/daily/") == [FileInfo("reports/daily/metrics.csv", False, 8)]
    assert repo.read_bytes("reports/daily/metrics.csv") == b"a,b\n1,2\n"


def test_log_artifacts_recursive_and_download_dir(repo: ArtifactRepository, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    repo.log_artifacts(src, artifact_path="model")
    repo.log_artifacts(src)  # at the root too

    assert walk(repo, "model") == {
        "model/MLmodel": 12,
        "model/data/deep/er/x.txt": 4,
        "model/data/weights.bin": 1024,
    }
    assert [i.path for i in repo.list_artifacts()] == ["MLmodel", "data", "model"]

    local = repo.download_artifacts("model", dst_path=tmp_path / "dl")
    assert Path(local) == tmp_path / "dl" / "model"
    assert tree_of(Path(local)) == tree_of(src)

    whole = Path(repo.download_artifacts())  # default destination: a new temporary folder
    assert set(tree_of(whole)) == {"MLmodel", "data/weights.bin", "data/deep/er/x.txt"} | {
        f"model/{p}" for p in tree_of(src)
    }


def test_download_single_file(repo: ArtifactRepository, tmp_path: Path) -> None:
    repo.log_bytes(b"payload", "a/b/c.bin")
    local = repo.download_artifacts("a/b/c.bin", dst_path=tmp_path / "out")
    assert local == str(tmp_path / "out" / "a" / "b" / "c.bin")
    assert Path(local).read_bytes() == b"payload"


def test_log_bytes_overwrites_and_read_bytes(repo: ArtifactRepository) -> None:
    repo.log_bytes(b"v1", "notes/readme.txt")
    repo.log_bytes(b"version two", "notes/readme.txt")
    assert repo.read_bytes("notes/readme.txt") == b"version two"
    assert walk(repo) == {"notes/readme.txt": 11}  # no temporary files left behind
    with pytest.raises(InvalidArgument, match="file path"):
        repo.log_bytes(b"x", "")


def test_missing_artifacts_raise_not_found_naming_the_uri(repo: ArtifactRepository, tmp_path: Path) -> None:
    repo.log_bytes(b"x", "present.txt")
    with pytest.raises(NotFound, match="absent.txt"):
        repo.read_bytes("absent.txt")
    with pytest.raises(NotFound, match="nowhere"):
        repo.download_artifacts("nowhere", dst_path=tmp_path / "dl")
    dest = get_artifact_repository(str(tmp_path / "dest"))
    with pytest.raises(NotFound, match="nowhere"):
        repo.copy_to(dest, "nowhere")
    assert repo.list_artifacts("nowhere") == []
    assert repo.list_artifacts("present.txt") == []  # a file is not a directory (as MLflow)


def test_empty_repository(repo: ArtifactRepository, tmp_path: Path) -> None:
    assert repo.list_artifacts() == []
    assert tree_of(Path(repo.download_artifacts(dst_path=tmp_path / "dl"))) == {}


def test_delete_file_subtree_and_everything(repo: ArtifactRepository, tmp_path: Path) -> None:
    repo.log_artifacts(make_tree(tmp_path / "src"), "model")
    repo.log_bytes(b"1", "keep.txt")
    repo.log_bytes(b"2", "drop.txt")

    repo.delete_artifacts("drop.txt")
    repo.delete_artifacts("model/data")
    assert walk(repo) == {"keep.txt": 1, "model/MLmodel": 12}
    repo.delete_artifacts("not/there")  # absent: nothing to do
    repo.delete_artifacts()
    assert repo.list_artifacts() == []


BAD_PATHS = [
    "../escape.txt",
    "a/../../escape.txt",
    "/etc/escape.txt",
    "%2e%2e/escape.txt",
    "a/%2E%2E/%2e%2e/escape.txt",
    "%252e%252e/escape.txt",
    "..%2fescape.txt",
    "..\\escape.txt",
    "a\\..\\..\\escape.txt",
    "C:\\escape.txt",
    "file:///etc/escape.txt",
]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_refused_paths_change_nothing(repo: ArtifactRepository, tmp_path: Path, bad: str) -> None:
    repo.log_bytes(b"original", "keep/file.txt")
    before = walk(repo)
    outside_before = sorted(p for p in tmp_path.rglob("*"))
    src = tmp_path / "escape.txt"
    src.write_text("x")
    folder = make_tree(tmp_path / "folder")

    calls = [
        lambda: repo.log_bytes(b"evil", bad),
        lambda: repo.log_artifact(src, artifact_path=bad),
        lambda: repo.log_artifacts(folder, artifact_path=bad),
        lambda: repo.read_bytes(bad),
        lambda: repo.list_artifacts(bad),
        lambda: repo.download_artifacts(bad, dst_path=tmp_path / "dl"),
        lambda: repo.delete_artifacts(bad),
        lambda: repo.copy_to(get_artifact_repository(str(tmp_path / "dest")), bad),
    ]
    for call in calls:
        with pytest.raises(InvalidArgument, match="artifact path"):
            call()

    assert walk(repo) == before
    assert repo.read_bytes("keep/file.txt") == b"original"
    created = set(tmp_path.rglob("*")) - set(outside_before)
    assert created <= {src, *folder.rglob("*"), folder}, created
    assert not list(tmp_path.parent.glob("escape.txt"))


def test_copy_subtree_and_single_file_to_another_root(
    artifact_root: str, tmp_path: Path, s3_bucket: str
) -> None:
    src = get_artifact_repository(artifact_root)
    src.log_artifacts(make_tree(tmp_path / "model"), "model")
    for dest_uri in (str(tmp_path / "registry" / "m" / "1"), f"s3://{s3_bucket}/registry/m/1"):
        dest = get_artifact_repository(dest_uri)
        src.copy_to(dest, "model")
        src.copy_to(dest, "model/data/weights.bin")
        assert walk(dest) == {
            "MLmodel": 12,
            "data/weights.bin": 1024,
            "data/deep/er/x.txt": 4,
            "weights.bin": 1024,
        }
        assert dest.read_bytes("data/deep/er/x.txt") == b"deep"
    assert walk(src, "model") == {  # the source is untouched
        "model/MLmodel": 12,
        "model/data/weights.bin": 1024,
        "model/data/deep/er/x.txt": 4,
    }


def test_copy_to_a_missing_bucket_raises(repo: ArtifactRepository, s3_env: str, tmp_path: Path) -> None:
    repo.log_artifacts(make_tree(tmp_path / "model"), "model")
    dest = get_artifact_repository("s3://no-such-bucket-here/registry")
    with pytest.raises(NotFound, match="no-such-bucket-here"):
        repo.copy_to(dest, "model")


def test_join_artifact_uri() -> None:
    assert join_artifact_uri("s3://b/p", "a/b") == "s3://b/p/a/b"
    assert join_artifact_uri("s3://b", "1", "run") == "s3://b/1/run"
    assert join_artifact_uri("s3://b/p/", "a", None, "") == "s3://b/p/a"
    assert join_artifact_uri("file:///srv/x", "a") == "file:///srv/x/a"
    assert join_artifact_uri(os.path.join("rel", "root"), "a/b") == os.path.join("rel", "root", "a", "b")
    assert join_artifact_uri("s3://b/p") == "s3://b/p"
    with pytest.raises(InvalidArgument, match=r"'\.\.'"):
        join_artifact_uri("s3://b/p", "%2e%2e")


@pytest.mark.parametrize("uri", ["gs://bucket/x", "https://example.com/a", "ftp://h/p", "hdfs:///p"])
def test_unknown_scheme_is_refused_by_name(uri: str) -> None:
    scheme = uri.split(":", 1)[0]
    with pytest.raises(InvalidArgument, match=f"'{scheme}://'"):
        get_artifact_repository(uri)


@pytest.mark.parametrize("module", ["__init__", "base", "local", "s3"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    name = "tracking_plugin.artifacts" + ("" if module == "__init__" else f".{module}")
    result = doctest.testmod(importlib.import_module(name), raise_on_error=True)
    assert result.attempted > 0
