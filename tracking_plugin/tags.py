"""Every tag name we write on runs, in one place.

MLflow's system tag names (``mlflow.utils.mlflow_tags``) where MLflow has one, so
MLflow-aware tools read our runs; ours under ``mlops.``; the Prefect run a tracking run
belongs to under ``prefect.``. This module imports nothing: every layer may use it.
"""

from __future__ import annotations

__all__ = [
    "PACKAGE_TAG_PREFIX",
    "TAG_DEPLOYMENT_ID",
    "TAG_DEPLOYMENT_NAME",
    "TAG_ERROR",
    "TAG_FLOW_NAME",
    "TAG_FLOW_RUN_ID",
    "TAG_FLOW_RUN_NAME",
    "TAG_FLOW_RUN_URL",
    "TAG_GIT_COMMIT",
    "TAG_GIT_DIRTY",
    "TAG_HOST",
    "TAG_NOTE",
    "TAG_PARENT_RUN_ID",
    "TAG_PREFECT_STATE",
    "TAG_PYTHON_VERSION",
    "TAG_QUARANTINE_URI",
    "TAG_RUN_NAME",
    "TAG_SOURCE_NAME",
    "TAG_SOURCE_TYPE",
    "TAG_STATE_MESSAGE",
    "TAG_TASK_NAME",
    "TAG_TASK_RUN_ID",
    "TAG_USER",
]

# MLflow's
TAG_RUN_NAME = "mlflow.runName"
TAG_PARENT_RUN_ID = "mlflow.parentRunId"
TAG_USER = "mlflow.user"
TAG_NOTE = "mlflow.note.content"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_GIT_COMMIT = "mlflow.source.git.commit"

# Lineage of ours
TAG_GIT_DIRTY = "mlops.source.git.dirty"
TAG_HOST = "mlops.host"
TAG_PYTHON_VERSION = "mlops.python_version"
PACKAGE_TAG_PREFIX = "mlops.package."

# The Prefect run a tracking run belongs to, and how it ended
TAG_FLOW_RUN_ID = "prefect.flow_run_id"
TAG_FLOW_RUN_NAME = "prefect.flow_run_name"
TAG_FLOW_NAME = "prefect.flow_name"
TAG_DEPLOYMENT_ID = "prefect.deployment_id"
TAG_DEPLOYMENT_NAME = "prefect.deployment_name"
TAG_TASK_RUN_ID = "prefect.task_run_id"
TAG_TASK_NAME = "prefect.task_name"
TAG_FLOW_RUN_URL = "prefect.flow_run_url"
TAG_PREFECT_STATE = "prefect.state"
TAG_STATE_MESSAGE = "mlops.state_message"
TAG_ERROR = "mlops.error"
# Where validation kept a rejected batch (<artifact root>/quarantine/<time>-<digest>); gc reads it.
TAG_QUARANTINE_URI = "validation.quarantine_uri"
