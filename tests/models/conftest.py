"""Small fitted models and frames shared by the model-format tests (kept tiny: fast)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# Custom PythonModel classes are imported by name when a skops-saved model loads, so their
# module must be importable; the suite runs with --import-mode=importlib (no sys.path change).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="session")
def numeric_frame() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120), "c": rng.integers(0, 5, size=120)})
    y_class = (X["a"] + X["b"] > 0).astype(int).to_numpy()
    y_reg = (2 * X["a"] - X["b"] + 0.5 * X["c"]).to_numpy()
    return X, y_class, y_reg


@pytest.fixture(scope="session")
def classifier(numeric_frame):  # type: ignore[no-untyped-def]
    from sklearn.ensemble import RandomForestClassifier

    X, y, _ = numeric_frame
    return RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(X, y)


@pytest.fixture(scope="session")
def regressor(numeric_frame):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import Ridge

    X, _, y = numeric_frame
    return Ridge(alpha=0.1).fit(X, y)


@pytest.fixture(scope="session")
def mixed_frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(1)
    n = 150
    X = pd.DataFrame(
        {
            "age": rng.integers(18, 80, size=n),
            "income": rng.normal(50_000, 10_000, size=n),
            "city": rng.choice(["paris", "lyon", "nice"], size=n),
            "plan": rng.choice(["basic", "pro"], size=n),
        }
    )
    y = ((X["income"] > 50_000) ^ (X["plan"] == "pro")).astype(int).to_numpy()
    return X, y


@pytest.fixture(scope="session")
def pipeline(mixed_frame):  # type: ignore[no-untyped-def]
    """ColumnTransformer (scaler + one-hot) feeding a small gradient-boosting classifier."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = mixed_frame
    pre = ColumnTransformer(
        [("num", StandardScaler(), ["age", "income"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"])]
    )
    return Pipeline([("pre", pre), ("clf", GradientBoostingClassifier(n_estimators=10, random_state=0))]).fit(X, y)
