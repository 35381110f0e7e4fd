"""Fixtures of the serving tests: real scoring servers and real models.

A server is ``python -m serving_tasks.cli`` started as a subprocess on a free port and
spoken to over HTTP with httpx (``start_scoring_server``). Models are scikit-learn
pipelines saved with ``tracking_plugin.models.save_model``; the alias tests also register
them in a real registry (SQLite file + local artifact root).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pandas as pd
import pytest
from support import free_port


REPO_ROOT = Path(__file__).resolve().parents[2]
# Server startup imports scikit-learn and skops; on a busy 2-core machine that takes a while.
STARTUP_TIMEOUT = float(os.environ.get("MLOPS_TEST_SERVER_STARTUP_TIMEOUT", "240"))
FEATURES = ["plan", "tenure", "charges"]


class ServingServer:
    """One ``python -m serving_tasks.cli`` process; stopped by :meth:`stop`."""

    def __init__(self, model_uri: str, *, workdir: Path, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"server-{self.port}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "serving_tasks.cli", "-m", model_uri, "-p", str(self.port), *(args or [])]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT) -> "ServingServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not healthy after {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


def start_server(model_uri: str, workdir: Path, **kwargs: Any) -> ServingServer:
    server = ServingServer(model_uri, workdir=workdir, **kwargs)
    try:
        return server.wait_healthy()
    except BaseException:
        server.stop()
        raise


# Data and models ------------------------------------------------------------------------


def churn_frame(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """A small churn table: plan (0-2, long), tenure and charges (double)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "plan": rng.integers(0, 3, n),
            "tenure": rng.uniform(0, 72, n).round(3),
            "charges": rng.uniform(20, 120, n).round(2),
        }
    )
    noise = rng.normal(0, 0.5, n)
    y = ((X["charges"] / 40 - X["tenure"] / 24 + (X["plan"] == 2) + noise) > 0.5).astype(int)
    return X, y


def churn_pipeline(X: pd.DataFrame, y: pd.Series, *, C: float = 1.0) -> Any:
    """One-hot plan + logistic regression. Its predict raises on a plan it never saw,
    which is how the tests make a model fail inside predict on schema-valid input."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    prep = ColumnTransformer([("plan", OneHotEncoder(handle_unknown="error"), ["plan"])], remainder="passthrough")
    return Pipeline([("prep", prep), ("clf", LogisticRegression(C=C, max_iter=1000))]).fit(X, y)


# Fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def start_scoring_server() -> Callable[..., ServingServer]:
    """``start(model_uri, workdir, *, env=None, args=None)`` -> a healthy ServingServer
    (the caller stops it)."""
    return start_server


@pytest.fixture(scope="session")
def make_churn_pipeline() -> Callable[..., Any]:
    return churn_pipeline


@pytest.fixture(scope="session")
def churn_data() -> tuple[pd.DataFrame, pd.Series]:
    return churn_frame()


@pytest.fixture(scope="session")
def churn_model_dir(tmp_path_factory: pytest.TempPathFactory, churn_data: tuple[pd.DataFrame, pd.Series]) -> str:
    """The churn pipeline saved with predict_proba as its pyfunc predict: every row gets
    distinct floats, so a response carrying someone else's rows cannot pass for its own."""
    from tracking_plugin.models import save_model

    X, y = churn_data
    path = tmp_path_factory.mktemp("models") / "churn"
    save_model(churn_pipeline(X, y), path, input_example=X.head(3), pyfunc_predict_fn="predict_proba")
    return str(path)


@pytest.fixture(scope="session")
def server_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving")


def _lying_parquet(size: int) -> bytes:
    """One string of ``size`` bytes, plain-encoded and zstd-compressed (a few KB), whose
    footer claims its column chunk uncompresses to 1 MB: only the page header tells."""
    import io
    import struct

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"plan": pa.array(["x" * size])}), buffer, compression="zstd", use_dictionary=False)
    data = bytearray(buffer.getvalue())
    meta = pq.read_metadata(io.BytesIO(bytes(data)))
    footer_length = struct.unpack("<i", bytes(data[-8:-4]))[0]
    start = len(data) - 8 - footer_length

    def compact_i64(n: int) -> bytes:  # Thrift compact: zigzag varint
        n, out = (n << 1) ^ (n >> 63), b""
        while True:
            if n >> 7:
                out, n = out + bytes([(n & 0x7F) | 0x80]), n >> 7
            else:
                return out + bytes([n])

    honest = compact_i64(meta.row_group(0).column(0).total_uncompressed_size)
    lie = compact_i64(2**20 + 7)
    assert len(honest) == len(lie)
    footer = bytes(data[start : start + footer_length])
    assert honest in footer
    data[start : start + footer_length] = footer.replace(honest, lie)
    lying = bytes(data)
    assert pq.read_metadata(io.BytesIO(lying)).row_group(0).column(0).total_uncompressed_size == 2**20 + 7
    return lying


@pytest.fixture(scope="session")
def lying_parquet() -> Callable[[int], bytes]:
    """``lying_parquet(size)``: a Parquet bomb whose footer understates its size."""
    return _lying_parquet
