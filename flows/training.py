"""Model building and evaluation for the churn pipeline (plain scikit-learn, no Prefect).

``build_pipeline`` makes preprocessing + classifier as one sklearn ``Pipeline`` so the
logged model scores raw batches; ``evaluate_classifier`` computes the metrics the gate
reads; ``evaluation_figures`` draws the confusion matrix and ROC / PR curves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from tracking_plugin.errors import InvalidArgument

from prefect_mlops.flows.data import CATEGORICAL_COLUMNS, LABEL_COLUMN, NUMERIC_COLUMNS

__all__ = [
    "TrainingConfig",
    "build_pipeline",
    "evaluate_classifier",
    "evaluation_figures",
    "known_categories",
    "split_batch",
]

ModelType = Literal["random_forest", "gradient_boosting", "logistic_regression", "stump"]


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters of one training run (recorded as params by autolog and @track)."""

    model_type: ModelType = "random_forest"
    n_estimators: int = 60
    max_depth: int | None = 8
    min_samples_leaf: int = 5
    test_size: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model_type not in ("random_forest", "gradient_boosting", "logistic_regression", "stump"):
            raise InvalidArgument(
                f"Unknown model_type {self.model_type!r}: use random_forest, gradient_boosting, "
                "logistic_regression or stump."
            )
        if not 0.05 <= self.test_size <= 0.9:
            raise InvalidArgument(f"Invalid test_size {self.test_size!r}: use a share between 0.05 and 0.9.")
        for name, value in (("n_estimators", self.n_estimators), ("min_samples_leaf", self.min_samples_leaf)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"Invalid {name} {value!r}: use an integer >= 1.")
        if self.max_depth is not None and (
            isinstance(self.max_depth, bool) or not isinstance(self.max_depth, int) or self.max_depth < 1
        ):
            raise InvalidArgument(f"Invalid max_depth {self.max_depth!r}: use an integer >= 1, or None for no limit.")


def build_pipeline(config: TrainingConfig) -> Any:
    """Preprocessing (scaling, one-hot encoding) and the classifier as one sklearn Pipeline.

    The logged model therefore scores raw feature columns, which is what the serving
    endpoint receives.

    >>> build_pipeline(TrainingConfig(model_type="stump")).steps[-1][0]
    'model'
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    preprocess = ColumnTransformer(
        [
            ("numeric", StandardScaler(), list(NUMERIC_COLUMNS)),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL_COLUMNS)),
        ]
    )
    if config.model_type == "random_forest":
        model: Any = RandomForestClassifier(
            n_estimators=config.n_estimators, max_depth=config.max_depth,
            min_samples_leaf=config.min_samples_leaf, random_state=config.seed, n_jobs=1,
        )
    elif config.model_type == "gradient_boosting":
        model = GradientBoostingClassifier(
            n_estimators=config.n_estimators, max_depth=config.max_depth or 3, random_state=config.seed
        )
    elif config.model_type == "logistic_regression":
        model = LogisticRegression(max_iter=500)
    else:  # a deliberately weak model: one split
        model = DecisionTreeClassifier(max_depth=1, random_state=config.seed)
    return Pipeline([("preprocess", preprocess), ("model", model)])


def known_categories(pipeline: Any) -> dict[str, list[str]]:
    """The categories a fitted :func:`build_pipeline` pipeline learnt, per column.

    Logged with the model (``metadata["mlops.allowed_values"]``) so that scoring refuses
    any other value with a 400 naming the column, instead of one-hot encoding it as
    "none of the known categories" and answering anyway.
    """
    encoder = pipeline.named_steps["preprocess"].named_transformers_["categorical"]
    return {
        str(column): [str(value) for value in values]
        for column, values in zip(encoder.feature_names_in_, encoder.categories_)
    }


def split_batch(
    frame: pd.DataFrame, *, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Stratified train/test split of a batch into features and label."""
    from sklearn.model_selection import train_test_split

    features = list(NUMERIC_COLUMNS) + list(CATEGORICAL_COLUMNS)
    missing = [c for c in [*features, LABEL_COLUMN] if c not in frame.columns]
    if missing:
        raise InvalidArgument(f"The batch lacks columns {missing}; it cannot be used for training.")
    counts = frame[LABEL_COLUMN].value_counts()
    # A stratified split needs at least two rows of each class (one per side).
    if len(counts) < 2 or counts.min() < 2:
        raise InvalidArgument(
            f"The batch's {LABEL_COLUMN!r} column has class counts {counts.to_dict()}; training and "
            "evaluation need at least two rows of each of the two classes."
        )
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            frame[features], frame[LABEL_COLUMN].astype(int), test_size=test_size,
            random_state=seed, stratify=frame[LABEL_COLUMN],
        )
    except ValueError as exc:  # too few rows for a stratified split of this size
        raise InvalidArgument(
            f"Cannot split a batch of {len(frame)} rows with test_size={test_size}: {exc}"
        ) from exc
    return x_train, x_test, y_train, y_test


def evaluate_classifier(model: Any, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Held-out metrics: roc_auc, pr_auc, log_loss, accuracy, precision, recall, f1."""
    from sklearn import metrics

    proba = np.asarray(model.predict_proba(x))[:, 1]
    predicted = (proba >= 0.5).astype(int)
    return {
        "roc_auc": float(metrics.roc_auc_score(y, proba)),
        "pr_auc": float(metrics.average_precision_score(y, proba)),
        "log_loss": float(metrics.log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "precision": float(metrics.precision_score(y, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(y, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(y, predicted, zero_division=0)),
    }


def evaluation_figures(model: Any, x: pd.DataFrame, y: pd.Series) -> dict[str, Any]:
    """Confusion matrix, ROC and precision-recall curves as matplotlib figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    proba = np.asarray(model.predict_proba(x))[:, 1]
    figures: dict[str, Any] = {}
    fig, ax = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay.from_predictions(y, (proba >= 0.5).astype(int), ax=ax, colorbar=False)
    ax.set_title("Confusion matrix (held-out)")
    figures["confusion_matrix.png"] = fig
    fig, ax = plt.subplots(figsize=(4, 4))
    RocCurveDisplay.from_predictions(y, proba, ax=ax)
    ax.set_title("ROC (held-out)")
    figures["roc_curve.png"] = fig
    fig, ax = plt.subplots(figsize=(4, 4))
    PrecisionRecallDisplay.from_predictions(y, proba, ax=ax)
    ax.set_title("Precision-recall (held-out)")
    figures["pr_curve.png"] = fig
    return figures
