"""Every path read from a model's files stays inside the model directory (issue 14, item 2).

Hostile models are built here from a real saved model: the MLmodel is rewritten to name a
file outside the folder (absolute, ``..``, encoded), or a file in the folder is a symlink
leading out, or a FIFO. Each variant is tried as a "foreign" model (no manifest, as MLflow
writes them) and with a manifest rewritten to match (the manifest is not a signature).
Loading and registering must refuse it with ModelLoadRefused naming the path; the secret
file outside must never be read.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracking_plugin.errors import MlopsError, ModelLoadRefused, NotFound
from tracking_plugin.models import MANIFEST_FILE, load_model, save_model
from tracking_plugin.models._manifest import write_manifest
from tracking_plugin.registry import register_model
from tracking_plugin.store.db import Database
from tracking_plugin.store.sql import SqlStore

SECRET = {"columns": ["SECRET"], "data": [["training rows"]]}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    path = tmp_path_factory.mktemp("base") / "model"
    save_model(LinearRegression().fit(X, [2.0, 4.0, 6.0]), path, input_example=X.head(2))
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A JSON file outside any model folder, shaped like an input example."""
    secret = tmp_path / "private" / "secret.json"
    secret.parent.mkdir()
    secret.write_text(json.dumps(SECRET))
    return secret


