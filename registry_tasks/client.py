"""``RegistryClient``: the registry as one object, with gates and an audit trail.

The transactional rules (version numbering, archive-on-promote, alias moves, the audit
log) live in the store; this facade adds the policy: evaluating an :class:`EvaluationGate`
against the current champion and storing the decision next to the candidate version, so
that :meth:`RegistryClient.promote` can refuse a version whose gate did not pass.

>>> registry = RegistryClient()                                    # doctest: +SKIP
>>> mv = registry.register("runs:/<run_id>/model", "churn")        # doctest: +SKIP
>>> decision = registry.evaluate("churn", mv.version, gate,        # doctest: +SKIP
...                              candidate_metrics={"roc_auc": 0.91}, eval_rows=2000)
>>> registry.promote("churn", mv.version)   # Conflict unless the decision passed  # doctest: +SKIP
>>> registry.rollback("churn")              # champion back to the previous holder  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from tracking_plugin.entities import ModelVersion, Stage, TransitionRecord
from tracking_plugin.errors import InvalidArgument, NotFound
from tracking_plugin.registry import register_model
from tracking_plugin import backend
from tracking_plugin._lineage import user_name
from tracking_plugin.settings import MlopsSettings
from tracking_plugin.store.base import Store
from tracking_plugin.urls import redact_uri

from registry_tasks.gates import EvaluationGate, GateDecision, RuleOutcome

__all__ = ["RegistryClient"]

_GATE_PASSED_REASON = "evaluation gate passed"
_NO_GATE_REASON = "promoted without an evaluation gate (require_passed_gate=False)"


class RegistryClient:
    """Registry operations on the configured backend (settings or explicit URIs).

    The backend defaults to the configured one (``set_tracking_uri()``, else the block
    ``PREFECT_MLOPS_BLOCK`` names, else ``PREFECT_MLOPS_TRACKING_URI`` and
    ``PREFECT_MLOPS_ARTIFACT_ROOT``: :func:`tracking_plugin.backend.resolve_settings`); ``settings``
    gives a whole one (e.g. ``MlopsBackend.load(name).to_settings()``, or a tracking
    client's ``.settings``). Registered files go to ``<artifact_root>/registry``.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        artifact_root: str | None = None,
        settings: MlopsSettings | None = None,
    ) -> None:
        self.settings = settings = backend.resolve_settings(
            tracking_uri or None, artifact_root or None, settings=settings
        )
        self.tracking_uri = settings.tracking_uri
        self.artifact_root = settings.artifact_root
        self._store: Store | None = None
        self._store_pid = 0
        self.store  # connect (and migrate) now: a bad backend fails here, as before

    @property
    def store(self) -> Store:
        """The backend's store, shared with the tracking clients of the same database (a
        forked child gets its own)."""
        store = self._store
        if store is None or self._store_pid != os.getpid():
            self._store_pid = os.getpid()
            store = self._store = backend.acquire_store(self.settings)
        return store

    def close(self) -> None:
        """Release the database connections (shared with other clients until the last one
        closes); the client reconnects if used again. Also a context manager."""
        store, self._store = self._store, None
        if store is not None and self._store_pid == os.getpid():
            backend.release_store(store)

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"RegistryClient(tracking_uri={redact_uri(self.tracking_uri)!r}, "
            f"artifact_root={redact_uri(self.artifact_root)!r})"
        )

    # ------------------------------------------------------------ versions

    def register(
        self,
        model_uri: str,
        name: str,
        *,
        tags: dict[str, str] | None = None,
        description: str | None = None,
    ) -> ModelVersion:
        """Create the next version of ``name`` from ``model_uri``, copying its files.

        ``model_uri`` is ``runs:/<run_id>/<path>``, ``models:/...``, ``s3://...`` or a
        local model directory. The version is READY when this returns.
        """
        return register_model(
            model_uri, name, tags=tags, description=description,
            store=self.store, artifact_root=self.artifact_root, settings=self.settings,
        )

    def get_version(self, name: str, version: int) -> ModelVersion:
        """One version of ``name``; NotFound if it does not exist."""
        return self.store.get_model_version(name, version)

    def get_by_alias(self, name: str, alias: str = "champion") -> ModelVersion | None:
        """The version holding ``alias``, or None when no version holds it (or no model)."""
        try:
            return self.store.get_model_version_by_alias(name, alias)
        except NotFound:
            return None

    def run_metrics(self, version: ModelVersion) -> dict[str, float]:
        """Latest metrics of the run that produced ``version`` (empty if it has no run)."""
        if not version.run_id:
            return {}
        try:
            return dict(self.store.get_run(version.run_id).data.metrics)
        except NotFound:
            return {}

    def _recorded_metrics(self, version: ModelVersion) -> dict[str, float]:
        """Run metrics, else the candidate metrics of the version's own gate decision."""
        metrics = self.run_metrics(version)
        if metrics or not version.gate_decision_id:
            return metrics
        try:
            return dict(self.store.get_gate_decision(version.gate_decision_id).details.get("candidate_metrics") or {})
        except NotFound:
            return {}

    # --------------------------------------------------------------- gates

    def evaluate(
        self,
        name: str,
        version: int,
        gate: EvaluationGate | Mapping[str, Any],
        *,
        candidate_metrics: Mapping[str, float] | None = None,
        champion_metrics: Mapping[str, float] | None = None,
        eval_rows: int | None = None,
        alias: str = "champion",
        prefect_flow_run_id: str | None = None,
    ) -> GateDecision:
        """Evaluate ``gate`` for a candidate against the holder of ``alias`` and store it.

        Metrics default to the latest metrics of each version's training run (for the
        champion, when it has no run metrics: the metrics its own gate decision used); pass
        both explicitly to compare models evaluated on the same fresh data. The stored
        decision becomes the version's ``gate_decision_id``; the returned decision carries
        its id.
        """
        if isinstance(gate, Mapping):  # e.g. a deployment parameter: EvaluationGate.to_dict()
            gate = EvaluationGate.from_dict(gate)
        elif not isinstance(gate, EvaluationGate):
            raise InvalidArgument(
                f"Invalid gate {gate!r}: pass an EvaluationGate or its dict form, e.g. "
                "{'primary_metric': 'roc_auc', 'min_improvement': 0.005}."
            )
        candidate = self.store.get_model_version(name, version)
        champion = self.get_by_alias(name, alias)
        if champion is not None and champion.version == candidate.version:
            champion = None  # re-evaluating the champion itself: thresholds decide
        cand_metrics = dict(candidate_metrics) if candidate_metrics is not None else self.run_metrics(candidate)
        champ_metrics: dict[str, float] | None = None
        if champion is not None:
            champ_metrics = (
                dict(champion_metrics) if champion_metrics is not None else self._recorded_metrics(champion)
            )
        decision = gate.evaluate(
            cand_metrics,
            champ_metrics,
            eval_rows=eval_rows,
            candidate_version=candidate.version,
            champion_version=champion.version if champion else None,
        )
        stored = self.store.record_gate_decision(
            name, candidate.version, passed=decision.passed, reason=decision.reason,
            details=decision.to_dict(), prefect_flow_run_id=prefect_flow_run_id,
        )
        return dataclasses.replace(decision, decision_id=stored.id)

    def get_decision(self, decision_id: str) -> GateDecision:
        """A stored gate decision, rebuilt as a :class:`GateDecision` (NotFound if unknown)."""
        stored = self.store.get_gate_decision(decision_id)
        return _decision_from_details(stored.details, decision_id=stored.id, passed=stored.passed, reason=stored.reason)

    def decision_for(self, name: str, version: int) -> GateDecision | None:
        """The gate decision linked to a version (its latest evaluation), or None."""
        decision_id = self.store.get_model_version(name, version).gate_decision_id
        return self.get_decision(decision_id) if decision_id else None

    # ----------------------------------------------------- stage and alias

    def promote(
        self,
        name: str,
        version: int,
        *,
        alias: str | None = "champion",
        stage: Stage | str | None = None,
        archive_existing_versions: bool = True,
        require_passed_gate: bool = True,
        reason: str | None = None,
        actor: str | None = None,
        prefect_flow_run_id: str | None = None,
    ) -> ModelVersion:
        """Move ``alias`` (and/or ``stage``) to ``version`` in one transaction.

        Raises :class:`~tracking_plugin.errors.Conflict` when the version is not READY or
        (``require_passed_gate``) its latest gate decision did not pass; then nothing
        moves. Each change is an audit row with ``actor``, ``reason``, the flow-run id and
        the gate decision id (see :meth:`history`).
        """
        if reason is None:
            reason = _GATE_PASSED_REASON if require_passed_gate else _NO_GATE_REASON
        return self.store.promote(
            name, version, alias=alias, stage=_stage(stage),
            archive_existing_versions=archive_existing_versions,
            require_passed_gate=require_passed_gate, actor=actor or _actor(),
            reason=reason, prefect_flow_run_id=prefect_flow_run_id,
        )

    def rollback(
        self,
        name: str,
        alias: str = "champion",
        *,
        reason: str | None = None,
        actor: str | None = None,
        prefect_flow_run_id: str | None = None,
    ) -> ModelVersion:
        """Move ``alias`` back to the version that held it before; returns that version.

        Conflict when no earlier READY version held the alias; NotFound when it is unset.
        """
        return self.store.rollback_alias(
            name, alias, actor=actor or _actor(), reason=reason or "rollback",
            prefect_flow_run_id=prefect_flow_run_id,
        )

    def history(self, name: str) -> list[TransitionRecord]:
        """Every stage change and alias move of ``name``, oldest first."""
        return self.store.get_model_history(name)


def _stage(stage: Stage | str | None) -> Stage | None:
    return None if stage is None else Stage.parse(stage)


def _decision_from_details(details: Mapping[str, Any], *, decision_id: str, passed: bool, reason: str) -> GateDecision:
    """Rebuild a decision from the JSON stored by :meth:`RegistryClient.evaluate`."""
    outcome_fields = {f.name for f in dataclasses.fields(RuleOutcome)}
    outcomes = tuple(
        RuleOutcome(**{k: _number(v) if k == "observed" else v for k, v in dict(o).items() if k in outcome_fields})
        for o in details.get("outcomes") or ()
    )
    return GateDecision(
        passed=passed,
        reason=reason,
        outcomes=outcomes,
        candidate_metrics=dict(details.get("candidate_metrics") or {}),
        champion_metrics=details.get("champion_metrics"),
        eval_rows=details.get("eval_rows"),
        gate=dict(details.get("gate") or {}),
        candidate_version=details.get("candidate_version"),
        champion_version=details.get("champion_version"),
        decision_id=decision_id,
    )


def _number(value: Any) -> Any:
    # Stored JSON spells non-finite numbers as strings ("inf"); the table wants floats back.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


_actor = user_name  # who promotes: the OS user, as on tracking runs
