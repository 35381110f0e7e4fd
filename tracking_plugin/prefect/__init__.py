"""``@track``: record every Prefect flow run (and, if you like, task run) as a tracking run.

Put ``@track`` **above** ``@flow`` / ``@task`` (it decorates the Prefect object)::

    from prefect import flow, task
    from tracking_plugin.prefect import track

    @track(experiment="churn")
    @flow
    def train(n_estimators: int = 100, max_depth: int = 8) -> dict[str, float]:
        ...
        return {"roc_auc": 0.91}     # a returned mapping of numbers becomes metrics

    @track                           # a child run per task run (one per mapped config)
    @task
    def fit_one(config: dict) -> dict[str, float]: ...

What one flow run records, with no logging code:

- one run keyed by the Prefect flow-run id, in the experiment ``experiment=`` (default:
  the flow's name), named like the flow run; a subflow's run is nested under its
  parent's run, a tracked task's run under its flow's run;
- params: the bound arguments with defaults (DataFrames/arrays as shape, dtypes and a
  content digest; long or odd values summarised, never an error);
- metrics: the numbers of a returned mapping, plus whatever the body logs with the
  fluent API (``log_metric`` etc. need no run id inside the flow or any of its tasks,
  in threads and on Dask workers alike);
- status from the final Prefect state: Completed -> FINISHED, Failed -> FAILED (with the
  state message in the tag ``mlops.state_message``), Crashed/Cancelled -> KILLED;
- tags: Prefect flow-run id/name, flow, deployment, task-run id, git commit and dirty
  flag, user, host, Python and package versions;
- in the Prefect UI: a table artifact (params and final metrics) and a markdown artifact
  naming the tracking run; events ``mlops.run.finished`` / ``mlops.run.failed`` with the
  tracking run as a related resource.

``@track`` under ``@flow``/``@task`` (decorating the plain function) also works, but then
the final status comes from the function's own outcome (no Prefect hooks are attached), so
retries and crashes are not reflected; prefer ``@track`` on top.

The backend comes from ``tracking_uri=``, else the saved block ``block=`` (or
``PREFECT_MLOPS_BLOCK``), else the ``PREFECT_MLOPS_*`` environment. Tracked tasks and
subflows that name none of these, and fluent calls in untracked tasks, use their flow's
backend: through the active run in the flow's process and its threads, and through the
Prefect tag ``mlops-backend-block:<name>`` that a flow tracked with a block puts on the
task runs it creates, in other processes (Dask workers), which load that block. (A
``tracking_uri=`` given in code is not put in a tag, where it could carry a password: such
workers use their environment.) An unreachable backend fails the flow at its start with
:class:`~tracking_plugin.errors.BackendUnavailable`.

The package's parts: ``_decorator`` (``@track``), ``_lifecycle`` (begin/end of a tracked
run, the Prefect hooks), ``_ui`` (Prefect artifacts and events), ``_resolver`` (the current
Prefect run -> its tracking run, for the fluent API) and ``_backends`` (which backend a
tracked run uses, through :mod:`tracking_plugin.backend`, and the per-process caches).
"""

from __future__ import annotations

from tracking_plugin.prefect._backends import (  # noqa: F401 - caches the tests reset
    _EXPERIMENT_IDS,
    _EXPERIMENT_NAMES,
    PREFECT_TAG_BACKEND_BLOCK,
)
from tracking_plugin.prefect._decorator import track
from tracking_plugin.prefect._resolver import current_tracking_run_id
from tracking_plugin.tags import (
    TAG_DEPLOYMENT_ID,
    TAG_DEPLOYMENT_NAME,
    TAG_ERROR,  # noqa: F401 - the tag names stay importable from here
    TAG_FLOW_NAME,
    TAG_FLOW_RUN_ID,
    TAG_FLOW_RUN_NAME,
    TAG_FLOW_RUN_URL,  # noqa: F401
    TAG_PREFECT_STATE,
    TAG_STATE_MESSAGE,
    TAG_TASK_NAME,
    TAG_TASK_RUN_ID,
)

__all__ = [
    "TAG_DEPLOYMENT_ID",
    "TAG_DEPLOYMENT_NAME",
    "TAG_FLOW_NAME",
    "TAG_FLOW_RUN_ID",
    "TAG_FLOW_RUN_NAME",
    "TAG_PREFECT_STATE",
    "TAG_STATE_MESSAGE",
    "TAG_TASK_NAME",
    "TAG_TASK_RUN_ID",
    "current_tracking_run_id",
    "track",
]