def hostile_copy(base: Path, dest: Path, edit: Callable[[dict[str, Any], Path], None], *, manifest: bool) -> Path:
    """Copy ``base`` to ``dest``, let ``edit`` change its MLmodel (and files); then either
    drop the manifest (a foreign model) or rewrite it to match."""
    shutil.copytree(base, dest)
    mlmodel = yaml.safe_load((dest / "MLmodel").read_text())
    edit(mlmodel, dest)
    if not manifest:
        mlmodel.pop("prefect_mlops_version", None)
    (dest / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (dest / MANIFEST_FILE).unlink()
    if manifest:
        write_manifest(dest)
    return dest


def example_at(path: str) -> Callable[[dict[str, Any], Path], None]:
    def edit(mlmodel: dict[str, Any], _dest: Path) -> None:
        mlmodel["saved_input_example_info"]["artifact_path"] = path

    return edit


def example_symlink(target: Path) -> Callable[[dict[str, Any], Path], None]:
    def edit(_mlmodel: dict[str, Any], dest: Path) -> None:
        (dest / "input_example.json").unlink()
        (dest / "input_example.json").symlink_to(target)

    return edit


def folder_symlink(target_dir: Path) -> Callable[[dict[str, Any], Path], None]:
    def edit(mlmodel: dict[str, Any], dest: Path) -> None:
        (dest / "examples").symlink_to(target_dir, target_is_directory=True)
        mlmodel["saved_input_example_info"]["artifact_path"] = "examples/secret.json"

    return edit


def flavor_key(flavor: str, key: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    def edit(mlmodel: dict[str, Any], _dest: Path) -> None:
        mlmodel["flavors"][flavor][key] = value

    return edit


def hostile_variants(outside: Path) -> dict[str, tuple[Callable[[dict[str, Any], Path], None], str]]:
    """name -> (edit, text the refusal must contain)"""
    return {
        "absolute example": (example_at(str(outside)), str(outside)),
        "dot-dot example": (example_at("../../private/secret.json"), "../../private/secret.json"),
        "encoded dot-dot example": (example_at("%2e%2e/%2e%2e/private/secret.json"), "%2e%2e"),
        "example symlink": (example_symlink(outside), "outside the model directory"),
        "folder symlink": (folder_symlink(outside.parent), "outside the model directory"),
        "absolute model file": (flavor_key("sklearn", "pickled_model", "/etc/passwd"), "/etc/passwd"),
        "dot-dot pyfunc data": (flavor_key("python_function", "model_path", "../model.skops"), "../model.skops"),
        "absolute conda env": (flavor_key("python_function", "env", {"conda": "/etc/conda.yaml"}), "/etc/conda.yaml"),
        "dot-dot code path": (flavor_key("python_function", "code", "../../code"), "../../code"),
    }


VARIANTS = list(hostile_variants(Path("/x/secret.json")))


@pytest.mark.parametrize("manifest", [False, True], ids=["foreign", "rewritten-manifest"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_a_model_naming_a_path_outside_its_folder_is_refused_at_load(
    saved_model: Path, outside: Path, tmp_path: Path, variant: str, manifest: bool
) -> None:
    edit, expected = hostile_variants(outside)[variant]
    model_dir = hostile_copy(saved_model, tmp_path / "hostile", edit, manifest=manifest)

    with pytest.raises(ModelLoadRefused, match="Refusing the model") as refused:
        model = load_model(model_dir)
        model.input_example  # noqa: B018 - reading it is the attack
    assert expected in refused.value.message
    assert "SECRET" not in refused.value.message


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_model_naming_a_path_outside_its_folder_is_refused_at_registration(
    saved_model: Path, outside: Path, tmp_path: Path, sqlite_store: SqlStore, artifact_root: str, variant: str
) -> None:
    edit, expected = hostile_variants(outside)[variant]
    model_dir = hostile_copy(saved_model, tmp_path / "hostile", edit, manifest=True)

    with pytest.raises(ModelLoadRefused, match="Refusing the model") as refused:
        register_model(str(model_dir), "m", store=sqlite_store, artifact_root=artifact_root)
    assert expected in refused.value.message
    # refused before a version number was taken: nothing recorded, nothing copied
    with pytest.raises(NotFound):
        sqlite_store.get_registered_model("m")
    from tracking_plugin.artifacts import get_artifact_repository

    assert get_artifact_repository(artifact_root).list_artifacts() == []


def test_a_fifo_in_a_model_is_refused_without_blocking(saved_model: Path, tmp_path: Path, sqlite_store: SqlStore) -> None:
    def fifo_example(_mlmodel: dict[str, Any], dest: Path) -> None:
        (dest / "input_example.json").unlink()
        os.mkfifo(dest / "input_example.json")

    model_dir = hostile_copy(saved_model, tmp_path / "fifo", fifo_example, manifest=False)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            load_model(model_dir).input_example  # noqa: B018
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # unblock the reader so the thread ends, then fail
        with open(model_dir / "input_example.json", "w"):
            pass
        pytest.fail("loading the model blocked on a FIFO")
    assert isinstance(outcome[0], ModelLoadRefused) and "not a regular file" in outcome[0].message
    with pytest.raises(ModelLoadRefused, match="not a regular file"):
        register_model(str(model_dir), "m", store=sqlite_store, artifact_root=str(tmp_path / "root"))


def test_symlinks_inside_the_folder_are_fine(saved_model: Path, tmp_path: Path) -> None:
    def inner_link(mlmodel: dict[str, Any], dest: Path) -> None:
        (dest / "examples").mkdir()
        (dest / "input_example.json").rename(dest / "examples" / "input.json")
        (dest / "input_example.json").symlink_to(Path("examples") / "input.json")

    model_dir = hostile_copy(saved_model, tmp_path / "ok", inner_link, manifest=True)
    model = load_model(model_dir)
    assert model.input_example["x"].tolist() == [1.0, 2.0]
    assert model.predict(pd.DataFrame({"x": [4.0]})).round(6).tolist() == [8.0]


# ---------------------------------------------------------------- property


_SEGMENTS = st.sampled_from(
    ["..", ".", "", "input_example.json", "secret.json", "private", "link", "inner", "%2e%2e", "%252e%252e", "..\\..", "C:", "~"]
)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    segments=st.lists(_SEGMENTS, min_size=1, max_size=5),
    absolute=st.booleans(),
    key=st.sampled_from(["example", "pickled_model", "artifact"]),
    manifest=st.booleans(),
)
def test_any_path_in_a_model_stays_inside_or_the_model_is_refused(
    saved_model: Path, outside: Path, tmp_path: Path, segments: list[str], absolute: bool, key: str, manifest: bool
) -> None:
    case = tmp_path / uuid.uuid4().hex
    relative = "/".join(segments)
    path = f"{outside.parent.parent}/{relative}" if absolute else relative

    def edit(mlmodel: dict[str, Any], dest: Path) -> None:
        (dest / "link").symlink_to(outside.parent, target_is_directory=True)  # a way out
        (dest / "inner").symlink_to(dest / "examples", target_is_directory=True)  # a way in
        (dest / "examples").mkdir()
        shutil.copy(dest / "input_example.json", dest / "examples" / "secret.json")
        if key == "example":
            mlmodel["saved_input_example_info"]["artifact_path"] = path
        elif key == "pickled_model":
            mlmodel["flavors"]["sklearn"]["pickled_model"] = path
        else:
            mlmodel["flavors"]["python_function"]["artifacts"] = {"extra": {"path": path}}

    model_dir = hostile_copy(saved_model, case / "model", edit, manifest=manifest)
    db = Database(f"sqlite:///{case / 'mlops.db'}")
    db.upgrade()
    try:
        for attempt in ("load", "register"):
            try:
                if attempt == "load":
                    where = model_dir
                    example = load_model(model_dir).input_example
                else:
                    version = register_model(str(model_dir), "m", store=SqlStore(db), artifact_root=str(case / "root"))
                    assert version.storage_location is not None
                    where = Path(version.storage_location)
                    example = load_model(where).input_example
            except MlopsError as exc:  # refused (or unusable): fine, if nothing leaked
                assert "training rows" not in exc.message
                continue
            # Accepted: the path must be relative and resolve inside the model folder.
            assert not absolute, path
            assert (where / path).resolve().is_relative_to(where.resolve()), path
            if isinstance(example, pd.DataFrame):
                assert "SECRET" not in example.columns
    finally:
        db.dispose()


def test_malformed_mlmodel_entries_are_refused_not_crashed_on(saved_model: Path, tmp_path: Path) -> None:
    edits: list[Callable[[dict[str, Any], Path], None]] = [
        flavor_key("python_function", "artifacts", "not-a-mapping/../x"),
        lambda mlmodel, _dest: mlmodel["flavors"].update(sklearn="just text"),
        lambda mlmodel, _dest: mlmodel.update(saved_input_example_info=["input_example.json"]),
        flavor_key("sklearn", "pickled_model", 42),
    ]
    for i, edit in enumerate(edits):
        model_dir = hostile_copy(saved_model, tmp_path / f"m{i}", edit, manifest=False)
        with pytest.raises(ModelLoadRefused):
            load_model(model_dir).input_example  # noqa: B018


def test_mlmodel_and_manifest_links_out_of_the_folder_are_refused(saved_model: Path, tmp_path: Path) -> None:
    from tracking_plugin.models import ModelMetadata, read_manifest

    for name in ("MLmodel", MANIFEST_FILE):
        model_dir = tmp_path / name / "model"
        shutil.copytree(saved_model, model_dir)
        elsewhere = tmp_path / name / f"real-{name}"
        (model_dir / name).rename(elsewhere)
        (model_dir / name).symlink_to(elsewhere)
        with pytest.raises(ModelLoadRefused, match="outside the model directory"):
            load_model(model_dir)
        with pytest.raises(ModelLoadRefused, match="outside the model directory"):
            ModelMetadata.read(model_dir) if name == "MLmodel" else read_manifest(model_dir)
