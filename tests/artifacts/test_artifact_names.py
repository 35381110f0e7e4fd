"""Artifact names are kept literally (issue 14, item 12): '%' sequences are characters of
a name, never URL-decoded; traversal in any spelling is still refused. Local folder and S3."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracking_plugin as mlops
from tracking_plugin.artifacts import ArtifactRepository, get_artifact_repository, join_artifact_uri
from tracking_plugin.errors import InvalidArgument


def walk(repo: ArtifactRepository, path: str | None = None) -> dict[str, int | None]:
    files: dict[str, int | None] = {}
    for info in repo.list_artifacts(path):
        if info.is_dir:
            files.update(walk(repo, info.path))
        else:
            files[info.path] = info.file_size
    return files


LITERAL_NAMES = ["100%25.txt", "a%2Fb.txt", "report%20final.txt", "50%.txt", "q?x=1#frag.txt", "%2e%2e.txt", "é 漢字.txt"]


@pytest.mark.parametrize("name", LITERAL_NAMES)
def test_names_with_percent_signs_are_stored_literally(artifact_root: str, tmp_path: Path, name: str) -> None:
    repo = get_artifact_repository(artifact_root)
    repo.log_bytes(b"bytes", name)
    repo.log_bytes(b"nested", f"dir/{name}")
    local = tmp_path / "src" / name
    local.parent.mkdir()
    local.write_bytes(b"local file")
    repo.log_artifact(local, "uploads")
    repo.log_artifacts(local.parent, "tree")

    assert walk(repo) == {name: 5, f"dir/{name}": 6, f"uploads/{name}": 10, f"tree/{name}": 10}
    assert repo.read_bytes(name) == b"bytes"
    downloaded = Path(repo.download_artifacts("dir", tmp_path / "dl"))
    assert [p.name for p in downloaded.iterdir()] == [name]
    assert (downloaded / name).read_bytes() == b"nested"
    # A repository rooted at a URI that names the folder reads the same file.
    sub = get_artifact_repository(join_artifact_uri(repo.artifact_uri, "dir"))
    assert sub.read_bytes(name) == b"nested"


def test_log_text_and_log_artifact_keep_the_names_of_the_issue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from support import reset_tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_MLOPS_TRACKING_URI", f"sqlite:///{tmp_path / 'mlops.db'}")
    monkeypatch.setenv("PREFECT_MLOPS_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    reset_tracking(end_runs=True, dispose_stores=False)
    report = tmp_path / "report%20final.txt"
    report.write_text("final")
    try:
        with mlops.start_run() as run:
            mlops.log_text("a", "100%25.txt")
            mlops.log_text("b", "a%2Fb.txt")
            mlops.log_artifact(report)
        client = mlops.TrackingClient()
        listed = [(f.path, f.is_dir) for f in client.list_artifacts(run.info.run_id)]
        assert listed == [("100%25.txt", False), ("a%2Fb.txt", False), ("report%20final.txt", False)]
        got = Path(client.download_artifacts(run.info.run_id, "100%25.txt", tmp_path / "dl"))
        assert got.name == "100%25.txt" and got.read_text() == "a"
    finally:
        reset_tracking(end_runs=True)


ABSOLUTE = ["/etc/x", "\\etc\\x", "C:\\x", "c:x", "%2fetc/x", "%5Cetc", "file:///etc/x"]
ANYWHERE = [
    "..", "../x", "a/../../x", "..\\x", "a\\..\\..\\x", "%2e%2e/x", "%2E%2E%2Fx", "a/%2e%2e/%2e%2e/x",
    "%252e%252e/x", "%25252e%25252e/x", "..%2fx", "..%5cx", "x\x00y", "a%00b", "line\nbreak", "\ud800.txt",
    "n" * 256, "é" * 128,
]


@pytest.mark.parametrize("bad", ABSOLUTE + ANYWHERE)
def test_traversal_and_unstorable_spellings_are_refused(artifact_root: str, tmp_path: Path, bad: str) -> None:
    repo = get_artifact_repository(artifact_root)
    spellings = [bad, f"ok/{bad}"] if bad in ANYWHERE else [bad]
    src = tmp_path / "f.txt"
    src.write_text("x")
    for spelling in spellings:
        with pytest.raises(InvalidArgument, match="artifact path"):
            repo.log_bytes(b"x", spelling)
        with pytest.raises(InvalidArgument, match="artifact path"):
            repo.log_artifact(src, spelling)
    assert walk(repo) == {}


# Names of 1-3 segments from characters that URL decoding, shells and file systems treat
# specially; anything else (letters of any script) included through `text`.
_SEGMENT = st.text(
    alphabet=st.one_of(st.sampled_from("%25.2Ffe \\?#&+~:;=@$!'\"*<>|[]{}()-_"), st.characters(codec="utf-8")),
    min_size=1,
    max_size=40,
)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(_SEGMENT, min_size=1, max_size=3), data=st.binary(max_size=64))
def test_any_name_round_trips_literally_or_is_refused(artifact_root: str, tmp_path: Path, segments: list[str], data: bytes) -> None:
    name = "/".join(segments)
    repo = get_artifact_repository(join_artifact_uri(artifact_root, uuid.uuid4().hex))
    try:
        repo.log_bytes(data, name)
    except InvalidArgument:
        assert walk(repo) == {}  # a refused name changes nothing
        return
    expected = "/".join(s for s in segments if s not in ("", "."))
    assert walk(repo) == {expected: len(data)}
    assert repo.read_bytes(expected) == data
    local = Path(repo.download_artifacts(expected, tmp_path / uuid.uuid4().hex))
    assert local.read_bytes() == data and local.name == expected.rsplit("/", 1)[-1]


def test_a_path_longer_than_the_store_allows_is_invalid_argument(artifact_root: str) -> None:
    """Each name fits (250 bytes) but the whole path exceeds the file system's or S3's limit:
    a bad argument (not retried), not "artifact store unavailable"."""
    repo = get_artifact_repository(artifact_root)
    too_long = "/".join(["d" * 250] * 20)  # 5,019 bytes: over PATH_MAX (4,096) and S3's 1,024
    with pytest.raises(InvalidArgument, match="longer than this file system allows|S3 allows 1024"):
        repo.log_bytes(b"x", too_long)
    assert walk(repo) == {}
