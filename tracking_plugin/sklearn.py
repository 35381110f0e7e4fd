"""scikit-learn autologging: every ``fit`` records params, training metrics and the model.

Names and behaviour follow ``mlflow.sklearn.autolog``::

    import tracking_plugin
    tracking_plugin.autolog()            # same as tracking_plugin.sklearn.autolog()

    RandomForestClassifier(n_estimators=50).fit(X, y)

For each outermost ``fit`` (``fit_transform``, ``fit_predict``) of a scikit-learn estimator:

- params: ``estimator.get_params(deep=True)`` (nested estimators summarised by class);
- tags: ``estimator_name`` (class name) and ``estimator_class`` (full path);
- training metrics on the training data: classifiers ``training_accuracy_score``,
  ``training_precision_score``, ``training_recall_score``, ``training_f1_score``, and
  ``training_log_loss`` / ``training_roc_auc`` when ``predict_proba`` exists; regressors
  ``training_mean_squared_error``, ``training_root_mean_squared_error``,
  ``training_mean_absolute_error``, ``training_r2_score``; both ``training_score``;
- the fitted model at ``model`` with a signature inferred from the training data;
- ``GridSearchCV`` / ``RandomizedSearchCV``: one child run per candidate (the best
  ``max_tuning_runs``, by rank), ``best_<param>`` params and the ``best_cv_score`` metric
  on the parent, and ``cv_results.csv``.

Which run: the active run; inside a ``@track``-ed Prefect flow (or any of its tasks), that
flow run's run; otherwise a new run is started for the fit and ended after it, as MLflow
does. Fits nested inside another fit (a Pipeline's steps, a search's candidates) are not
logged separately. Logging problems are warnings: autologging never breaks a ``fit``.

``autolog(disable=True)`` restores the original methods. ``with autologging(...):`` turns
autologging on for a block and then puts back what was there before (off, or the
caller's own ``autolog(...)`` settings).

The rest of ``mlflow.sklearn``'s surface: :func:`log_model` (``name=`` or a positional
``artifact_path``), :func:`save_model` and :func:`load_model` (the fitted estimator itself,
not a pyfunc wrapper)::

    tracking_plugin.sklearn.log_model(model, "rf_model")
    estimator = tracking_plugin.sklearn.load_model("runs:/<run_id>/rf_model")
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
import math
import threading
import time
from typing import Any, Callable, Iterator

from tracking_plugin import _context, _lineage
from tracking_plugin.entities import Metric, Param, RunStatus, RunTag
from tracking_plugin.errors import Conflict

__all__ = ["autolog", "autologging", "load_model", "log_model", "save_model"]

logger = logging.getLogger(__name__)

_PATCHED_METHODS = ("fit", "fit_transform", "fit_predict")
_SEARCH_CLASSES = ("GridSearchCV", "RandomizedSearchCV", "HalvingGridSearchCV", "HalvingRandomSearchCV")
_EXAMPLE_ROWS = 5


@dataclasses.dataclass(frozen=True)
class _Config:
    log_models: bool = True
    log_input_examples: bool = False
    log_model_signatures: bool = True
    log_training_metrics: bool = True
    max_tuning_runs: int | None = 5
    silent: bool = False
    pos_label: Any = None
    extra_tags: tuple[tuple[str, str], ...] = ()
    serialization_format: str = "skops"


_LOCK = threading.RLock()
_CONFIG: list[_Config | None] = [None]  # None: autologging is off
# (class, method name) -> the original function found in the class's own __dict__.
_ORIGINALS: dict[tuple[type, str], Callable[..., Any]] = {}
_SUBCLASS_HOOK_INSTALLED: list[bool] = [False]
_IN_FIT: contextvars.ContextVar[bool] = contextvars.ContextVar("prefect_mlops_sklearn_in_fit", default=False)


def autolog(
    *,
    log_models: bool = True,
    log_input_examples: bool = False,
    log_model_signatures: bool = True,
    log_training_metrics: bool = True,
    max_tuning_runs: int | None = 5,
    disable: bool = False,
    silent: bool = False,
    pos_label: Any = None,
    extra_tags: dict[str, Any] | None = None,
    serialization_format: str = "skops",
) -> None:
    """Turn scikit-learn autologging on (again, with these options) or off.

    Args:
        log_models: log the fitted estimator as an MLmodel at ``model``.
        log_input_examples: store the first rows of the training data as input example.
        log_model_signatures: infer and store the model signature.
        log_training_metrics: compute metrics on the training data after ``fit``.
        max_tuning_runs: child runs per hyper-parameter search (best first); None: all.
        disable: restore the original ``fit`` methods.
        silent: no warnings from autologging itself.
        pos_label: positive label for binary precision/recall/F1.
        extra_tags: tags added to every autologged run.
        serialization_format: model serialization (``skops``; pickle formats need opt-in).

    >>> import tracking_plugin
    >>> tracking_plugin.autolog(log_models=False)             # doctest: +SKIP
    >>> tracking_plugin.autolog(disable=True)                 # doctest: +SKIP
    """
    if max_tuning_runs is not None and (not isinstance(max_tuning_runs, int) or max_tuning_runs < 0):
        from tracking_plugin.errors import InvalidArgument

        raise InvalidArgument(
            f"max_tuning_runs={max_tuning_runs!r} is not valid: give a number >= 0, or None for all candidates."
        )
    with _LOCK:
        if disable:
            _CONFIG[0] = None
            _unpatch_all()
            return
        _CONFIG[0] = _Config(
            log_models=log_models,
            log_input_examples=log_input_examples,
            log_model_signatures=log_model_signatures,
            log_training_metrics=log_training_metrics,
            max_tuning_runs=max_tuning_runs,
            silent=silent,
            pos_label=pos_label,
            extra_tags=tuple((str(k), str(v)) for k, v in (extra_tags or {}).items()),
            serialization_format=serialization_format,
        )
        _patch_all()


@contextlib.contextmanager
def autologging(**options: Any) -> Iterator[None]:
    """Autolog with ``options`` (those of :func:`autolog`) inside the block, then restore
    the settings from before it: off if it was off, else the caller's own ``autolog(...)``.

    For library code (a training task) that wants autologging without turning off a
    user's. The settings are process-wide, as ``autolog``'s: blocks that overlap in
    several threads restore in the order they exit.

    >>> from tracking_plugin.sklearn import autologging
    >>> with autologging(log_models=False):                   # doctest: +SKIP
    ...     model.fit(X, y)
    """
    if options.get("disable"):
        raise TypeError("autologging() turns autologging on for a block; use autolog(disable=True) to turn it off")
    with _LOCK:
        previous = _CONFIG[0]
        autolog(**options)
    try:
        yield
    finally:
        with _LOCK:
            if previous is None:
                autolog(disable=True)
            else:
                _CONFIG[0] = previous
                _patch_all()


# ---------------------------------------------------------------- patching


def _estimator_classes() -> list[type]:
    """Every scikit-learn estimator class defined so far (classes defined later, when
    their module is imported, are patched by the subclass hook)."""
    from sklearn.base import BaseEstimator

    seen: set[type] = set()
    stack = [BaseEstimator]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
    return [cls for cls in seen if cls.__module__.startswith("sklearn.")]


def _patch_class(cls: type) -> None:
    for name in _PATCHED_METHODS:
        original = cls.__dict__.get(name)
        if original is None or (cls, name) in _ORIGINALS or not callable(original):
            continue
        _ORIGINALS[(cls, name)] = original
        setattr(cls, name, _patched(original))


def _patch_all() -> None:
    for cls in _estimator_classes():
        _patch_class(cls)
    if not _SUBCLASS_HOOK_INSTALLED[0]:
        from sklearn.base import BaseEstimator

        def __init_subclass__(cls: type, **kwargs: Any) -> None:
            super(BaseEstimator, cls).__init_subclass__(**kwargs)  # type: ignore[misc]
            if _CONFIG[0] is not None and cls.__module__.startswith("sklearn."):
                with _LOCK:
                    _patch_class(cls)

        BaseEstimator.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment]
        _SUBCLASS_HOOK_INSTALLED[0] = True


def _unpatch_all() -> None:
    for (cls, name), original in list(_ORIGINALS.items()):
        setattr(cls, name, original)
    _ORIGINALS.clear()
    if _SUBCLASS_HOOK_INSTALLED[0]:
        from sklearn.base import BaseEstimator

        if "__init_subclass__" in BaseEstimator.__dict__:
            delattr(BaseEstimator, "__init_subclass__")
        _SUBCLASS_HOOK_INSTALLED[0] = False


def _patched(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def autologged(self: Any, *args: Any, **kwargs: Any) -> Any:
        config = _CONFIG[0]
        if config is None or _IN_FIT.get():
            return original(self, *args, **kwargs)
        token = _IN_FIT.set(True)
        try:
            return _autologged_fit(config, original, self, args, kwargs)
        finally:
            _IN_FIT.reset(token)

    autologged.__mlops_autolog_original__ = original  # type: ignore[attr-defined]
    return autologged


# ---------------------------------------------------------------- one fit


def _warn(config: _Config, message: str, *args: Any) -> None:
    if not config.silent:
        logger.warning("prefect-mlops autolog: " + message, *args)


def _autologged_fit(
    config: _Config, original: Callable[..., Any], estimator: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    from tracking_plugin import fluent

    try:
        active = fluent.active_run()  # the stack, else the tracked Prefect flow run
        started_here = active is None
        if active is None:
            active = fluent.start_run()
    except Exception as exc:  # noqa: BLE001 - the fit must still happen
        _warn(config, "no run to log %s.fit to: %s", type(estimator).__name__, exc)
        return original(estimator, *args, **kwargs)
    client, run_id = active.client, active.run_id

    _safely(config, "params", lambda: _log_params_and_tags(config, client, run_id, estimator))
    try:
        result = original(estimator, *args, **kwargs)
    except BaseException as exc:
        if started_here:
            status = RunStatus.FAILED if isinstance(exc, Exception) else RunStatus.KILLED
            _safely(config, "end run", lambda: fluent.end_run(status))
        raise
    try:
        X, y = _training_data(args, kwargs)
        sample_weight = kwargs.get("sample_weight")
        if config.log_training_metrics and y is not None:
            _safely(config, "training metrics", lambda: _log_training_metrics(config, client, run_id, estimator, X, y, sample_weight))
        if type(estimator).__name__ in _SEARCH_CLASSES and hasattr(estimator, "cv_results_"):
            _safely(config, "search results", lambda: _log_search(config, client, active, estimator))
        if config.log_models:
            _safely(config, "model", lambda: _log_fitted_model(config, client, active, estimator, X))
    finally:
        if started_here:
            _safely(config, "end run", lambda: fluent.end_run(RunStatus.FINISHED))
    return result


def _safely(config: _Config, what: str, action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - autologging must never break the user's fit
        _warn(config, "could not log the %s: %s", what, exc)


def _training_data(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    X = args[0] if args else kwargs.get("X")
    y = args[1] if len(args) > 1 else kwargs.get("y", kwargs.get("Y"))
    return X, y


def _log_params_and_tags(config: _Config, client: Any, run_id: str, estimator: Any) -> None:
    cls = type(estimator)
    params = _lineage.flatten_params(estimator.get_params(deep=True))
    tags = {
        "estimator_name": cls.__name__,
        "estimator_class": f"{cls.__module__}.{cls.__qualname__}",
        **dict(config.extra_tags),
    }
    batch = [Param(k, v) for k, v in params.items()]
    try:
        client.log_batch(run_id, params=batch, tags=[RunTag(k, v) for k, v in tags.items()])
    except Conflict:
        # The run already holds another fit's params (two fits in one flow run): keep
        # the first values, add the new keys.
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        changed = []
        for param in batch:
            try:
                client.log_batch(run_id, params=[param])
            except Conflict:
                changed.append(param.key)
        if changed:
            _warn(
                config,
                "run %s already has other values for params %s (several fits log to one run); "
                "kept the first values. Start a nested run per fit to keep each one.",
                run_id,
                ", ".join(sorted(changed)[:10]),
            )


def _finite(metrics: dict[str, float]) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and not math.isnan(float(v))]


def _classifier_metrics(config: _Config, estimator: Any, X: Any, y: Any, sample_weight: Any) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics as skm

    y_pred = estimator.predict(X)
    labels = np.unique(np.asarray(y))
    binary = len(labels) <= 2
    average = "binary" if binary else "weighted"
    pos_label = config.pos_label if config.pos_label is not None else (labels[-1] if binary and len(labels) else 1)
    kw: dict[str, Any] = {"sample_weight": sample_weight}
    out = {
        "training_accuracy_score": skm.accuracy_score(y, y_pred, **kw),
        "training_precision_score": skm.precision_score(
            y, y_pred, average=average, zero_division=0, **({"pos_label": pos_label} if binary else {}), **kw
        ),
        "training_recall_score": skm.recall_score(
            y, y_pred, average=average, zero_division=0, **({"pos_label": pos_label} if binary else {}), **kw
        ),
        "training_f1_score": skm.f1_score(
            y, y_pred, average=average, zero_division=0, **({"pos_label": pos_label} if binary else {}), **kw
        ),
    }
    if hasattr(estimator, "predict_proba"):
        try:
            proba = estimator.predict_proba(X)
            classes = getattr(estimator, "classes_", labels)
            out["training_log_loss"] = skm.log_loss(y, proba, labels=classes, **kw)
            if binary and proba.shape[1] == 2:
                out["training_roc_auc"] = skm.roc_auc_score(y, proba[:, 1], **kw)
            elif not binary:
                out["training_roc_auc"] = skm.roc_auc_score(
                    y, proba, multi_class="ovr", average="weighted", labels=classes, **kw
                )
        except (AttributeError, ValueError) as exc:  # e.g. SVC(probability=False), one class
            logger.debug("autolog: no probability metrics: %s", exc)
    return out


def _regressor_metrics(estimator: Any, X: Any, y: Any, sample_weight: Any) -> dict[str, float]:
    from sklearn import metrics as skm

    y_pred = estimator.predict(X)
    mse = skm.mean_squared_error(y, y_pred, sample_weight=sample_weight)
    return {
        "training_mean_squared_error": mse,
        "training_root_mean_squared_error": math.sqrt(mse),
        "training_mean_absolute_error": skm.mean_absolute_error(y, y_pred, sample_weight=sample_weight),
        "training_r2_score": skm.r2_score(y, y_pred, sample_weight=sample_weight),
    }


def _log_training_metrics(config: _Config, client: Any, run_id: str, estimator: Any, X: Any, y: Any, sample_weight: Any) -> None:
    from sklearn.base import is_classifier, is_regressor

    metrics: dict[str, float] = {}
    if is_classifier(estimator) and hasattr(estimator, "predict"):
        metrics.update(_classifier_metrics(config, estimator, X, y, sample_weight))
    elif is_regressor(estimator) and hasattr(estimator, "predict"):
        metrics.update(_regressor_metrics(estimator, X, y, sample_weight))
    if hasattr(estimator, "score"):
        try:
            kw = {"sample_weight": sample_weight} if sample_weight is not None else {}
            metrics["training_score"] = estimator.score(X, y, **kw)
        except Exception as exc:  # noqa: BLE001 - some estimators' score needs other inputs
            logger.debug("autolog: no training_score: %s", exc)
    if metrics:
        client.log_batch(run_id, metrics=_finite(metrics))


def _log_search(config: _Config, client: Any, parent: Any, search: Any) -> None:
    import numpy as np
    import pandas as pd

    parent_id = parent.run_id
    results = search.cv_results_
    params_list = results["params"]
    rank_key = "rank_test_score"
    if rank_key not in results:
        refit = search.refit if isinstance(search.refit, str) else None
        rank_key = f"rank_test_{refit}" if refit else next((k for k in results if k.startswith("rank_test_")), "")
    order = list(np.argsort(results[rank_key], kind="stable")) if rank_key in results else list(range(len(params_list)))
    if config.max_tuning_runs is not None:
        order = order[: config.max_tuning_runs]
    numeric_keys = [
        k for k, v in results.items() if not k.startswith("param") and np.issubdtype(np.asarray(v).dtype, np.number)
    ]
    experiment_id = parent.info.experiment_id
    base_name = type(search.estimator).__name__
    now = int(time.time() * 1000)
    for index in order:
        index = int(index)
        child = client.create_run(
            experiment_id,
            tags={"estimator_name": base_name, "mlops.search.candidate_index": str(index), **dict(config.extra_tags)},
            run_name=f"{base_name}-candidate-{index}",
            parent_run_id=parent_id,
        )
        child_params = _lineage.flatten_params(params_list[index])
        child_metrics = [
            Metric(k, float(results[k][index]), now, 0)
            for k in numeric_keys
            if not math.isnan(float(results[k][index]))
        ]
        client.log_batch(child.info.run_id, metrics=child_metrics, params=[Param(k, v) for k, v in child_params.items()])
        client.set_terminated(child.info.run_id, RunStatus.FINISHED)
    best_params = getattr(search, "best_params_", None)
    parent_params = [Param(f"best_{k}", v) for k, v in _lineage.flatten_params(best_params or {}).items()]
    parent_metrics = []
    best_score = getattr(search, "best_score_", None)
    if best_score is not None and not math.isnan(float(best_score)):
        parent_metrics.append(Metric("best_cv_score", float(best_score), now, 0))
    try:
        client.log_batch(parent_id, metrics=parent_metrics, params=parent_params)
    except Conflict:
        client.log_batch(parent_id, metrics=parent_metrics)
        _warn(config, "run %s already has other best_* params; kept the first.", parent_id)
    frame = pd.DataFrame({k: v for k, v in results.items() if k != "params"})
    client.log_text(parent_id, frame.to_csv(index=False), "cv_results.csv")


def _example_rows(X: Any) -> Any:
    if X is None:
        return None
    if hasattr(X, "iloc"):
        return X.iloc[:_EXAMPLE_ROWS]
    try:
        return X[:_EXAMPLE_ROWS]
    except Exception:  # noqa: BLE001 - sparse or odd containers: no example
        return None


def _log_fitted_model(config: _Config, client: Any, active: Any, estimator: Any, X: Any) -> None:
    from tracking_plugin.models import infer_signature, log_model

    example = _example_rows(X)
    signature = None
    if config.log_model_signatures and example is not None:
        output = None
        for method in ("predict", "transform"):
            if hasattr(estimator, method):
                try:
                    output = getattr(estimator, method)(example)
                    break
                except Exception as exc:  # noqa: BLE001
                    logger.debug("autolog: %s on the example failed: %s", method, exc)
        signature = infer_signature(example, output)
    with _context.using_active_run(active, client):
        log_model(
            estimator,
            "model",
            signature=signature,
            input_example=example if config.log_input_examples else None,
            serialization_format=config.serialization_format,  # type: ignore[arg-type]
        )



# ---------------------------------------------------------------- mlflow.sklearn's model calls


def log_model(
    sk_model: Any,
    artifact_path: str | None = None,
    *,
    name: str | None = None,
    signature: Any = None,
    input_example: Any = None,
    registered_model_name: str | None = None,
    serialization_format: str = "skops",
    pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    pyfunc_predict_fn: str = "predict",
) -> Any:
    """Log a fitted estimator under the active run (``mlflow.sklearn.log_model``).

    The path is MLflow 3's ``name=`` or MLflow 2's ``artifact_path`` (also positional:
    ``log_model(model, "rf_model")``), ``model`` when neither is given. Starts a run when
    none is active; ``registered_model_name`` also registers the model. Returns
    :class:`~tracking_plugin.models.ModelInfo`.
    """
    from tracking_plugin.models import log_model as _log_model
    from tracking_plugin.pyfunc import model_name_argument

    return _log_model(
        sk_model,
        model_name_argument(artifact_path, name),
        signature=signature,
        input_example=input_example,
        registered_model_name=registered_model_name,
        serialization_format=serialization_format,  # type: ignore[arg-type]
        pip_requirements=pip_requirements,
        metadata=metadata,
        pyfunc_predict_fn=pyfunc_predict_fn,
    )


def save_model(
    sk_model: Any,
    path: Any,
    *,
    signature: Any = None,
    input_example: Any = None,
    serialization_format: str = "skops",
    pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    pyfunc_predict_fn: str = "predict",
) -> Any:
    """Write a fitted estimator as an MLflow model directory at ``path`` (``mlflow.sklearn.save_model``)."""
    from tracking_plugin.models import save_model as _save_model

    return _save_model(
        sk_model,
        path,
        signature=signature,
        input_example=input_example,
        serialization_format=serialization_format,  # type: ignore[arg-type]
        pip_requirements=pip_requirements,
        metadata=metadata,
        pyfunc_predict_fn=pyfunc_predict_fn,
    )


def load_model(model_uri: Any, dst_path: Any = None, *, allow_pickle: bool = False) -> Any:
    """The fitted scikit-learn estimator at ``model_uri`` (``mlflow.sklearn.load_model``).

    Same URIs and checks as :func:`tracking_plugin.models.load_model`; a model that is not
    a scikit-learn model (a custom ``PythonModel``) raises ``InvalidArgument``.
    """
    from tracking_plugin.models import load_model as _load_model
    from tracking_plugin.models._mlmodel import SKLEARN_FLAVOR

    model = _load_model(model_uri, allow_pickle=allow_pickle, dst_path=dst_path)
    if SKLEARN_FLAVOR not in model.metadata.flavors:
        from tracking_plugin.errors import InvalidArgument

        raise InvalidArgument(
            f"{model_uri!s} is not a scikit-learn model (flavors: {', '.join(model.metadata.flavors)}); "
            "load it with tracking_plugin.pyfunc.load_model."
        )
    return model.get_raw_model()
