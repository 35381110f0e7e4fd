"""Data validation of a batch against a great-expectations 1.x suite kept as JSON.

The suite for the churn pipeline is ``flows/expectations/churn_batch.json`` (an
``ExpectationSuite.to_json_dict()``; edit it there). ``validate_batch`` runs it on a
DataFrame in a throwaway ephemeral GX context and returns a :class:`ValidationReport`
with the counts, one outcome per expectation, GX's full result and readable summaries.
A failing batch is reported, not raised: the flow decides what to do with it.

>>> from prefect_mlops.flows.data import ChurnGenerator
>>> report = validate_batch(ChurnGenerator(n_rows=500).load(), load_suite())
>>> report.success, report.unsuccessful
(True, 0)
>>> bad = validate_batch(ChurnGenerator(n_rows=500, corrupt=True).load(), load_suite())
>>> bad.success
False

``great_expectations`` takes 3-4 s to import, so it is imported inside the functions.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tracking_plugin.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    import great_expectations as gx

__all__ = [
    "DEFAULT_SUITE_PATH",
    "ExpectationOutcome",
    "ValidationReport",
    "load_suite",
    "validate_batch",
]

DEFAULT_SUITE_PATH = Path(__file__).resolve().parent / "expectations" / "churn_batch.json"

# Characters a tracking metric key may hold (tracking_plugin.validation.validate_key).
_METRIC_KEY_UNSAFE = re.compile(r"[^/\w.\- :]")
# How many offending values an outcome quotes; the raw GX result keeps up to 20.
_EXAMPLES = 5


def load_suite(path: str | Path = DEFAULT_SUITE_PATH) -> gx.ExpectationSuite:
    """Read an expectation suite from a JSON file (``ExpectationSuite.to_json_dict()`` form).

    A missing file raises NotFound; a file that is not JSON, or whose content is not a
    valid suite (unknown expectation type, bad arguments, ...), raises InvalidArgument.
    Both messages name the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(
            f"Expectation suite file {str(path)!r} does not exist; pass the path of a suite "
            "JSON file (see flows/expectations/churn_batch.json)."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"Cannot read expectation suite file {str(path)!r}: {exc}.") from exc
    try:
        content = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"Expectation suite file {str(path)!r} is not valid JSON: {exc}."
        ) from exc
    if not isinstance(content, dict) or not isinstance(content.get("name"), str):
        raise InvalidArgument(
            f"Expectation suite file {str(path)!r} must hold a JSON object with a 'name' and "
            "an 'expectations' list (ExpectationSuite.to_json_dict())."
        )
    if not isinstance(content.get("expectations", []), list):
        raise InvalidArgument(
            f"Expectation suite file {str(path)!r}: 'expectations' must be a list, "
            f"got {type(content['expectations']).__name__}."
        )
    return _suite_from_dict(content, origin=f"Expectation suite file {str(path)!r}")


