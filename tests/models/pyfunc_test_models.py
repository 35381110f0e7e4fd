"""Custom PythonModel classes for the model-format tests.

They live in an importable module (not in a test file) because a skops-saved custom model
records its class as ``module:QualName`` and imports it again at load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tracking_plugin.models import PythonModel


class AddN(PythonModel):
    """Adds ``n`` to every column."""

    def __init__(self, n: float) -> None:
        self.n = n

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input + self.n


class ScaledRegressor(PythonModel):
    """Wraps a fitted sklearn regressor; multiplies its output by ``params['scale']``."""

    def __init__(self, estimator, offset: float) -> None:  # type: ignore[no-untyped-def]
        self.estimator = estimator
        self.offset = offset

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        scale = (params or {}).get("scale", 1.0)
        return (self.estimator.predict(model_input) + self.offset) * scale


class VocabularyLookup(PythonModel):
    """Reads a word list from an artifact in load_context; predicts whether words are in it."""

    def __init__(self) -> None:
        self.words: set[str] | None = None

    def load_context(self, context) -> None:  # type: ignore[no-untyped-def]
        self.words = set(Path(context.artifacts["vocabulary"]).read_text().split())

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        assert self.words is not None, "load_context was not called"
        return np.array([word in self.words for word in model_input["word"]])


class WithoutContext(PythonModel):
    """MLflow 3 style: predict(model_input) without the context argument."""

    def predict(self, model_input, params=None):  # type: ignore[no-untyped-def,override]
        return pd.Series(np.arange(len(model_input)), name="row")
