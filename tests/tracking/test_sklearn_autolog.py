"""scikit-learn autologging, outside Prefect (a run per fit) and inside a tracked flow."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

import tracking_plugin
import tracking_plugin.sklearn as sk_autolog
from tracking_plugin import fluent
from tracking_plugin.entities import RunStatus
from tracking_plugin.models import load_model
from tracking_plugin.prefect import track

ORIGINAL_LR_FIT = LogisticRegression.__dict__["fit"]


@pytest.fixture
def autolog_on(tracking) -> Iterator[None]:  # type: ignore[no-untyped-def]
    sk_autolog.autolog()
    try:
        yield
    finally:
        sk_autolog.autolog(disable=True)


@pytest.fixture(scope="module")
def binary() -> tuple[pd.DataFrame, np.ndarray]:
    X, y = make_classification(n_samples=200, n_features=4, n_informative=3, n_redundant=0, random_state=0)
    return pd.DataFrame(X, columns=["a", "b", "c", "d"]), y


def only_run(client, experiment: str = "Default"):  # type: ignore[no-untyped-def]
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def test_classifier_fit_records_params_metrics_tags_and_model(tracking, autolog_on, binary) -> None:
    X, y = binary

    model = LogisticRegression(C=0.5, max_iter=300).fit(X, y)

    run = only_run(tracking)
    assert run.info.status is RunStatus.FINISHED  # the run autolog started is ended after fit
    params = run.data.params
    assert params["C"] == "0.5" and params["max_iter"] == "300"
    assert set(model.get_params(deep=True)) <= set(params)
    metrics = run.data.metrics
    predicted = model.predict(X)
    assert metrics["training_accuracy_score"] == pytest.approx((predicted == y).mean())
    for key in ("training_precision_score", "training_recall_score", "training_f1_score",
                "training_log_loss", "training_roc_auc", "training_score"):
        assert key in metrics
    assert run.data.tags["estimator_name"] == "LogisticRegression"
    assert run.data.tags["estimator_class"] == "sklearn.linear_model._logistic.LogisticRegression"

    loaded = load_model(f"runs:/{run.info.run_id}/model")
    assert loaded.signature.inputs.input_names() == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(np.asarray(loaded.predict(X.head(20))).ravel(), predicted[:20])


def test_regressor_fit_records_regression_metrics(tracking, autolog_on) -> None:
    X, y = make_regression(n_samples=150, n_features=3, noise=5.0, random_state=1)

    model = Ridge(alpha=2.0).fit(X, y)

    metrics = only_run(tracking).data.metrics
    residual = y - model.predict(X)
    assert metrics["training_mean_squared_error"] == pytest.approx((residual**2).mean())
    assert metrics["training_root_mean_squared_error"] == pytest.approx(np.sqrt((residual**2).mean()))
    assert metrics["training_mean_absolute_error"] == pytest.approx(np.abs(residual).mean())
    assert metrics["training_r2_score"] == pytest.approx(model.score(X, y))
    assert "training_accuracy_score" not in metrics


def test_grid_search_gives_child_runs_and_best_params_on_the_parent(tracking, binary) -> None:
    X, y = binary
    sk_autolog.autolog(log_models=False, max_tuning_runs=4)
    try:
        search = GridSearchCV(DecisionTreeClassifier(random_state=0), {"max_depth": [1, 2, 3], "min_samples_leaf": [1, 5]}, cv=3)
        search.fit(X, y)
    finally:
        sk_autolog.autolog(disable=True)

    experiment = tracking.get_experiment_by_name("Default")
    runs = tracking.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.info.parent_run_id is None]
    children = [r for r in runs if r.info.parent_run_id == parent.info.run_id]
    assert len(runs) == 5 and len(children) == 4  # 6 candidates, capped at 4 (the best by rank)
    assert parent.data.params["best_max_depth"] == str(search.best_params_["max_depth"])
    assert parent.data.params["best_min_samples_leaf"] == str(search.best_params_["min_samples_leaf"])
    assert parent.data.metrics["best_cv_score"] == pytest.approx(search.best_score_)
    ranks = sorted(search.cv_results_["rank_test_score"])[:4]
    assert sorted(c.data.metrics["rank_test_score"] for c in children) == ranks
    for child in children:
        index = int(child.data.tags["mlops.search.candidate_index"])
        candidate = search.cv_results_["params"][index]
        assert child.data.params == {k: str(v) for k, v in candidate.items()}
        assert child.data.metrics["mean_test_score"] == pytest.approx(search.cv_results_["mean_test_score"][index])
    # The 18 inner fits of the search are not logged as runs of their own.
    assert "cv_results.csv" in [f.path for f in tracking.list_artifacts(parent.info.run_id)]


@task(cache_policy=NO_CACHE)
def fit_pipeline(X: pd.DataFrame, y: np.ndarray) -> float:
    tracking_plugin.autolog(log_models=False)
    try:
        model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    finally:
        tracking_plugin.autolog(disable=True)
    return float(model.score(X, y))


@track(experiment="autolog-in-flow")
@flow
def train_flow(n: int = 200) -> dict[str, float]:
    X, y = make_classification(n_samples=n, n_features=4, random_state=0)
    return {"train_score": fit_pipeline(pd.DataFrame(X, columns=list("abcd")), y)}


def test_inside_a_tracked_flow_autolog_records_into_the_flow_runs_run(tracking, runs_in) -> None:
    train_flow()

    [run] = runs_in(tracking, "autolog-in-flow")  # no extra run: the fit went to the flow's run
    assert run.info.status is RunStatus.FINISHED
    assert run.data.params["n"] == "200"
    assert run.data.params["logisticregression__C"] == "1.0"
    assert run.data.tags["estimator_name"] == "Pipeline"
    assert run.data.metrics["training_accuracy_score"] == pytest.approx(run.data.metrics["train_score"])
    assert tracking.get_experiment_by_name("Default") is None


def test_disable_restores_the_original_methods(tracking) -> None:
    sk_autolog.autolog(log_models=False)
    assert LogisticRegression.__dict__["fit"] is not ORIGINAL_LR_FIT

    sk_autolog.autolog(disable=True)

    assert LogisticRegression.__dict__["fit"] is ORIGINAL_LR_FIT
    LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    assert tracking.get_experiment_by_name("Default") is None or not tracking.search_runs(
        [tracking.get_experiment_by_name("Default").experiment_id]
    )


def test_a_failing_fit_ends_its_run_failed_and_raises(tracking, autolog_on) -> None:
    with pytest.raises(ValueError):
        LogisticRegression().fit([[0.0], [1.0]], [0, 0])  # one class only

    run = only_run(tracking)
    assert run.info.status is RunStatus.FAILED
    assert fluent.active_run() is None


def test_autologging_block_puts_back_what_was_there_before(tracking, binary) -> None:
    X, y = binary
    # Off before: on inside the block (with its options), off again after, even on an error.
    with pytest.raises(RuntimeError, match="inside"):
        with sk_autolog.autologging(log_models=False, extra_tags={"by": "block"}):
            assert LogisticRegression.__dict__["fit"] is not ORIGINAL_LR_FIT
            LogisticRegression(max_iter=300).fit(X, y)
            raise RuntimeError("inside")
    assert LogisticRegression.__dict__["fit"] is ORIGINAL_LR_FIT
    [inside] = tracking.search_runs([tracking.get_experiment_by_name("Default").experiment_id])
    assert inside.data.tags["by"] == "block"
    assert not tracking.list_artifacts(inside.info.run_id)  # log_models=False

    # A user's own autolog: the block's options apply inside, the user's come back after.
    sk_autolog.autolog(extra_tags={"by": "user"})
    try:
        with sk_autolog.autologging(log_models=False, extra_tags={"by": "block"}):
            pass
        LogisticRegression(max_iter=300).fit(X, y)
    finally:
        sk_autolog.autolog(disable=True)
    runs = tracking.search_runs([tracking.get_experiment_by_name("Default").experiment_id])
    after = next(r for r in runs if r.info.run_id != inside.info.run_id)
    assert after.data.tags["by"] == "user"
    assert "model" in {a.path for a in tracking.list_artifacts(after.info.run_id)}

    with pytest.raises(TypeError, match="autolog\\(disable=True\\)"):
        with sk_autolog.autologging(disable=True):
            pass
