"""The tracking server: MLflow's REST API over our backend, for the unmodified mlflow client.

    prefect-mlops server --backend-store-uri postgresql+psycopg://mlops@db/mlops \\
        --default-artifact-root s3://bucket/mlops --host 0.0.0.0 --port 5000 --workers 4

then, in any training job, ``mlflow.set_tracking_uri("http://mlops-server:5000")``.

Layout: ``app`` (factory), ``settings``, ``schemas`` (request bodies), ``wire`` (proto
JSON out, artifact URI translation), ``errors`` (MLflow's error JSON and status codes),
``limits`` (body size), ``routes/*`` (one router per area), ``fast`` (the mlflow client's
hot calls without FastAPI's per-request machinery), ``serve`` (uvicorn runner).
It sits above the stores and ``registry_tasks`` and imports nothing above ``serving_tasks``.
"""

from __future__ import annotations

from serving_tasks.tracking_server.app import create_app
from serving_tasks.tracking_server.serve import run_server
from serving_tasks.tracking_server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "run_server"]
