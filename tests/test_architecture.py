"""Dependencies point one way (DESIGN.md), between packages and inside each: the
``import-linter`` contracts in pyproject.toml, run here as ``lint-imports``.

Imports inside functions count like any other (import-linter reads every import
statement), so a lower layer that needs something from above must be handed it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["tracking_plugin", "registry_tasks", "serving_tasks", "flows", "deployments"]
# Where each repository folder installs (flows/ and deployments/ under our namespace).
INSTALLED_AS = {"flows": "prefect_mlops/flows", "deployments": "prefect_mlops/deployments"}
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(project)}  # the copy, ahead of the installed tree
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(project / "pyproject.toml"), "--no-cache"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )


def test_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "added",
    [
        "from tracking_plugin import fluent\n",
        # Hidden inside a function: still an import that climbs a layer.
        "def _current():\n    from tracking_plugin.fluent import current_client\n    return current_client()\n",
    ],
    ids=["module level", "inside a function"],
)
def test_an_import_that_climbs_a_layer_breaks_the_contracts(tmp_path: Path, added: str) -> None:
    for package in PACKAGES:
        target = tmp_path / INSTALLED_AS.get(package, package)
        shutil.copytree(ROOT / package, target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    base = tmp_path / "tracking_plugin" / "artifacts" / "base.py"
    base.write_text(base.read_text() + "\n" + added)

    result = lint_imports(tmp_path)

    assert result.returncode != 0, result.stdout
    assert "tracking_plugin.artifacts.base -> tracking_plugin.fluent" in result.stdout
    assert "1 broken" in result.stdout


def _third_party_imports() -> set[str]:
    import ast

    stdlib = set(sys.stdlib_module_names)
    names: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    ours = {*PACKAGES, "prefect_mlops"}
    return {name for name in names if name not in stdlib and name not in ours and name != "__future__"}


def test_every_third_party_import_is_a_declared_dependency_and_every_dependency_is_used() -> None:
    import importlib.metadata
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    product = [*project["dependencies"], *optional["postgres"], *optional["dask"]]

    def dist_name(requirement: str) -> str:
        return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    declared = {dist_name(r) for r in product}
    by_module = importlib.metadata.packages_distributions()
    imported = {
        name: {d.lower().replace("_", "-") for d in by_module.get(name, [name])}
        for name in _third_party_imports()
    }
    undeclared = sorted(name for name, dists in imported.items() if not dists & declared)
    assert undeclared == [], f"imported but not declared in pyproject.toml: {undeclared}"
    used = set().union(*imported.values())
    # Declared for what they bring at run time, not imported by name (jinja2: through
    # fastapi.templating, for the tracking server's web UI).
    runtime_only = {"uvicorn", "psycopg", "skops", "distributed", "prefect-dask", "pyarrow", "jinja2"}
    unused = sorted(declared - used - runtime_only)
    assert unused == [], f"declared in pyproject.toml but never imported: {unused}"
