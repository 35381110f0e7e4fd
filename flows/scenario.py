"""What ``prefect-mlops simulate --scenario`` replays: a scenario file, checked, and the
day-by-day batches it describes (no Prefect here; :mod:`flows.simulate` runs them).

A scenario is a small YAML file. The shipped ones live in ``flows/scenarios/`` (installed
with the package) and are named by their file stem (``concept-drift``); any other path
ending in ``.yaml`` / ``.yml`` works too::

    name: concept-drift
    description: Labels turn around from day 10; the features do not move.
    days: 30
    drifts:
      - {kind: concept, start: 10, level: 1.0}
    labels: {delay_days: 1}

Keys (all optional but ``name``): ``days``, ``rows`` (per daily batch), ``seed``,
``n_estimators``, ``drifts`` (``kind`` covariate | gradual | concept, ``start`` day,
``level``, ``ramp_days`` to reach it), ``corrupted`` (``day``, ``kind`` generator | schema |
nulls | type | label-leak), ``poisoned`` (``day``, ``label_noise``: the share of labels
flipped; the nightly retraining trains on that batch), ``labels`` (``delay_days``,
``margin``, ``min_labels``: labels of the served requests arrive that many days later and
the performance monitor judges them; absent: no labels, no performance monitor) and
``load`` (``requests_per_second``, ``rows_per_request``, ``min_requests_per_day``: the
client querying the served champion the whole time). An unknown key or a bad value is
refused with :class:`~tracking_plugin.errors.InvalidArgument` naming it and the fix.

>>> scenario = load_scenario("concept-drift")
>>> scenario.drift_kinds(), day_generator_args(scenario, 12)["concept"]
(['concept'], 1.0)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tracking_plugin.errors import InvalidArgument, NotFound

from prefect_mlops.flows.data import LABEL_COLUMN, ChurnGenerator

__all__ = [
    "CorruptedDay",
    "CORRUPTION_KINDS",
    "Drift",
    "LabelPolicy",
    "Load",
    "PoisonedDay",
    "Scenario",
    "clean_generator",
    "corrupt_batch",
    "day_generator_args",
    "load_scenario",
    "poison_batch",
    "shipped_scenarios",
]

#: What a corrupted day can hold, each stopped by data validation:
#: ``generator`` the generator's four faults (nulls, out-of-range values, a missing column,
#: numbers as text); ``schema`` a renamed column; ``nulls`` missing values in two columns;
#: ``type`` a numeric column as text; ``label-leak`` a copy of the label as an extra column.
CORRUPTION_KINDS = ("generator", "schema", "nulls", "type", "label-leak")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Drift(_Strict):
    """A change of the data from ``start`` on: ``covariate`` / ``gradual`` move the features
    (generator ``drift``), ``concept`` the labels only (generator ``concept``, 0 to 1)."""

    kind: Literal["covariate", "gradual", "concept"]
    start: int = Field(ge=0, description="First day the change shows.")
    level: float = Field(gt=0, description="Generator drift (covariate, gradual) or concept (0-1) reached.")
    ramp_days: int = Field(1, ge=1, description="Days to reach level (1: at once).")

    @model_validator(mode="after")
    def _concept_in_range(self) -> "Drift":
        if self.kind == "concept" and self.level > 1:
            raise ValueError(f"a concept drift's level is a share from 0 to 1 (1: labels reversed), got {self.level}")
        return self


class CorruptedDay(_Strict):
    day: int = Field(ge=0)
    kind: Literal["generator", "schema", "nulls", "type", "label-leak"] = "generator"


class PoisonedDay(_Strict):
    day: int = Field(ge=0)
    label_noise: float = Field(gt=0, le=0.5, description="Share of the batch's labels flipped at random.")


class LabelPolicy(_Strict):
    delay_days: int = Field(1, ge=0, le=7, description="Days until a served request's label arrives.")
    margin: float = Field(0.1, gt=0, lt=1, description="How far below its evaluation a live metric may fall.")
    min_labels: int = Field(50, ge=1, description="Days with fewer labelled rows are not judged.")


class Load(_Strict):
    requests_per_second: float = Field(25.0, ge=1, le=200)
    rows_per_request: int = Field(5, ge=1, le=100)
    min_requests_per_day: int = Field(60, ge=0, le=10_000)


class Scenario(_Strict):
    """One scenario file, checked."""

    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    days: int = Field(10, ge=1, le=366)
    rows: int = Field(1500, ge=200, le=200_000)
    seed: int = Field(0, ge=0)
    n_estimators: int = Field(30, ge=1, le=500)
    drifts: list[Drift] = Field(default_factory=list)
    corrupted: list[CorruptedDay] = Field(default_factory=list)
    poisoned: list[PoisonedDay] = Field(default_factory=list)
    labels: LabelPolicy | None = None
    load: Load = Field(default_factory=Load)

    @field_validator("corrupted", "poisoned")
    @classmethod
    def _one_per_day(cls, value: list[Any]) -> list[Any]:
        days = [item.day for item in value]
        if len(days) != len(set(days)):
            raise ValueError(f"a day is listed twice ({sorted(d for d in days if days.count(d) > 1)[0]}); one entry a day")
        return value

    @model_validator(mode="after")
    def _days_do_not_clash(self) -> "Scenario":
        both = {c.day for c in self.corrupted} & {p.day for p in self.poisoned}
        if both:
            raise ValueError(f"day {min(both)} is both corrupted and poisoned; give each day one fault")
        if any(d.kind == "concept" for d in self.drifts) and self.labels is None:
            raise ValueError("a concept drift is only visible through labels: add `labels: {delay_days: 1}`")
        return self

    def drift_kinds(self) -> list[str]:
        """The kinds of drift in the scenario, each once, in order."""
        return list(dict.fromkeys(d.kind for d in self.drifts))

    def with_days(self, days: int | None) -> "Scenario":
        """The same story told over ``days`` days (None: its own): every day named in the
        file (onsets, ramps, faulty days) scales by ``days / self.days``; faulty days stay
        on days of their own, in order. The labels' delay does not scale.

        >>> load_scenario("covariate-drift").with_days(30).drifts[0].start
        18
        """
        if days is None or days == self.days:
            return self
        factor = days / self.days
        data = self.model_dump()
        data["days"] = days
        for drift in data["drifts"]:
            drift["start"] = round(drift["start"] * factor)
            if drift["ramp_days"] > 1:  # 1 is "at once", whatever the length
                drift["ramp_days"] = max(2, round(drift["ramp_days"] * factor))
        faulty = sorted([(e["day"], key, i) for key in ("corrupted", "poisoned") for i, e in enumerate(data[key])])
        previous = -1
        for day, key, i in faulty:
            previous = max(round(day * factor), previous + 1)
            data[key][i]["day"] = previous
        return self.model_validate(data)


def shipped_scenarios() -> dict[str, Path]:
    """Name -> file of the scenarios installed with the package."""
    folder = resources.files("prefect_mlops.flows") / "scenarios"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Scenario
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
            for inner in getattr(candidate, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    model = inner
                    break
    return list(model.model_fields)


def _explain(error: ValidationError, origin: str) -> InvalidArgument:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown key {where!r}: remove it or use one of {', '.join(_allowed_keys(loc))}")
        elif item["type"] == "missing":
            lines.append(f"missing key {where!r}: add it")
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
            lines.append(f"{where} = {item.get('input')!r}: {message}")
    return InvalidArgument(f"The scenario {origin} is not valid:\n  " + "\n  ".join(lines))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name, or a YAML file by path; checked.

    NotFound names the shipped scenarios when neither matches; InvalidArgument names the
    bad key or value and the fix.
    """
    text = str(name_or_path)
    shipped = shipped_scenarios()
    if text in shipped:
        path = shipped[text]
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise NotFound(
                f"No scenario {text!r}: use a shipped one ({', '.join(sorted(shipped))}) or the path of a YAML file."
            )
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"The scenario file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(content, dict):
        raise InvalidArgument(f"The scenario file {path} must hold a mapping of keys (name:, days:, drifts: ...).")
    try:
        return Scenario.model_validate(content)
    except ValidationError as exc:
        raise _explain(exc, f"file {path}") from None


