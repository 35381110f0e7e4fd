"""Model registry policy and Prefect tasks: register, evaluate a gate, promote, roll back.

See :mod:`registry_tasks.gates` for the gate rules and :mod:`registry_tasks.tasks` for the
Prefect tasks. ``RegistryClient`` is the non-Prefect facade.
"""

from registry_tasks.client import RegistryClient
from registry_tasks.gates import EvaluationGate, GateDecision, Guard, RuleOutcome
from registry_tasks.tasks import evaluate_gate, promote, register_model, rollback

__all__ = [
    "EvaluationGate",
    "GateDecision",
    "Guard",
    "RegistryClient",
    "RuleOutcome",
    "evaluate_gate",
    "promote",
    "register_model",
    "rollback",
]
