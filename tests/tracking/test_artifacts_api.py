"""Artifacts through the fluent API and the client: every database x local folder and S3."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import tracking_plugin as mlops
from tracking_plugin.errors import InvalidArgument


def _download(run_id: str, path: str, dst: Path) -> Path:
    return Path(mlops.TrackingClient().download_artifacts(run_id, path, dst))


def test_files_and_directories_round_trip(full_env, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.csv").write_text("x,y\n1,2\n")
    single = tmp_path / "report.html"
    single.write_text("<h1>ok</h1>")

    with mlops.start_run() as run:
        mlops.log_artifact(single)
        mlops.log_artifact(single, artifact_path="reports")
        mlops.log_artifacts(src, artifact_path="data")
        mlops.log_artifacts(src)
    client = mlops.TrackingClient()
    run_id = run.info.run_id
    top = client.list_artifacts(run_id)
    assert [(f.path, f.is_dir) for f in top] == [
        ("a.txt", False), ("data", True), ("report.html", False), ("reports", True), ("sub", True)
    ]
    assert [f.path for f in client.list_artifacts(run_id, "data/sub")] == ["data/sub/b.csv"]
    assert client.list_artifacts(run_id, "data/sub")[0].file_size == len("x,y\n1,2\n")

    local = _download(run_id, "data", tmp_path / "dl")
    assert (local / "sub" / "b.csv").read_text() == "x,y\n1,2\n"
    assert (local / "a.txt").read_text() == "alpha"
    assert _download(run_id, "reports/report.html", tmp_path / "dl2").read_text() == "<h1>ok</h1>"
    assert mlops.get_run(run_id).info.artifact_uri.startswith(full_env.artifact_root.rstrip("/"))


def test_log_dict_json_and_yaml(full_env, tmp_path: Path) -> None:
    config = {"model": "rf", "depth": np.int64(5), "weights": np.array([0.5, 0.25]), "nested": {"on": True}}
    with mlops.start_run() as run:
        mlops.log_dict(config, "config.json")
        mlops.log_dict(config, "conf/config.yaml")
        mlops.log_dict({"a": 1}, "other.yml")
        mlops.log_dict({"a": 1}, "no_extension")  # JSON by default, like MLflow
    expected = {"model": "rf", "depth": 5, "weights": [0.5, 0.25], "nested": {"on": True}}
    run_id = run.info.run_id
    assert json.loads(_download(run_id, "config.json", tmp_path / "1").read_text()) == expected
    assert yaml.safe_load(_download(run_id, "conf/config.yaml", tmp_path / "2").read_text()) == expected
    assert yaml.safe_load(_download(run_id, "other.yml", tmp_path / "3").read_text()) == {"a": 1}
    assert json.loads(_download(run_id, "no_extension", tmp_path / "4").read_text()) == {"a": 1}


def test_log_text_and_refused_paths(full_env, tmp_path: Path) -> None:
    with mlops.start_run() as run:
        mlops.log_text("héllo\nwörld", "notes/readme.md")
        with pytest.raises(InvalidArgument, match=r"\.\."):
            mlops.log_text("x", "../escape.txt")
        with pytest.raises(InvalidArgument, match=r"\.\."):
            mlops.log_text("x", "a/%2e%2e/%2e%2e/escape.txt")
        with pytest.raises(InvalidArgument, match="str"):
            mlops.log_text(b"bytes", "b.txt")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="JSON"):
            mlops.log_dict({"f": object()}, "bad.json")
    run_id = run.info.run_id
    assert _download(run_id, "notes/readme.md", tmp_path / "dl").read_text(encoding="utf-8") == "héllo\nwörld"
    assert [f.path for f in mlops.TrackingClient().list_artifacts(run_id)] == ["notes"]


def test_log_figure_and_image(full_env, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    with mlops.start_run() as run:
        mlops.log_figure(fig, "plots/roc.png")
        mlops.log_figure(fig, "plots/roc.svg")
        mlops.log_image(np.zeros((4, 6, 3), dtype=np.uint8), "images/black.png")
        from PIL import Image

        mlops.log_image(Image.new("RGB", (5, 3), (255, 0, 0)), "images/red.jpg")
        with pytest.raises(InvalidArgument, match="extension"):
            mlops.log_figure(fig, "plots/no_extension")
        with pytest.raises(InvalidArgument, match="matplotlib"):
            mlops.log_figure("not a figure", "plots/x.png")
    plt.close(fig)
    run_id = run.info.run_id
    assert _download(run_id, "plots/roc.png", tmp_path / "1").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert b"<svg" in _download(run_id, "plots/roc.svg", tmp_path / "2").read_bytes()
    image = plt.imread(_download(run_id, "images/black.png", tmp_path / "3"))
    assert image.shape[:2] == (4, 6) and float(image[..., :3].max()) == 0.0
    from PIL import Image

    with Image.open(_download(run_id, "images/red.jpg", tmp_path / "4")) as red:
        assert (red.format, red.size) == ("JPEG", (5, 3))


def test_client_artifact_calls_need_a_known_run(full_env, tmp_path: Path) -> None:
    from tracking_plugin.errors import NotFound

    client = mlops.TrackingClient()
    with pytest.raises(NotFound):
        client.log_text("0" * 32, "x", "a.txt")
    run = client.create_run(client.create_experiment("artifacts"))
    client.log_text(run.info.run_id, "x", "a.txt")
    with pytest.raises(NotFound):
        client.download_artifacts(run.info.run_id, "missing.txt", tmp_path)
