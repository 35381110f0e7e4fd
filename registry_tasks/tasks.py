"""Prefect tasks over the registry: register, gate, promote, roll back.

Each task is thin: it calls :class:`RegistryClient`, logs what it did with
``get_run_logger()``, adds a markdown artifact to the flow run, and returns a typed
result. ``register_model``, ``promote`` and ``rollback`` emit the Prefect events
``mlops.model.registered``, ``mlops.model.promoted`` and ``mlops.model.rolled_back``
(resource ``mlops.model.<name>.<version>`` with the labels ``mlops.model.name`` and
``mlops.model.version``; related ``mlops.model.<name>`` and, added by Prefect, the flow
and task run), which deployment triggers and serving processes react to.

Registration retries when the backend was unavailable (I/O that can fail transiently);
gate evaluation and promotion never retry: their failures are decisions. A refused
promotion or rollback raises :class:`~tracking_plugin.errors.Conflict` after recording
a "refused" artifact, so the flow run shows why.

    from prefect import flow
    from registry_tasks import register_model, evaluate_gate, promote, EvaluationGate

    @flow
    def release(model_uri: str):
        mv = register_model(model_uri, "churn")
        decision = evaluate_gate("churn", mv.version, EvaluationGate("roc_auc", min_improvement=0.005))
        if decision.passed:
            promote("churn", mv.version, reason=decision.reason)
"""

from __future__ import annotations

from typing import Any, Mapping

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tracking_plugin.entities import ModelVersion, Stage
from tracking_plugin.errors import Conflict, MlopsError, is_transient
from tracking_plugin.events import MODEL_PROMOTED, MODEL_REGISTERED, MODEL_ROLLED_BACK, emit

from registry_tasks.client import RegistryClient
from registry_tasks.gates import EvaluationGate, GateDecision

__all__ = [
    "MODEL_PROMOTED",
    "MODEL_REGISTERED",
    "MODEL_ROLLED_BACK",
    "evaluate_gate",
    "promote",
    "register_model",
    "retry_if_transient",
    "rollback",
]



def _registry_client() -> RegistryClient:
    """The registry of the backend in use: the flow's tracking run's (so a flow tracked with
    ``@track(block=...)`` registers in that block's backend), else the configured one."""
    from tracking_plugin.fluent import current_client

    return RegistryClient(settings=current_client().settings)


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    run_id = flow_run.id
    return str(run_id) if run_id else None


def _artifact_key(*parts: object) -> str:
    # Prefect artifact keys: lowercase letters, digits and dashes only.
    text = "-".join(str(p) for p in parts).lower()
    key = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in text)
    while "--" in key:
        key = key.replace("--", "-")
    return key.strip("-")[:100]


def _model_resources(name: str, version: int) -> tuple[dict[str, str], list[dict[str, str]]]:
    resource = {
        "prefect.resource.id": f"mlops.model.{name}.{version}",
        "prefect.resource.name": f"{name} v{version}",
        "mlops.model.name": name,
        "mlops.model.version": str(version),
    }
    related = [
        {
            "prefect.resource.id": f"mlops.model.{name}",
            "prefect.resource.role": "registered-model",
            "prefect.resource.name": name,
        }
    ]
    return resource, related


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only errors that may pass
    (:func:`tracking_plugin.errors.is_transient`); a bad argument fails at once."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classified, not swallowed: the state keeps it
        return is_transient(exc)
    return False


def _cell(value: Any) -> str:
    # Markdown table cells: no pipes or line breaks from free text such as reasons.
    return "-" if value is None or value == "" else str(value).replace("|", "\\|").replace("\n", " ")


def _table(title: str, rows: list[tuple[str, Any]], *, footer: str = "") -> str:
    lines = [f"### {title}", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in rows]
    return "\n".join(lines) + "\n" + (f"\n{footer}" if footer else "")