def _first_lines(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {' '.join(lines[:6])}"


def _suite_from_dict(content: dict[str, Any], *, origin: str) -> gx.ExpectationSuite:
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    expectations = content.get("expectations", [])
    # Check each expectation first: given the whole list, GX logs and silently DROPS an
    # expectation of unknown type, so a typo in the file would quietly weaken the suite.
    # GX raises its own errors, pydantic ValidationErrors and TypeErrors (unknown keys);
    # to the user they all mean: this entry is not a valid expectation.
    for index, entry in enumerate(expectations):
        label = f"{origin}: expectation #{index + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise InvalidArgument(f"{label} must be an object with a 'type' and 'kwargs', got {entry!r}.")
        try:
            ExpectationConfiguration(**entry).to_domain_obj()
        except Exception as exc:  # noqa: BLE001
            raise InvalidArgument(f"{label} ({entry['type']}) is not valid: {_first_lines(exc)}") from exc
    try:
        suite = gx.ExpectationSuite(**content)
    except Exception as exc:  # noqa: BLE001
        raise InvalidArgument(f"{origin} is not a valid expectation suite: {_first_lines(exc)}") from exc
    if len(suite.expectations) != len(expectations):
        raise InvalidArgument(
            f"{origin}: only {len(suite.expectations)} of {len(expectations)} expectations "
            "could be loaded; check the expectation types and arguments."
        )
    return suite


@dataclass(frozen=True)
class ExpectationOutcome:
    """How one expectation fared on the batch."""

    type: str
    column: str | None
    kwargs: dict[str, Any]
    success: bool
    description: str | None
    #: A short account of what was seen: observed value, unexpected counts and examples,
    #: or the error GX hit (e.g. the column does not exist).
    observed: str

    @property
    def name(self) -> str:
        """``type(column)``, e.g. ``expect_column_values_to_not_be_null(contract)``."""
        return f"{self.type}({self.column})" if self.column else self.type


@dataclass(frozen=True)
class ValidationReport:
    """The result of validating one batch against one suite."""

    suite_name: str
    success: bool
    evaluated: int
    successful: int
    unsuccessful: int
    success_percent: float
    #: Failed expectations first, then the passed ones, each group in suite order.
    outcomes: tuple[ExpectationOutcome, ...]
    #: GX's ``ExpectationSuiteValidationResult.to_json_dict()``: store it as an artifact.
    raw: dict[str, Any]

    @property
    def failed(self) -> tuple[ExpectationOutcome, ...]:
        """The expectations that did not hold."""
        return tuple(o for o in self.outcomes if not o.success)

    def to_metrics(self, prefix: str = "validation") -> dict[str, float]:
        """Numbers to log on the tracking run: counts, and 1/0 per expectation.

        Keys: ``<prefix>.success``, ``.evaluated``, ``.successful``, ``.unsuccessful``,
        ``.success_percent`` and ``<prefix>.<expectation type>.<column>`` (``table`` for
        table-level expectations; a ``.2``, ``.3`` suffix when a pair repeats).
        """
        metrics = {
            f"{prefix}.success": float(self.success),
            f"{prefix}.evaluated": float(self.evaluated),
            f"{prefix}.successful": float(self.successful),
            f"{prefix}.unsuccessful": float(self.unsuccessful),
            f"{prefix}.success_percent": float(self.success_percent),
        }
        for outcome in self.outcomes:
            base = _METRIC_KEY_UNSAFE.sub("_", f"{prefix}.{outcome.type}.{outcome.column or 'table'}")[:240]
            key, n = base, 1
            while key in metrics:
                n += 1
                key = f"{base}.{n}"
            metrics[key] = float(outcome.success)
        return metrics

    def failure_summary(self) -> str:
        """One line per failed expectation: column, expectation and what was wrong."""
        if self.success:
            return f"All {self.evaluated} expectations of suite {self.suite_name!r} passed."
        lines = [f"{self.unsuccessful} of {self.evaluated} expectations of suite {self.suite_name!r} failed:"]
        for outcome in self.failed:
            where = f"column {outcome.column!r}" if outcome.column else "table"
            lines.append(f"- {where}: {outcome.type} failed: {outcome.observed}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """A readable summary for a Prefect markdown artifact: verdict, counts, a table."""
        verdict = "passed" if self.success else "**FAILED**"
        lines = [
            f"## Data validation {verdict}: suite `{self.suite_name}`",
            "",
            f"{self.successful} of {self.evaluated} expectations passed "
            f"({self.success_percent:.1f}%); {self.unsuccessful} failed.",
            "",
            "| result | column | expectation | expected | observed |",
            "|---|---|---|---|---|",
        ]
        for outcome in self.outcomes:
            lines.append(
                f"| {'pass' if outcome.success else '**FAIL**'} | {_md(outcome.column or '(table)')} | "
                f"{_md(outcome.type)} | {_md(outcome.description or _short(outcome.kwargs, 80))} | "
                f"{_md(outcome.observed)} |"
            )
        return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    # Table cells: a pipe or newline would break the row.
    return str(text).replace("|", "\\|").replace("\n", " ")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, arrays: not a missing scalar
        return False


def _exception_message(exception_info: Any) -> str | None:
    # GX puts either one {"raised_exception", "exception_message", ...} dict here or a
    # mapping of metric id -> such dicts (one per metric that failed to compute).
    if not isinstance(exception_info, dict):
        return None
    infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    messages = [
        str(info.get("exception_message"))
        for info in infos
        if isinstance(info, dict) and info.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(messages)) or None


def _describe_result(
    kwargs: dict[str, Any], result: dict[str, Any], exception_info: Any, success: bool
) -> str:
    error = _exception_message(exception_info)
    if error:
        return f"error: {error}"
    mismatched = (result.get("details") or {}).get("mismatched")
    if isinstance(mismatched, dict) and (mismatched.get("missing") or mismatched.get("unexpected")):
        # expect_table_columns_to_match_set/ordered_list: name the columns, not the list.
        parts = [
            f"{label} columns: {', '.join(map(str, mismatched[key]))}"
            for key, label in (("missing", "missing"), ("unexpected", "unexpected"))
            if mismatched.get(key)
        ]
        return "; ".join(parts)
    parts = []
    if "type_list" in kwargs or "type_" in kwargs:
        expected = kwargs.get("type_list") or [kwargs.get("type_")]
        parts.append(
            f"observed type {result.get('observed_value')}"
            + ("" if success else f", expected one of {_short(', '.join(map(str, expected)), 50)}")
        )
    elif "observed_value" in result:
        parts.append(f"observed {_short(result['observed_value'])}")
    if "unexpected_count" in result:
        count = result.get("unexpected_count") or 0
        total = result.get("element_count")
        percent = result.get("unexpected_percent")
        if count or not success:
            text = f"{count} unexpected"
            if total is not None:
                text += f" of {total}"
            if isinstance(percent, (int, float)) and not math.isnan(percent):
                text += f" ({percent:.2f}%)"
            examples = [v for v in result.get("partial_unexpected_list") or [] if not _is_missing(v)]
            examples = examples[:_EXAMPLES]
            if examples:
                text += f", e.g. {', '.join(_short(v, 20) for v in examples)}"
            parts.append(text)
        else:
            parts.append("0 unexpected")
    if not parts:
        return "ok" if success else "failed"
    return "; ".join(parts)


def validate_batch(df: pd.DataFrame, suite: gx.ExpectationSuite | None = None) -> ValidationReport:
    """Run ``suite`` (default: the churn suite) on ``df``; never raises for a bad batch.

    Each call uses its own ephemeral GX context, so calls from several threads or Prefect
    tasks do not share state. About 0.3 s for the churn suite on 10,000 rows once GX is
    imported; GX's per-expectation bookkeeping, not the row count, dominates.
    """
    import great_expectations as gx

    if not isinstance(df, pd.DataFrame):
        raise InvalidArgument(f"validate_batch needs a pandas DataFrame, got {type(df).__name__}.")
    if suite is None:
        suite = load_suite()
    if not isinstance(suite, gx.ExpectationSuite):
        raise InvalidArgument(
            f"validate_batch needs a great_expectations ExpectationSuite (see load_suite), "
            f"got {type(suite).__name__}."
        )
    # A private copy: validation attaches the suite to the context, and the caller's suite
    # may be shared with other threads.
    suite_dict = suite.to_json_dict()
    suite_copy = gx.ExpectationSuite(**suite_dict)

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    name = f"batch-{uuid.uuid4().hex[:8]}"
    batch_definition = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(name)
    )
    batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(suite_copy)

    # GX returns results in its own evaluation order; report failures first, then suite order.
    order = {
        json.dumps([e["type"], e["kwargs"]], sort_keys=True, default=str): i
        for i, e in enumerate(suite_dict["expectations"])
    }
    outcomes: list[tuple[int, ExpectationOutcome]] = []
    for item in result.results:
        config = item.expectation_config
        kwargs = {k: v for k, v in dict(config.kwargs).items() if k != "batch_id"}
        item_result = dict(item.result or {})
        success = bool(item.success)
        outcome = ExpectationOutcome(
            type=config.type,
            column=kwargs.get("column"),
            kwargs=kwargs,
            success=success,
            description=getattr(config, "description", None),
            observed=(
                f"column {kwargs['column']!r} is missing from the batch"
                # GX's own message for this case is an internal error ("list index out of range").
                if not success and "column" in kwargs and kwargs["column"] not in df.columns
                else _describe_result(kwargs, item_result, item.exception_info, success)
            ),
        )
        rank = order.get(json.dumps([config.type, kwargs], sort_keys=True, default=str), len(order))
        outcomes.append((rank, outcome))
    outcomes.sort(key=lambda pair: (pair[1].success, pair[0]))

    stats = result.statistics
    return ValidationReport(
        suite_name=suite.name,
        success=bool(result.success),
        evaluated=int(stats["evaluated_expectations"]),
        successful=int(stats["successful_expectations"]),
        unsuccessful=int(stats["unsuccessful_expectations"]),
        success_percent=float(stats["success_percent"] or 0.0),
        outcomes=tuple(o for _, o in outcomes),
        raw=result.to_json_dict(),
    )
