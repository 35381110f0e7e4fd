"""What a custom model may import (issue 14, item 10): a model without a manifest names its
class in MLmodel (``python_model_class``), and importing a module runs its code. The check
happens before any import: standard-library modules never, unverified models only with
``trusted_classes``."""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tracking_plugin.errors import ModelLoadRefused
from tracking_plugin.models import MANIFEST_FILE, load_model, save_model
from tracking_plugin.models._manifest import write_manifest


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pyfunc_test_models import AddN

    path = tmp_path_factory.mktemp("custom") / "model"
    save_model(AddN(n=2), path, input_example=pd.DataFrame({"a": [1.0]}))
    return path


def rewritten(base: Path, dest: Path, class_ref: str | None, *, manifest: bool) -> Path:
    """A copy of ``base`` naming ``class_ref``; without manifest: a "foreign" model."""
    shutil.copytree(base, dest)
    mlmodel = yaml.safe_load((dest / "MLmodel").read_text())
    if class_ref is not None:
        mlmodel["flavors"]["python_function"]["python_model_class"] = class_ref
    if not manifest:
        mlmodel.pop("prefect_mlops_version", None)
    (dest / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (dest / MANIFEST_FILE).unlink()
    if manifest:
        write_manifest(dest)
    return dest


@pytest.fixture
def side_effect_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """An installed module whose import leaves a mark: (module name, mark file)."""
    name = f"marks_on_import_{uuid.uuid4().hex[:8]}"
    mark = tmp_path / "imported.mark"
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / f"{name}.py").write_text(f"open({str(mark)!r}, 'w').write('ran')\nclass X:\n    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    return name, mark


def test_a_foreign_model_naming_any_module_is_refused_before_importing_it(
    custom_model: Path, tmp_path: Path, side_effect_module: tuple[str, Path]
) -> None:
    module, mark = side_effect_module
    model_dir = rewritten(custom_model, tmp_path / "foreign", f"{module}:X", manifest=False)

    with pytest.raises(ModelLoadRefused, match=f"no sha256 manifest.*{module}:X.*Nothing was imported.*trusted_classes"):
        load_model(model_dir)
    assert not mark.exists() and module not in sys.modules


def test_the_standard_library_is_never_imported_even_with_a_manifest(custom_model: Path, tmp_path: Path) -> None:
    assert "this" not in sys.modules and "antigravity" not in sys.modules
    for i, ref in enumerate(["this:X", "antigravity:X", "os.path:join", "builtins:object"]):
        for manifest in (False, True):
            model_dir = rewritten(custom_model, tmp_path / f"m{i}{manifest}", ref, manifest=manifest)
            with pytest.raises(ModelLoadRefused, match="standard library"):
                load_model(model_dir, trusted_classes=[ref])
    assert "this" not in sys.modules and "antigravity" not in sys.modules


@pytest.mark.parametrize("ref", ["", "not a reference", "os;import os:X", "a:", ":X", "a:b:c", "a..b:X", "x:1y"])
def test_malformed_class_references_are_refused(custom_model: Path, tmp_path: Path, ref: str) -> None:
    model_dir = rewritten(custom_model, tmp_path / "bad", ref, manifest=True)
    with pytest.raises(ModelLoadRefused, match="python_model_class"):
        load_model(model_dir)


def test_a_foreign_model_loads_when_its_class_is_trusted_explicitly(custom_model: Path, tmp_path: Path) -> None:
    model_dir = rewritten(custom_model, tmp_path / "foreign", None, manifest=False)

    with pytest.raises(ModelLoadRefused, match="pyfunc_test_models:AddN"):
        load_model(model_dir)
    model = load_model(model_dir, trusted_classes=["pyfunc_test_models:AddN"])
    assert model.predict(pd.DataFrame({"a": [1.0, 5.0]}))["a"].tolist() == [3.0, 7.0]
    # the model saved by us (with its manifest) needs no opt-in
    assert load_model(custom_model).predict(pd.DataFrame({"a": [0.0]}))["a"].tolist() == [2.0]


def test_a_trusted_class_must_still_be_a_python_model(custom_model: Path, tmp_path: Path) -> None:
    for ref in ("pandas:DataFrame", "tracking_plugin.models:PythonModel"):
        model_dir = rewritten(custom_model, tmp_path / ref.replace(":", "_"), ref, manifest=False)
        with pytest.raises(ModelLoadRefused):
            load_model(model_dir, trusted_classes=[ref])
