"""`make run` installs what the product needs and nothing of the test tooling; `make test`
installs the test extras on top."""

from __future__ import annotations

import re
import subprocess
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_ONLY = {"mlflow", "moto", "schemathesis", "dask", "distributed", "prefect-dask", "pytest", "hypothesis"}


def _closure(name: str, extras: set[str]) -> set[str]:
    """Every distribution ``name[extras]`` pulls in, read from the installed metadata."""
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(name, frozenset(extras))]
    while todo:
        dist_name, wanted = todo.pop()
        key = canonicalize_name(dist_name)
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            seen.add(key)  # not installed here (a platform-specific optional); nothing below it
            continue
        seen.add(key)
        for line in dist.requires or []:
            req = Requirement(line)
            env_ok = req.marker is None or any(
                req.marker.evaluate({"extra": extra}) for extra in (wanted or {""})
            )
            if not env_ok:
                continue
            child = canonicalize_name(req.name)
            if child == key:  # prefect-mlops[tests] -> prefect-mlops[postgres,dask]
                todo.append((req.name, frozenset(req.extras)))
            elif child not in seen:
                todo.append((req.name, frozenset(req.extras)))
    return seen


def _make_dry_run(target: str) -> str:
    return subprocess.run(["make", "-n", "-B", target], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout


def test_make_run_installs_the_product_without_test_tooling() -> None:
    commands = _make_dry_run("run")
    [install] = [line for line in commands.splitlines() if "pip install" in line and " -e " in line]
    [spec] = re.findall(r"-e '([^']+)'", install)
    name, extras = spec.split("[")[0], set(spec.partition("[")[2].rstrip("]").split(","))
    assert name == "." and extras == {"postgres"}
    pulled = _closure("prefect-mlops", extras)
    assert {"prefect", "scikit-learn", "psycopg"} <= pulled
    assert pulled & TEST_ONLY == set(), sorted(pulled & TEST_ONLY)


def test_make_test_installs_the_test_extras() -> None:
    commands = _make_dry_run("test")
    assert "-e '.[tests]'" in commands
    assert TEST_ONLY <= _closure("prefect-mlops", {"tests"})
