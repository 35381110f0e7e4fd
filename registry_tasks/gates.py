"""Evaluation gates: the policy that decides whether a candidate may replace the champion.

A gate is declarative::

    gate = EvaluationGate(
        primary_metric="roc_auc",                 # direction "maximize" by default
        min_improvement=0.005,                    # over the current champion
        thresholds={"roc_auc": (0.75, None), "log_loss": (None, 0.6)},
        guards=[Guard("recall", tolerance=0.02)], # may not regress by more than 0.02
        min_eval_rows=500,
    )
    decision = gate.evaluate(candidate, champion, eval_rows=len(eval_df))
    decision.passed, decision.reason

Every rule yields a :class:`RuleOutcome`; the :class:`GateDecision` keeps the inputs and
all outcomes so it can be stored (``record_gate_decision``) and shown as a table. With no
champion, the comparison rules are reported as skipped and the absolute thresholds decide.
Evaluation is pure: no I/O, no Prefect.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping, Sequence

from tracking_plugin.errors import InvalidArgument

__all__ = ["EvaluationGate", "GateDecision", "Guard", "RuleOutcome"]

Direction = Literal["maximize", "minimize"]


def _check_direction(direction: str, what: str) -> None:
    if direction not in ("maximize", "minimize"):
        raise InvalidArgument(
            f"Invalid direction {direction!r} for {what}: use 'maximize' or 'minimize'."
        )


@dataclass(frozen=True)
class Guard:
    """A metric that may not get worse than the champion's by more than ``tolerance``."""

    metric: str
    tolerance: float = 0.0
    direction: Direction = "maximize"

    def __post_init__(self) -> None:
        _check_direction(self.direction, f"guard {self.metric!r}")
        if not (isinstance(self.tolerance, (int, float)) and self.tolerance >= 0):
            raise InvalidArgument(
                f"Invalid tolerance {self.tolerance!r} for guard {self.metric!r}: use a number >= 0."
            )


@dataclass(frozen=True)
class RuleOutcome:
    """The result of one rule: ``passed`` is None when the rule was skipped."""

    rule: str
    metric: str | None
    passed: bool | None
    observed: float | int | None
    required: str
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """A gate's verdict with its inputs and per-rule outcomes (JSON-serializable)."""

    passed: bool
    reason: str
    outcomes: tuple[RuleOutcome, ...]
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    eval_rows: int | None
    gate: dict[str, Any]
    candidate_version: int | None = None
    champion_version: int | None = None
    decision_id: str | None = None  # set once the decision is stored

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))

    def to_markdown(self) -> str:
        """A readable table of the rules, for Prefect markdown artifacts."""
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"### Evaluation gate: {verdict}",
            "",
            f"{self.reason}",
            "",
            f"Candidate version: {self.candidate_version or '-'}; champion version: "
            f"{self.champion_version or 'none'}; evaluation rows: {self.eval_rows if self.eval_rows is not None else '-'}",
            "",
            "| rule | metric | observed | required | outcome |",
            "|---|---|---|---|---|",
        ]
        for o in self.outcomes:
            mark = "skipped" if o.passed is None else ("pass" if o.passed else "**FAIL**")
            observed = "-" if o.observed is None else f"{o.observed:.6g}"
            lines.append(f"| {o.rule} | {o.metric or '-'} | {observed} | {o.required} | {mark} |")
        return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _metric(metrics: Mapping[str, float], key: str, whose: str) -> float | None:
    value = metrics.get(key)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{whose} metric {key!r} is {value!r}, not a number.") from exc
    return None if math.isnan(number) else number


