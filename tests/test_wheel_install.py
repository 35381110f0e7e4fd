"""The built wheel, installed (not editable) into a fresh virtual environment, from a
Prefect project that has its own ``flows/`` and ``deployments/`` packages: theirs stay
theirs, ours live under ``prefect_mlops``, and the console script and our pipeline work.

The fresh venv installs only our wheel (``--no-deps``); a ``.pth`` file lends it the
suite's already-installed dependencies, so the test takes seconds, not minutes, and still
imports our code from the wheel alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["tracking_plugin", "registry_tasks", "serving_tasks", "flows", "deployments"]
INSTALLED_AS = {"flows": "prefect_mlops/flows", "deployments": "prefect_mlops/deployments"}


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    src = tmp_path_factory.mktemp("src")
    for name in [*SOURCES, "pyproject.toml", "README.md"]:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, src)
    [built] = out.glob("prefect_mlops-*.whl")
    return built


def test_the_wheel_holds_every_package_under_its_installed_name(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in SOURCES:
        for init in (ROOT / source).rglob("__init__.py"):
            relative = init.relative_to(ROOT / source).as_posix()
            installed = f"{INSTALLED_AS.get(source, source)}/{relative}"
            assert installed in names, f"{init.relative_to(ROOT)} is not in the wheel (list it in pyproject.toml)"
    top_level = {name.split("/", 1)[0] for name in names if not name.startswith("prefect_mlops-")}
    assert top_level == {"tracking_plugin", "registry_tasks", "serving_tasks", "prefect_mlops"}
    assert "prefect_mlops/flows/expectations/churn_batch.json" in names
    scenarios = {p.name for p in (ROOT / "flows" / "scenarios").glob("*.yaml")}
    assert scenarios and all(f"prefect_mlops/flows/scenarios/{name}" in names for name in scenarios), scenarios
    assert "prefect_mlops/deployments/prefect.yaml" in names


@pytest.mark.slow
def test_a_project_with_its_own_flows_and_deployments_keeps_them(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    )
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel)
    # Dependencies from the suite's environment, after the fresh venv's own packages. A .pth
    # in a directory that is not a site dir is not read, so the checkout's editable
    # install stays out of this venv.
    (site / "zz-suite-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    project = tmp_path / "project"
    for name in ("flows", "deployments"):
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(f"OWNER = 'the user: {name}'\n")

    check = run(
        python,
        "-c",
        "import flows, deployments\n"
        "import prefect_mlops.flows.ct_pipeline as pipeline\n"
        "import prefect_mlops.deployments.cli as cli\n"
        "import tracking_plugin\n"
        "print(flows.OWNER); print(deployments.OWNER)\n"
        "print(pipeline.__file__); print(tracking_plugin.__file__); print(cli.__file__)\n"
        "print(pipeline.ct_pipeline.name)\n"
        "import sys; print(sys.modules['flows'].__file__)\n",
        cwd=project,
    ).stdout.splitlines()
    assert check[0] == "the user: flows" and check[1] == "the user: deployments"
    for path in check[2:5]:
        assert path.startswith(str(site)), f"{path} is not the wheel's copy in {site}"
    assert check[5] == "ct-pipeline"
    assert check[6] == str(project / "flows" / "__init__.py")

    demo_help = run(env_dir / "bin" / "prefect-mlops", "demo", "--help", cwd=project).stdout
    assert "demo" in demo_help.lower() and "Usage" in demo_help
    serve_help = run(python, "-m", "serving_tasks.cli", "--help", cwd=project).stdout
    assert "--model-uri" in serve_help