@task(
    name="register-model",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
)
def register_model(
    model_uri: str,
    name: str,
    *,
    tags: dict[str, str] | None = None,
    description: str | None = None,
) -> ModelVersion:
    """Register ``model_uri`` as the next version of ``name`` (files copied to the registry).

    Emits ``mlops.model.registered`` and adds a ``registration-<name>-<version>`` artifact.
    """
    logger = get_run_logger()
    version = _registry_client().register(model_uri, name, tags=tags, description=description)
    logger.info("Registered %s version %s from %s (%s)", name, version.version, model_uri, version.status.value)
    resource, related = _model_resources(name, version.version)
    emit(MODEL_REGISTERED, resource, related, payload={"source": model_uri, "run_id": version.run_id})
    create_markdown_artifact(
        key=_artifact_key("registration", name, version.version),
        markdown=_table(
            f"{name}: version {version.version} registered",
            [
                ("source", model_uri),
                ("run", version.run_id),
                ("status", version.status.value),
                ("stored at", version.storage_location),
                ("tags", ", ".join(f"{k}={v}" for k, v in sorted(version.tags.items())) or None),
            ],
        ),
        description=f"Registration of {name} v{version.version}",
    )
    return version


@task(name="evaluate-gate", cache_policy=NO_CACHE)
def evaluate_gate(
    name: str,
    version: int,
    gate: EvaluationGate | Mapping[str, Any],
    *,
    candidate_metrics: Mapping[str, float] | None = None,
    champion_metrics: Mapping[str, float] | None = None,
    eval_rows: int | None = None,
    alias: str = "champion",
) -> GateDecision:
    """Evaluate ``gate`` for version ``version`` against the holder of ``alias``; store it.

    ``gate`` is an :class:`EvaluationGate` or its dict form (``EvaluationGate.to_dict()``),
    handy as a deployment parameter.

    Returns the decision (``passed``, ``reason``, per-rule ``outcomes``, ``decision_id``)
    and adds its rule table as the ``gate-<name>-<version>`` artifact. A failed gate is a
    result, not an error: the task completes and ``promote`` will refuse the version.
    """
    logger = get_run_logger()
    decision = _registry_client().evaluate(
        name, version, gate, candidate_metrics=candidate_metrics,
        champion_metrics=champion_metrics, eval_rows=eval_rows, alias=alias,
        prefect_flow_run_id=_flow_run_id(),
    )
    create_markdown_artifact(
        key=_artifact_key("gate", name, version),
        markdown=f"## {name} v{version}\n\n{decision.to_markdown()}\nDecision id: `{decision.decision_id}`\n",
        description=f"Evaluation gate for {name} v{version}: {'passed' if decision.passed else 'failed'}",
    )
    (logger.info if decision.passed else logger.warning)(
        "Gate for %s v%s %s (decision %s): %s",
        name, version, "passed" if decision.passed else "failed", decision.decision_id, decision.reason,
    )
    return decision


