"""Dependencies point one way (DESIGN.md): store/artifacts <- tracking API and models <-
registry_tasks <- serving_tasks <- flows <- deployments; the product never imports mlflow."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["tracking_plugin", "registry_tasks", "serving_tasks", "flows", "deployments"]
FORBIDDEN_IN_CORE = {"prefect", "fastapi", "starlette", "uvicorn", "registry_tasks", "serving_tasks", "flows", "deployments"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_layers_only_import_downwards() -> None:
    violations = []
    for index, package in enumerate(LAYERS):
        above = set(LAYERS[index + 1 :])
        for path in _sources(package):
            bad = _imports(path) & above
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert violations == []


def test_store_and_artifacts_import_no_prefect_or_web_framework() -> None:
    violations = []
    for sub in ("store", "artifacts"):
        for path in sorted((ROOT / "tracking_plugin" / sub).rglob("*.py")):
            bad = _imports(path) & FORBIDDEN_IN_CORE
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert violations == []


def test_product_never_imports_mlflow() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in LAYERS
        for path in _sources(package)
        if "mlflow" in _imports(path)
    ]
    assert offenders == []
