"""MLflow code runs with only ``import mlflow`` changed to ``import tracking_plugin as mlflow``.

Each script runs in a fresh interpreter in an empty folder, as a user would run it: so
``mlflow.sklearn`` / ``mlflow.pyfunc`` must be reachable after the one import (nothing
imported them before), and ``set_tracking_uri`` must decide where everything lands.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tracking_plugin
from tracking_plugin.client import TrackingClient
from tracking_plugin.entities import Stage

REPO_ROOT = Path(__file__).resolve().parents[2]

# The issue's snippet (the usage pattern MLflow users write), with the import changed and
# a small data set and forest so it stays fast.
SEED_SNIPPET = """
import tracking_plugin as mlflow
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score

X, y = make_classification(n_samples=300, n_features=6, random_state=0)
mlflow.set_tracking_uri("sqlite:///seed.db")
mlflow.set_experiment("customer_churn_modeling")
with mlflow.start_run():
    mlflow.log_param("model_type", "RandomForest")
    model = RandomForestClassifier(n_estimators=10).fit(X, y)
    mlflow.log_metric("accuracy", accuracy_score(y, model.predict(X)))
    mlflow.sklearn.log_model(model, "rf_model")
mlflow.sklearn.autolog()
model.fit(X, y)
run_id = mlflow.last_active_run().info.run_id
mv = mlflow.register_model(f"runs:/{run_id}/model", "ChurnRF")
mlflow.TrackingClient().transition_model_version_stage("ChurnRF", mv.version, "Production")
loaded = mlflow.pyfunc.load_model(f"models:/ChurnRF/{mv.version}")
print("predictions", loaded.predict(X[:5]).tolist())
"""

# The seed's step-by-step: tracking URI, experiment, run, params, metrics, sklearn.log_model
# (MLflow 3's name=, a signature and registration), autolog, register_model, a stage
# transition with MlflowClient, pyfunc.load_model by stage and sklearn.load_model.
STEP_BY_STEP = """
import tracking_plugin as mlflow
import tracking_plugin.sklearn
from tracking_plugin import MlflowClient
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

# 1. Where to record, and the experiment
mlflow.set_tracking_uri("sqlite:///mlflow.db")
experiment = mlflow.set_experiment("customer_churn_modeling")

# 2. Data
X, y = make_classification(n_samples=400, n_features=8, random_state=42)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=42)

# 3. A run: params, metrics, tags, the model with its signature, registered
params = {"n_estimators": 15, "max_depth": 5, "random_state": 42}
with mlflow.start_run(run_name="rf-baseline") as run:
    mlflow.log_params(params)
    model = RandomForestClassifier(**params).fit(X_train, y_train)
    predictions = model.predict(X_test)
    mlflow.log_metric("accuracy", accuracy_score(y_test, predictions))
    mlflow.log_metrics({"f1": f1_score(y_test, predictions)})
    mlflow.set_tag("stage", "baseline")
    signature = mlflow.models.infer_signature(X_train, model.predict(X_train))
    info = mlflow.sklearn.log_model(
        model, name="rf_model", signature=signature, input_example=X_train[:3],
        registered_model_name="ChurnRF",
    )
print("logged", info.model_uri, info.registered_model_version)

# 4. Autologging
mlflow.sklearn.autolog()
with mlflow.start_run(run_name="rf-autolog") as auto_run:
    RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(X_train, y_train)
mlflow.sklearn.autolog(disable=True)

# 5. Register the autologged model
mv = mlflow.register_model(f"runs:/{auto_run.info.run_id}/model", "ChurnRF")

# 6. Promote it with the client
client = MlflowClient()
client.transition_model_version_stage(
    name="ChurnRF", version=mv.version, stage="Production", archive_existing_versions=True
)
[production] = client.get_latest_versions("ChurnRF", stages=["Production"])

