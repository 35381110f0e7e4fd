"""Replay N days of generated batches through the flows and tabulate what happened.

The policy simulated is what ``deployments/prefect.yaml`` sets up, run day by day in this
process: day 0 (or the first day with a valid batch) trains the first champion; every
later day the drift monitor compares the day's batch with the champion's training data,
and a drifted batch is retrained on at once (what the ``retrain-on-drift`` trigger does),
through the gate. A corrupted batch is stopped by validation and quarantined. A client
keeps querying the served champion the whole time, so the table also shows how many of
its requests failed each day (retraining and model swaps must cost none).

The batches: from ``drift_start`` on, the customer base shifts (generator ``drift`` =
``drift_level``: higher charges, more month-to-month contracts, support calls mattering
more for churn); the batch of ``corrupt_day`` carries the four faults validation checks.

    prefect-mlops simulate --days 10 --drift-start 6 --corrupt-day 3
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

__all__ = ["DayResult", "batch_drift", "render_table", "simulate"]


@dataclass
class DayResult:
    """One row of the table: the day's batch and what the flows did with it."""

    day: int
    drift: float  # the generator's drift level of the batch (0 = like day 0)
    corrupt: bool
    source: str
    valid: bool | None = None
    drift_score: float | None = None  # largest feature PSI against the champion's training data
    drifted: bool | None = None
    retrained: bool = False
    gate_passed: bool | None = None
    champion_version: int | None = None
    requests: int = 0
    failed_requests: int = 0
    note: str = ""


def batch_drift(day: int, *, drift_start: int, drift_level: float) -> float:
    """The drift level of day ``day``'s batch: 0 before ``drift_start``, then ``drift_level``."""
    return 0.0 if day < drift_start else float(drift_level)