@dataclass(frozen=True)
class EvaluationGate:
    """Declarative promotion policy; see the module docstring."""

    primary_metric: str
    direction: Direction = "maximize"
    min_improvement: float = 0.0
    thresholds: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    guards: Sequence[Guard] = ()
    min_eval_rows: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.primary_metric, str) or not self.primary_metric:
            raise InvalidArgument(
                f"Invalid primary_metric {self.primary_metric!r}: name a metric, e.g. 'roc_auc'."
            )
        _check_direction(self.direction, "the primary metric")
        if self.min_improvement < 0:
            raise InvalidArgument(
                f"Invalid min_improvement {self.min_improvement!r}: use a number >= 0 "
                "(the candidate must beat the champion by at least this much)."
            )
        if self.min_eval_rows < 0:
            raise InvalidArgument(f"Invalid min_eval_rows {self.min_eval_rows!r}: use an int >= 0.")
        for key, bounds in self.thresholds.items():
            if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2):
                raise InvalidArgument(
                    f"Invalid threshold for {key!r}: {bounds!r}. Use (min, max) with None for "
                    "an open side, e.g. {'roc_auc': (0.75, None)}."
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "primary_metric": self.primary_metric,
            "direction": self.direction,
            "min_improvement": self.min_improvement,
            "thresholds": {k: list(v) for k, v in self.thresholds.items()},
            "guards": [asdict(g) for g in self.guards],
            "min_eval_rows": self.min_eval_rows,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvaluationGate":
        known = {"primary_metric", "direction", "min_improvement", "thresholds", "guards", "min_eval_rows"}
        unknown = set(data) - known
        if unknown:
            raise InvalidArgument(f"Unknown gate keys {sorted(unknown)}; valid keys: {sorted(known)}.")
        return cls(
            primary_metric=data["primary_metric"],
            direction=data.get("direction", "maximize"),
            min_improvement=float(data.get("min_improvement", 0.0)),
            thresholds={k: (v[0], v[1]) for k, v in dict(data.get("thresholds", {})).items()},
            guards=tuple(Guard(**g) for g in data.get("guards", ())),
            min_eval_rows=int(data.get("min_eval_rows", 0)),
        )

    def evaluate(
        self,
        candidate: Mapping[str, float],
        champion: Mapping[str, float] | None = None,
        *,
        eval_rows: int | None = None,
        candidate_version: int | None = None,
        champion_version: int | None = None,
    ) -> GateDecision:
        """Apply every rule; the decision passes only if no rule failed."""
        outcomes: list[RuleOutcome] = []
        better_sign = 1.0 if self.direction == "maximize" else -1.0

        # Minimum evaluation rows.
        if self.min_eval_rows:
            ok = eval_rows is not None and eval_rows >= self.min_eval_rows
            outcomes.append(RuleOutcome(
                "min_eval_rows", None, ok, eval_rows, f">= {self.min_eval_rows}",
                f"evaluated on {eval_rows if eval_rows is not None else 'an unknown number of'} rows",
            ))

        # The primary metric must exist on the candidate.
        primary = _metric(candidate, self.primary_metric, "Candidate")
        outcomes.append(RuleOutcome(
            "primary_metric_present", self.primary_metric, primary is not None, primary, "a number",
            "candidate has the primary metric" if primary is not None
            else f"candidate has no {self.primary_metric!r} metric (or it is NaN)",
        ))

        # Absolute thresholds.
        for key, (low, high) in self.thresholds.items():
            value = _metric(candidate, key, "Candidate")
            required = " and ".join(
                part for part in (f">= {low}" if low is not None else "", f"<= {high}" if high is not None else "") if part
            ) or "any"
            ok = value is not None and (low is None or value >= low) and (high is None or value <= high)
            outcomes.append(RuleOutcome(
                "threshold", key, ok, value, required,
                f"{key} = {value:.6g}" if value is not None else f"candidate has no {key!r} metric",
            ))

        # Comparisons with the champion.
        if champion is None:
            outcomes.append(RuleOutcome(
                "min_improvement", self.primary_metric, None, primary, f"+{self.min_improvement} over champion",
                "no champion yet: absolute thresholds decide",
            ))
            for guard in self.guards:
                outcomes.append(RuleOutcome(
                    "guard", guard.metric, None, _metric(candidate, guard.metric, "Candidate"),
                    f"no regression over {guard.tolerance}", "no champion yet",
                ))
        else:
            champ_primary = _metric(champion, self.primary_metric, "Champion")
            required = f">= {self.min_improvement} ({self.direction})"
            if primary is None:
                outcomes.append(RuleOutcome(
                    "min_improvement", self.primary_metric, False, None, required,
                    "candidate lacks the primary metric",
                ))
            elif champ_primary is None:
                outcomes.append(RuleOutcome(
                    "min_improvement", self.primary_metric, None, None, required,
                    "champion has no primary metric; not compared",
                ))
            else:
                delta = (primary - champ_primary) * better_sign
                outcomes.append(RuleOutcome(
                    "min_improvement", self.primary_metric, delta >= self.min_improvement - 1e-12, delta,
                    required,
                    f"candidate {primary:.6g} vs champion {champ_primary:.6g} (change {delta:+.6g})",
                ))
            for guard in self.guards:
                sign = 1.0 if guard.direction == "maximize" else -1.0
                cand = _metric(candidate, guard.metric, "Candidate")
                champ = _metric(champion, guard.metric, "Champion")
                if cand is None:
                    outcomes.append(RuleOutcome(
                        "guard", guard.metric, False, None, f"regression <= {guard.tolerance}",
                        f"candidate has no {guard.metric!r} metric",
                    ))
                    continue
                if champ is None:
                    outcomes.append(RuleOutcome(
                        "guard", guard.metric, None, cand, f"regression <= {guard.tolerance}",
                        "champion has no such metric; not compared",
                    ))
                    continue
                regression = (champ - cand) * sign
                outcomes.append(RuleOutcome(
                    "guard", guard.metric, regression <= guard.tolerance + 1e-12, regression,
                    f"regression <= {guard.tolerance}",
                    f"candidate {cand:.6g} vs champion {champ:.6g}",
                ))

        failed = [o for o in outcomes if o.passed is False]
        if failed:
            reason = "Rejected: " + "; ".join(
                f"{o.rule}{f' ({o.metric})' if o.metric else ''}: {o.detail}, required {o.required}" for o in failed
            )
        elif champion is None:
            reason = "Accepted: no champion yet and every absolute threshold holds."
        else:
            reason = (
                f"Accepted: {self.primary_metric} improves on the champion by at least "
                f"{self.min_improvement} and no guard regressed."
            )
        return GateDecision(
            passed=not failed,
            reason=reason,
            outcomes=tuple(outcomes),
            candidate_metrics={k: float(v) for k, v in candidate.items()},
            champion_metrics=None if champion is None else {k: float(v) for k, v in champion.items()},
            eval_rows=eval_rows,
            gate=self.to_dict(),
            candidate_version=candidate_version,
            champion_version=champion_version,
        )