# 7. Load it back
champion = mlflow.pyfunc.load_model("models:/ChurnRF/Production")
estimator = mlflow.sklearn.load_model(f"models:/ChurnRF/{mv.version}")
runs = mlflow.search_runs(experiment_ids=[experiment.experiment_id])
print("versions", info.registered_model_version, mv.version, production.version)
print("runs", len(runs))
print("predictions", champion.predict(X_test[:5]).tolist(), estimator.predict(X_test[:5]).tolist())
"""


def _run_script(script: str, folder: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_MLOPS_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _printed(stdout: str, label: str) -> list[str]:
    [line] = [line for line in stdout.splitlines() if line.startswith(label + " ")]
    return line[len(label) + 1 :].split(" ", 1) if label != "predictions" else [line[len(label) + 1 :]]


def test_the_issue_snippet_runs_with_only_the_import_changed(tmp_path: Path) -> None:
    stdout = _run_script(SEED_SNIPPET, tmp_path)

    [predictions] = _printed(stdout, "predictions")
    assert len(ast.literal_eval(predictions)) == 5
    # set_tracking_uri decided where everything went, TrackingClient() included.
    assert (tmp_path / "seed.db").is_file()
    assert not (tmp_path / "mlops.db").exists()
    client = TrackingClient(f"sqlite:///{tmp_path / 'seed.db'}")
    version = client.get_model_version("ChurnRF", 1)
    assert version.current_stage is Stage.PRODUCTION
    first, second = client.search_runs([client.get_experiment_by_name("customer_churn_modeling").experiment_id])
    runs = {r.data.params.get("model_type"): r for r in (first, second)}
    assert "accuracy" in runs["RandomForest"].data.metrics
    assert [a.path for a in client.list_artifacts(runs["RandomForest"].info.run_id)] == ["rf_model"]
    assert runs[None].data.tags["estimator_name"] == "RandomForestClassifier"
    assert version.run_id == runs[None].info.run_id


@pytest.mark.slow
def test_the_seed_step_by_step_runs_with_only_the_import_changed(tmp_path: Path) -> None:
    stdout = _run_script(STEP_BY_STEP, tmp_path)

    assert "versions 1 2 2" in stdout
    assert "runs 2" in stdout
    [predictions] = _printed(stdout, "predictions")
    pyfunc_predictions, sklearn_predictions = predictions.split("] [")
    assert pyfunc_predictions + "]" == "[" + sklearn_predictions
    client = TrackingClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_model_version("ChurnRF", 2).current_stage is Stage.PRODUCTION
    assert client.get_model_version("ChurnRF", 1).current_stage is Stage.NONE
    assert not (tmp_path / "mlops.db").exists()


def test_mlflow_module_surface_is_reachable_after_one_import() -> None:
    code = textwrap.dedent(
        """
        import sys, tracking_plugin as mlflow
        assert "tracking_plugin.sklearn" not in sys.modules
        names = [
            mlflow.sklearn.autolog, mlflow.sklearn.log_model, mlflow.sklearn.save_model,
            mlflow.sklearn.load_model, mlflow.pyfunc.load_model, mlflow.pyfunc.log_model,
            mlflow.pyfunc.PythonModel, mlflow.models.infer_signature, mlflow.register_model,
            mlflow.get_artifact_uri,
        ]
        assert mlflow.MlflowClient is mlflow.TrackingClient
        print(type(mlflow.sklearn).__name__, type(mlflow.pyfunc).__name__, type(mlflow.models).__name__)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["module", "module", "module"]
    assert {"MlflowClient", "models", "pyfunc", "register_model", "sklearn"} <= set(tracking_plugin.__all__)


def test_log_model_takes_mlflow_2_and_3_spellings_of_the_path(sqlite_env: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    import tracking_plugin as mlflow

    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    with mlflow.start_run() as run:
        positional = mlflow.sklearn.log_model(model, "positional")
        keyword = mlflow.sklearn.log_model(model, artifact_path="keyword")
        mlflow3 = mlflow.sklearn.log_model(model, name="mlflow3")
        default = mlflow.sklearn.log_model(model)
        with pytest.raises(mlflow.errors.InvalidArgument, match="only name="):
            mlflow.sklearn.log_model(model, artifact_path="a", name="b")
    assert [positional.artifact_path, keyword.artifact_path, mlflow3.artifact_path, default.artifact_path] == [
        "positional", "keyword", "mlflow3", "model"
    ]
    paths = {a.path for a in mlflow.TrackingClient().list_artifacts(run.info.run_id)}
    assert paths == {"positional", "keyword", "mlflow3", "model"}
    loaded = mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/mlflow3")
    assert type(loaded) is LogisticRegression and loaded.predict([[3.0]]).tolist() == [1]


def test_pyfunc_log_model_with_a_python_model(sqlite_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    import tracking_plugin as mlflow

    # A custom model's class is imported again at load: it lives in an importable module.
    monkeypatch.syspath_prepend(str(REPO_ROOT / "tests" / "models"))
    from pyfunc_test_models import AddN

    assert issubclass(AddN, mlflow.pyfunc.PythonModel)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="add_n", python_model=AddN(2))
        legacy = mlflow.pyfunc.log_model("add_n_v2", python_model=AddN(3))
    frame = pd.DataFrame({"x": [1, 2]})
    assert mlflow.pyfunc.load_model(info.model_uri).predict(frame)["x"].tolist() == [3, 4]
    assert mlflow.pyfunc.load_model(legacy.model_uri).predict(frame)["x"].tolist() == [4, 5]
    with pytest.raises(mlflow.errors.InvalidArgument, match="python_model="):
        mlflow.pyfunc.log_model(name="nothing")
    with pytest.raises(mlflow.errors.InvalidArgument, match="not a scikit-learn model"):
        mlflow.sklearn.load_model(info.model_uri)


def test_clients_without_a_uri_follow_set_tracking_uri(sqlite_env: Path, tmp_path: Path) -> None:
    from registry_tasks import RegistryClient

    import tracking_plugin as mlflow

    other = tmp_path / "elsewhere.db"
    mlflow.set_tracking_uri(f"sqlite:///{other}")
    try:
        assert mlflow.TrackingClient().tracking_uri == mlflow.get_tracking_uri() == f"sqlite:///{other}"
        assert RegistryClient().tracking_uri == f"sqlite:///{other}"
        mlflow.TrackingClient().create_experiment("follows")
        assert TrackingClient(f"sqlite:///{other}").get_experiment_by_name("follows") is not None
        # An explicit URI still wins.
        explicit = tmp_path / "explicit.db"
        assert TrackingClient(f"sqlite:///{explicit}").tracking_uri == f"sqlite:///{explicit}"
    finally:
        mlflow.set_tracking_uri(None)
    assert mlflow.TrackingClient().tracking_uri != f"sqlite:///{other}"