@dataclass
class _Prober:
    """Queries the served model in the background and counts requests and failures per day."""

    endpoint: str
    payload: dict[str, Any]
    day: int = 0
    counts: dict[int, list[int]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="simulate-prober", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with httpx.Client(base_url=self.endpoint, timeout=10.0) as http:
            while not self._stop.is_set():
                day = self.day
                try:
                    response = http.post("/invocations", json=self.payload)
                    ok = response.status_code == 200 and len(response.json().get("predictions", [])) == 3
                except (httpx.HTTPError, ValueError):
                    ok = False
                counts = self.counts.setdefault(day, [0, 0])
                counts[0] += 1
                counts[1] += 0 if ok else 1
                self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(15)


def _source(seed: int, day: int, drift: float, corrupt: bool, n_rows: int) -> str:
    return (f"generator://churn?seed={seed}&day={day}&n_rows={n_rows}&drift={drift:g}"
            f"&corrupt={'true' if corrupt else 'false'}")


def simulate(
    *,
    days: int = 10,
    drift_start: int = 6,
    corrupt_day: int | None = 3,
    drift_level: float = 2.0,
    seed: int = 0,
    n_rows: int = 1500,
    n_estimators: int = 30,
    port: int | None = 5056,
    model_name: str | None = None,
    echo: Callable[[str], Any] = print,
) -> list[DayResult]:
    """Run the simulation, print the day-by-day table and return its rows.

    ``model_name`` defaults to ``churn-sim-<UTC time>`` so that every simulation starts
    without a champion. ``port``: where the champion is served (None: no serving, no
    request column). Flow runs go to the configured Prefect API and backend as usual.
    """
    from registry_tasks import RegistryClient
    from serving_tasks.deploy import stop_server
    from tracking_plugin.errors import InvalidArgument

    from prefect_mlops.flows.ct_pipeline import DataValidationFailed, ct_pipeline
    from prefect_mlops.flows.data import FEATURE_COLUMNS, ChurnGenerator
    from prefect_mlops.flows.drift_monitor import drift_monitor

    if days < 1:
        raise InvalidArgument(f"days must be at least 1, got {days}.")
    if drift_level < 0:
        raise InvalidArgument(f"drift_level must be >= 0, got {drift_level}.")
    model_name = model_name or time.strftime("churn-sim-%Y%m%d-%H%M%S", time.gmtime())
    registry = RegistryClient()
    if registry.get_by_alias(model_name, "champion") is not None:
        raise InvalidArgument(
            f"Model {model_name!r} already has a champion; a simulation starts without one. "
            "Pass another model name (or none, for a fresh one)."
        )
    echo(_header(days=days, model_name=model_name, drift_start=drift_start, drift_level=drift_level,
                 corrupt_day=corrupt_day, n_rows=n_rows))
    customers = ChurnGenerator(seed=seed + 1000, day=0, n_rows=3).load()[list(FEATURE_COLUMNS)]
    payload = {"dataframe_split": {"columns": list(customers.columns), "data": customers.astype(object).values.tolist()}}

    results: list[DayResult] = []
    details: list[str] = []  # one line per failed flow of the day, printed under its row
    prober: _Prober | None = None
    try:
        for day in range(days):
            drift = batch_drift(day, drift_start=drift_start, drift_level=drift_level)
            corrupt = day == corrupt_day
            row = DayResult(day=day, drift=drift, corrupt=corrupt, source=_source(seed, day, drift, corrupt, n_rows))
            if prober:
                prober.day = day
            champion = registry.get_by_alias(model_name, "champion")
            retrain = champion is None
            if champion is not None:
                state = drift_monitor(source=row.source, model_name=model_name, return_state=True)
                if state.is_completed():
                    out = state.result()
                    row.valid, row.drift_score, row.drifted = True, out["drift_score"], bool(out["drifted"])
                    retrain = row.drifted
                else:
                    error = state.result(raise_on_failure=False)
                    if isinstance(error, DataValidationFailed):
                        row.valid, row.note = False, "batch quarantined"
                    else:
                        row.note = f"drift monitor: {type(error).__name__}"
                    details.append(_detail(day, "drift monitor", error))
            if retrain:
                state = ct_pipeline(source=row.source, model_name=model_name, n_estimators=n_estimators,
                                    serve_port=port, return_state=True)
                failure: Any = None if state.is_completed() else state.result(raise_on_failure=False)
                if failure is not None:
                    details.append(_detail(day, "ct_pipeline", failure))
                if isinstance(failure, DataValidationFailed):
                    row.valid, row.note = False, "batch quarantined"
                else:
                    row.valid, row.retrained = True, True
                    if failure is None:
                        row.gate_passed = bool(state.result()["promoted"])
                    else:
                        row.note = f"ct_pipeline: {type(failure).__name__}"
            champion = registry.get_by_alias(model_name, "champion")
            row.champion_version = champion.version if champion else None
            if prober is None and champion is not None and port:
                prober = _Prober(endpoint=f"http://127.0.0.1:{port}", payload=payload, day=day)
                prober.start()
            results.append(row)
            echo(_line(row, requests=False))
            for detail in details:
                echo(detail)
            details.clear()
    finally:
        if prober:
            prober.stop()
            for row in results:
                row.requests, row.failed_requests = prober.counts.get(row.day, [0, 0])
        if port:
            stop_server(port)
    echo("")
    echo(render_table(results, requests=bool(port)))
    return results


def _header(*, days: int, model_name: str, drift_start: int, drift_level: float, corrupt_day: int | None,
            n_rows: int) -> str:
    """What the replayed days hold: only what falls within them."""
    last = days - 1
    if drift_level > 0 and drift_start <= last:
        drift = f"drift {drift_level:g} from day {drift_start}"
    elif drift_level > 0:
        drift = f"no drift (it starts on day {drift_start}, after the last day, {last})"
    else:
        drift = "no drift"
    if corrupt_day is not None and corrupt_day <= last:
        corrupt = f"a corrupted batch on day {corrupt_day}"
    elif corrupt_day is not None:
        corrupt = f"no corrupted batch (day {corrupt_day} is after the last day, {last})"
    else:
        corrupt = "no corrupted batch"
    return f"Simulating days 0-{last} for model {model_name!r}: {drift}, {corrupt}, {n_rows} rows a day"


def _detail(day: int, flow_name: str, error: Any) -> str:
    """One line for a flow that failed: the first line of its message (the whole report is
    in the quarantine folder or, with --verbose, in the logs)."""
    message = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    summary = " ".join(lines[:2]).rstrip(":") if lines else type(error).__name__
    return f"     day {day}, {flow_name}: {summary}"


def _flag(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


_COLUMNS = (("day", 3), ("drift", 5), ("valid", 5), ("drift score", 11), ("drifted", 7), ("retrained", 9),
            ("gate", 4), ("champion", 8))


def _line(row: DayResult, *, requests: bool = True) -> str:
    cells = [
        f"{row.day:>3}", f"{row.drift:>5.2f}", f"{_flag(row.valid):>5}",
        f"{'-' if row.drift_score is None else f'{row.drift_score:.3f}':>11}", f"{_flag(row.drifted):>7}",
        f"{_flag(row.retrained):>9}", f"{_flag(row.gate_passed):>4}",
        f"{'-' if row.champion_version is None else f'v{row.champion_version}':>8}",
    ]
    if requests:
        cells += [f"{row.requests:>8}", f"{row.failed_requests:>6}"]
    return "  ".join(cells) + (f"  {row.note}" if row.note else "")


def render_table(rows: list[DayResult], *, requests: bool = True) -> str:
    """The day-by-day table as plain text (``requests``: with the served-requests columns).

    ``drift`` is the batch's generated drift level, ``drift score`` the largest feature PSI
    against the champion's training data (``drifted`` when over the threshold), ``gate``
    whether the retrained candidate was promoted, ``champion`` the version serving after
    the day, ``requests`` / ``failed`` what the background client saw that day.
    """
    names = [f"{name:>{width}}" for name, width in _COLUMNS]
    if requests:
        names += [f"{'requests':>8}", f"{'failed':>6}"]
    header = "  ".join(names)
    return "\n".join([header, "-" * len(header), *(_line(r, requests=requests) for r in rows)])
