"""The documentation's examples run as written, and the public API is complete and light."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from readme_blocks import python_blocks

import tracking_plugin
from tracking_plugin import fluent

REPO_ROOT = Path(__file__).resolve().parents[2]
SECTION = "Tracking API"  # the README section whose examples must run


def test_tracking_docs_examples_run(no_config_env: Path, readme_section) -> None:  # type: ignore[no-untyped-def]
    blocks = python_blocks(readme_section(SECTION))
    assert len(blocks) >= 6
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for index, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md {SECTION}[python block {index}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"python block {index} of README.md {SECTION} failed:\n{block}") from exc
    tmp_path = no_config_env
    # The defaults the docs promise: both in the working directory.
    assert (tmp_path / "mlops.db").is_file()
    assert (tmp_path / "mlops-artifacts").is_dir()
    assert (tmp_path / "downloads" / "config.yaml").read_text() == "threshold: 0.42\n"


def test_all_is_sorted_unique_and_complete() -> None:
    names = tracking_plugin.__all__
    assert names == sorted(names) and len(set(names)) == len(names)
    public = {n for n in vars(tracking_plugin) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(tracking_plugin, n)).__name__ == "module"}
    eager_missing = public - modules - set(names) - {"annotations", "TYPE_CHECKING", "Any"}
    assert eager_missing == set(), "public names missing from __all__"
    for name in fluent.__all__:
        assert name in names, f"fluent.{name} is not re-exported"


def test_every_name_in_all_resolves_including_lazy_ones() -> None:
    for name in tracking_plugin.__all__:
        assert getattr(tracking_plugin, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tracking_plugin.nope  # noqa: B018


def test_import_is_light() -> None:
    code = (
        "import sys, tracking_plugin; "
        "print(sorted(m for m in ('prefect', 'pandas', 'sklearn', 'matplotlib', 'boto3', 'fastapi') "
        "if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fluent_and_client_never_import_prefect() -> None:
    for module in ("fluent.py", "client.py", "_context.py", "_buffer.py"):
        tree = ast.parse((REPO_ROOT / "tracking_plugin" / module).read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
        }
        assert "prefect" not in imported, module
        assert "mlflow" not in imported, module


def test_public_functions_have_docstrings() -> None:
    for name in fluent.__all__:
        assert getattr(fluent, name).__doc__, f"fluent.{name} has no docstring"
    for name, member in vars(tracking_plugin.TrackingClient).items():
        if callable(member) and not name.startswith("_"):
            assert member.__doc__, f"TrackingClient.{name} has no docstring"