@task(name="promote", cache_policy=NO_CACHE)
def promote(
    name: str,
    version: int,
    *,
    alias: str | None = "champion",
    stage: Stage | str | None = None,
    reason: str | None = None,
    actor: str | None = None,
    require_passed_gate: bool = True,
    archive_existing_versions: bool = True,
) -> ModelVersion:
    """Move ``alias`` and/or ``stage`` to ``version`` in one transaction if its gate passed.

    Raises :class:`~tracking_plugin.errors.Conflict` (and moves nothing) when the version
    is not READY or its gate decision failed or is missing. On success emits
    ``mlops.model.promoted`` and adds a ``promotion-<name>-<version>`` artifact with the
    move and the gate's rule table.
    """
    logger = get_run_logger()
    client = _registry_client()
    previous = client.get_by_alias(name, alias) if alias else None
    flow_run_id = _flow_run_id()
    try:
        promoted = client.promote(
            name, version, alias=alias, stage=stage, reason=reason, actor=actor,
            require_passed_gate=require_passed_gate, archive_existing_versions=archive_existing_versions,
            prefect_flow_run_id=flow_run_id,
        )
    except MlopsError as exc:
        logger.error("Promotion of %s v%s refused: %s", name, version, exc.message)
        _refusal_artifact("promotion", name, version, exc, client)
        raise
    stage_text = promoted.current_stage.value if stage is not None else None
    decision = client.get_decision(promoted.gate_decision_id) if promoted.gate_decision_id else None
    resource, related = _model_resources(name, version)
    emit(
        MODEL_PROMOTED, resource, related,
        payload={
            "alias": alias, "stage": stage_text,
            "previous_version": previous.version if previous else None,
            "gate_decision_id": promoted.gate_decision_id, "reason": reason,
        },
    )
    create_markdown_artifact(
        key=_artifact_key("promotion", name, version),
        markdown=_table(
            f"{name}: version {version} promoted",
            [
                ("alias", alias),
                ("stage", stage_text),
                ("previous holder", previous.version if previous else "none"),
                ("reason", reason or (decision.reason if decision else None)),
                ("gate decision", promoted.gate_decision_id),
            ],
            footer=decision.to_markdown() if decision else "",
        ),
        description=f"Promotion of {name} v{version}",
    )
    logger.info(
        "Promoted %s v%s to %s (previous: %s)",
        name, version, " and ".join(filter(None, [f"@{alias}" if alias else None, stage_text])),
        previous.version if previous else "none",
    )
    return promoted


@task(name="rollback", cache_policy=NO_CACHE)
def rollback(
    name: str,
    alias: str = "champion",
    *,
    reason: str | None = None,
    actor: str | None = None,
) -> ModelVersion:
    """Move ``alias`` back to its previous holder; emits ``mlops.model.rolled_back``.

    Conflict when no earlier READY version held the alias (nothing moves).
    """
    logger = get_run_logger()
    client = _registry_client()
    current = client.get_by_alias(name, alias)
    try:
        restored = client.rollback(name, alias, reason=reason, actor=actor, prefect_flow_run_id=_flow_run_id())
    except MlopsError as exc:
        logger.error("Rollback of %s@%s refused: %s", name, alias, exc.message)
        _refusal_artifact("rollback", name, current.version if current else None, exc, client)
        raise
    resource, related = _model_resources(name, restored.version)
    emit(
        MODEL_ROLLED_BACK, resource, related,
        payload={"alias": alias, "from_version": current.version if current else None, "reason": reason or "rollback"},
    )
    create_markdown_artifact(
        key=_artifact_key("rollback", name, alias),
        markdown=_table(
            f"{name}@{alias} rolled back",
            [
                ("alias", alias),
                ("from version", current.version if current else None),
                ("to version", restored.version),
                ("reason", reason or "rollback"),
            ],
        ),
        description=f"Rollback of {name}@{alias}",
    )
    logger.warning(
        "Rolled back %s@%s from v%s to v%s", name, alias, current.version if current else "-", restored.version
    )
    return restored


def _refusal_artifact(action: str, name: str, version: int | None, exc: MlopsError, client: RegistryClient) -> None:
    """A markdown artifact saying why a promotion/rollback was refused (best effort)."""
    decision = None
    if isinstance(exc, Conflict) and version is not None and action == "promotion":
        try:
            decision = client.decision_for(name, version)
        except MlopsError:
            decision = None
    try:
        create_markdown_artifact(
            key=_artifact_key(action, "refused", name, version if version is not None else "none"),
            markdown=_table(
                f"{name}: {action} of version {version if version is not None else '-'} refused",
                [("error", type(exc).__name__), ("why", exc.message)],
                footer=decision.to_markdown() if decision else "",
            ),
            description=f"Refused {action} of {name}",
        )
    except Exception:  # noqa: BLE001 - the refusal itself is what the caller must see
        get_run_logger().warning("Could not record the refused-%s artifact", action)