# --------------------------------------------------------------------------- batches


def day_generator_args(scenario: Scenario, day: int) -> dict[str, float]:
    """The generator's ``drift`` and ``concept`` on ``day`` (drifts add up; concept <= 1)."""
    drift = concept = 0.0
    for change in scenario.drifts:
        if day < change.start:
            continue
        reached = change.level * min(1.0, (day - change.start + 1) / change.ramp_days)
        if change.kind == "concept":
            concept += reached
        else:
            drift += reached
    return {"drift": round(drift, 6), "concept": round(min(concept, 1.0), 6)}


def corrupt_batch(frame: pd.DataFrame, kind: str, seed: int) -> pd.DataFrame:
    """``frame`` with one fault of ``kind`` (see :data:`CORRUPTION_KINDS`, but ``generator``)."""
    rng = np.random.default_rng([seed, 0xC0FFEE])
    frame = frame.copy()
    n = len(frame)
    if kind == "schema":  # an upstream rename
        return frame.rename(columns={"monthly_charges": "monthly_charge_usd"})
    if kind == "nulls":
        for column in ("payment_method", "total_charges"):
            frame.loc[rng.choice(n, max(1, n // 10), replace=False), column] = None
        return frame
    if kind == "type":  # numbers exported as text
        frame["tenure_months"] = frame["tenure_months"].map(lambda v: f"{v} months").astype("str")
        return frame
    if kind == "label-leak":  # next month's outcome joined in by mistake
        frame["churned_next_month"] = frame[LABEL_COLUMN].to_numpy()
        return frame
    raise InvalidArgument(f"Unknown corruption {kind!r}; use one of {', '.join(CORRUPTION_KINDS)}.")


def poison_batch(frame: pd.DataFrame, label_noise: float, seed: int) -> pd.DataFrame:
    """``frame`` with ``label_noise`` of its labels flipped at random (features untouched)."""
    rng = np.random.default_rng([seed, 0x9015])
    flip = rng.random(len(frame)) < label_noise
    labels = frame[LABEL_COLUMN].to_numpy()
    return frame.assign(**{LABEL_COLUMN: np.where(flip, 1 - labels, labels)})


def clean_generator(scenario: Scenario, day: int, *, seed_offset: int = 0, n_rows: int | None = None) -> ChurnGenerator:
    """The day's clean batch (``seed_offset`` > 0: another set of customers, e.g. the
    requests served that day)."""
    args = day_generator_args(scenario, day)
    return ChurnGenerator(seed=scenario.seed + seed_offset, day=day, n_rows=n_rows or scenario.rows, **args)
