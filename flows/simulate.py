# Over 600 lines on purpose: one simulation loop with its client, its label feed and its
# summary; split up, each part would only make sense next to the others.
"""Replay the days of a scenario through the flows and tabulate what happened.

The policy simulated is what ``deployments/prefect.yaml`` sets up, run day by day in this
process: the first day with a valid batch trains the first champion; every later day

1. the labels of the requests served ``labels.delay_days`` ago arrive, and the
   performance monitor joins them with the prediction log (``retrain-on-performance-drop``
   retrains when it emits ``mlops.performance.degraded``);
2. the drift monitor compares the day's batch with the champion's training data
   (``retrain-on-drift`` retrains on a drifted batch);
3. a poisoned batch is trained on as the nightly retraining would;

all through the gate. A corrupted batch is stopped by validation and quarantined. A
client process queries the served champion at a steady rate the whole time (so during
every model swap), with each request's id kept to label it later; the scoring server logs
every prediction. The scenarios are YAML files (:mod:`flows.scenario`).

The summary ends with machine-readable lines, one per figure::

    corrupted_stopped: <stopped>/<corrupted>
    regressions_promoted: <n>     a promoted version worse than the one it replaced on the
                                  next 3 days' labels (ROC AUC lower by more than 0.01)
    failed_requests: <n>
    detection_days.<kind>: <n>    days from onset to detection (drift monitor for
                                  covariate / gradual, performance monitor for concept,
                                  counted from labels of requests served since the onset)
    predictions_logged: <n>
    predictions_dropped: <n>
    performance_false_alarms: <n> the performance monitor's alarms on labels from before
                                  any concept drift (when it ran)

    prefect-mlops simulate --scenario concept-drift --days 30
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from prefect_mlops.flows.scenario import Drift, CorruptedDay, Scenario, load_scenario

__all__ = ["DayResult", "SimulationResult", "batch_drift", "legacy_scenario", "render_summary", "render_table",
           "simulate", "simulate_scenario"]

#: A promotion is a regression when the new version's ROC AUC on the next days' labels is
#: lower than the replaced version's by more than this. The gate decides on 20% of one
#: batch (300 rows of 1,500), whose noise is larger than this; the judgement uses
#: JUDGE_DAYS x JUDGE_ROWS fresh labelled rows, whose own noise is a few thousandths.
REGRESSION_TOLERANCE = 0.01
#: How many following days judge a promotion, and the labelled rows of each.
JUDGE_DAYS = 3
JUDGE_ROWS = 5000


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
    concept: float = 0.0
    corrupt_kind: str | None = None
    poisoned: bool = False
    live_auc: float | None = None  # the champion's ROC AUC on the labels that arrived today
    degraded: bool | None = None  # the performance monitor's verdict (None: not run)
    monitor_run_id: str | None = None  # the performance monitor's flow run that day
    labels_day: int | None = None  # the day whose requests' labels the monitor judged


@dataclass
class SimulationResult:
    """The rows, the summary figures (as printed last) and the promotions judged."""

    scenario: Scenario
    rows: list[DayResult]
    figures: dict[str, Any]
    judgements: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0


def batch_drift(day: int, *, drift_start: int, drift_level: float) -> float:
    """The drift level of day ``day``'s batch: 0 before ``drift_start``, then ``drift_level``."""
    return 0.0 if day < drift_start else float(drift_level)


def legacy_scenario(*, days: int = 10, drift_start: int = 6, corrupt_day: int | None = 3, drift_level: float = 2.0,
                    seed: int = 0, n_rows: int = 1500, n_estimators: int = 30) -> Scenario:
    """The scenario the options ``--days --drift-start --corrupt-day --drift-level`` describe
    (their defaults: the shipped ``covariate-drift``)."""
    from tracking_plugin.errors import InvalidArgument

    if days < 1:
        raise InvalidArgument(f"days must be at least 1, got {days}.")
    if drift_level < 0:
        raise InvalidArgument(f"drift_level must be >= 0, got {drift_level}.")
    return Scenario(
        name="covariate-drift", days=days, rows=n_rows, seed=seed, n_estimators=n_estimators,
        description="The features shift (generator drift) from a start day; optionally one corrupted batch.",
        drifts=[Drift(kind="covariate", start=drift_start, level=drift_level)] if drift_level > 0 else [],
        corrupted=[CorruptedDay(day=corrupt_day)] if corrupt_day is not None else [],
    )


# --------------------------------------------------------------------------- the client


@dataclass
class _Traffic:
    """The requests of one day: whose rows they sent (to label them later)."""

    features: list[list[Any]]
    labels: list[int]
    sent: list[tuple[str, list[int]]] = field(default_factory=list)  # (request id, row indices), answered
    requests: int = 0
    failed: int = 0


class _ClientLoop:
    """Queries the served model at a steady rate; counts per day. Runs in a process of its
    own (:class:`_Client`), so the training in the simulating process does not hold it back."""

    def __init__(self, endpoint: str, scenario: Scenario, rate: float, rows_per_request: int) -> None:
        from prefect_mlops.flows.data import FEATURE_COLUMNS

        self.endpoint, self.scenario = endpoint, scenario
        self.columns = list(FEATURE_COLUMNS)
        self.interval = 1.0 / rate
        self.rows_per_request = rows_per_request
        self.days: dict[int, _Traffic] = {}
        self.day = -1
        self.times: list[tuple[float, bool]] = []  # (monotonic time, ok) of every request
        self.ok_rows = 0
        self.sent_count = 0
        self.ok_rows_by_day_end: dict[int, int] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def set_day(self, day: int) -> None:
        traffic = _traffic(self.scenario, day)
        with self.lock:
            if self.day >= 0:
                self.ok_rows_by_day_end[self.day] = self.ok_rows
            self.days[day] = traffic
            self.day = day

    def run(self, lane: int = 0, lanes: int = 1) -> None:
        """One of ``lanes`` paced senders: together they keep the rate even when a request
        takes longer than the interval between two (a busy machine, a model being swapped)."""
        interval = self.interval * lanes
        next_at = time.monotonic() + self.interval * lane
        with httpx.Client(base_url=self.endpoint, timeout=10.0) as http:
            while not self.stop.wait(max(0.0, next_at - time.monotonic())):
                with self.lock:
                    day, traffic = self.day, self.days[self.day]
                    counter = self.sent_count
                    self.sent_count += 1
                start = (counter * self.rows_per_request) % len(traffic.features)
                picked = [(start + i) % len(traffic.features) for i in range(self.rows_per_request)]
                request_id = f"sim-d{day:03d}-{counter:07d}"
                payload = {"dataframe_split": {"columns": self.columns, "data": [traffic.features[i] for i in picked]}}
                try:
                    response = http.post("/invocations", json=payload, headers={"X-Request-ID": request_id})
                    ok = response.status_code == 200 and len(response.json().get("predictions", [])) == len(picked)
                except (httpx.HTTPError, ValueError):
                    ok = False
                with self.lock:
                    traffic.requests += 1
                    if ok:
                        traffic.sent.append((request_id, picked))
                        self.ok_rows += len(picked)
                    else:
                        traffic.failed += 1
                    self.times.append((time.monotonic(), ok))
                next_at += interval
                if next_at < time.monotonic() - 1.0:  # far behind (the machine was busy): no burst to catch up
                    next_at = time.monotonic()

    def answer(self, command: str, arg: Any) -> Any:
        with self.lock:
            if command == "labels":  # (request id, row, label) of the day's answered requests
                traffic = self.days.get(arg)
                return [] if traffic is None else [
                    (rid, j, traffic.labels[i]) for rid, picked in traffic.sent for j, i in enumerate(picked)]
            if command == "counts":
                return {d: (t.requests, t.failed) for d, t in self.days.items()}
            if command == "ok_rows":  # rows answered up to the end of day arg (None: so far)
                return self.ok_rows if arg is None else self.ok_rows_by_day_end.get(arg, self.ok_rows)
            if command == "rate":
                start, end = arg
                count = sum(1 for t, _ in self.times if start <= t <= end)
                return count / max(end - start, 1e-9)
        raise ValueError(command)


#: Paced senders in the client process (each at rate / _LANES).
_LANES = 4


def _client_main(conn: Any, endpoint: str, scenario_json: str, rate: float, rows_per_request: int, day: int) -> None:
    loop = _ClientLoop(endpoint, Scenario.model_validate_json(scenario_json), rate, rows_per_request)
    loop.set_day(day)
    lanes = _LANES
    threads = [threading.Thread(target=loop.run, args=(i, lanes), name=f"simulate-client-{i}", daemon=True)
               for i in range(lanes)]
    for thread in threads:
        thread.start()
    while True:
        command, arg = conn.recv()
        if command == "stop":
            loop.stop.set()
            for thread in threads:
                thread.join(15)
            with loop.lock:
                loop.ok_rows_by_day_end[loop.day] = loop.ok_rows
            conn.send(({d: (t.requests, t.failed) for d, t in loop.days.items()}, loop.ok_rows))
            return
        conn.send(None if command == "day" else loop.answer(command, arg))
        if command == "day":
            loop.set_day(arg)


class _Client:
    """The client process: a steady stream of requests, each with an ``X-Request-ID`` kept
    with the rows it sent, so their labels can arrive later."""

    def __init__(self, endpoint: str, scenario: Scenario, day: int) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_client_main, name="simulate-client", daemon=True,
            args=(child, endpoint, scenario.model_dump_json(), scenario.load.requests_per_second,
                  scenario.load.rows_per_request, day),
        )
        self._process.start()
        self.counts: dict[int, tuple[int, int]] = {}
        self.ok_rows = 0

    def ask(self, command: str, arg: Any = None) -> Any:
        self._conn.send((command, arg))
        return self._conn.recv()

    def set_day(self, day: int) -> None:
        self.ask("day", day)

    def requests_on(self, day: int) -> int:
        return int(self.ask("counts").get(day, (0, 0))[0])

    def stop(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("stop", None))
                self.counts, self.ok_rows = self._conn.recv()
            except (EOFError, OSError):
                pass
        self._process.join(20)
        if self._process.is_alive():
            self._process.kill()


def _traffic(scenario: Scenario, day: int) -> _Traffic:
    from prefect_mlops.flows.data import FEATURE_COLUMNS, LABEL_COLUMN
    from prefect_mlops.flows.scenario import clean_generator

    frame = clean_generator(scenario, day, seed_offset=1000, n_rows=2000).load()
    return _Traffic(features=frame[list(FEATURE_COLUMNS)].astype(object).values.tolist(),
                    labels=frame[LABEL_COLUMN].astype(int).tolist())


def _log_stats(endpoint: str) -> dict[str, Any]:
    try:
        return dict(httpx.get(f"{endpoint}/metadata", timeout=5.0).json().get("prediction_log") or {})
    except (httpx.HTTPError, ValueError):
        return {}


def _wait_for_log(endpoint: str, rows: int, timeout: float = 20.0) -> dict[str, Any]:
    """Wait until the server has written (or dropped) ``rows`` logged rows."""
    deadline = time.monotonic() + timeout
    while True:
        stats = _log_stats(endpoint)
        done = int(stats.get("logged_rows", 0)) + int(stats.get("dropped_rows", 0))
        if done >= rows or time.monotonic() > deadline:
            return stats
        time.sleep(0.25)


# --------------------------------------------------------------------------- batches


def _source(scenario: Scenario, day: int, workdir: Path) -> tuple[str, str | None, bool]:
    """The day's batch URI, its corruption kind (or None) and whether it is poisoned."""
    from prefect_mlops.flows.scenario import clean_generator, corrupt_batch, poison_batch
    from tracking_plugin.tables import write_table

    corrupted = {c.day: c.kind for c in scenario.corrupted}.get(day)
    poisoned = {p.day: p.label_noise for p in scenario.poisoned}.get(day)
    generator = clean_generator(scenario, day)
    if corrupted == "generator":
        from dataclasses import replace

        return replace(generator, corrupt=True).describe(), corrupted, False
    if corrupted is None and poisoned is None:
        return generator.describe(), None, False
    frame = generator.load()
    if corrupted is not None:
        frame, name = corrupt_batch(frame, corrupted, scenario.seed + day), f"day-{day:03d}-{corrupted}"
    else:
        frame, name = poison_batch(frame, float(poisoned or 0), scenario.seed + day), f"day-{day:03d}-poisoned"
    path = workdir / "batches" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table(frame, str(path))
    return str(path), corrupted, poisoned is not None


def _write_labels(rows: list[tuple[str, int, int]], path: Path) -> int:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["request_id", "row", "churn"]).to_csv(path, index=False)
    return len(rows)


# --------------------------------------------------------------------------- the loop


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
    workdir: str | Path | None = None,
) -> list[DayResult]:
    """Today's covariate-drift simulation with its options; returns the table's rows.

    See :func:`simulate_scenario` for any scenario (and the summary).
    """
    scenario = legacy_scenario(days=days, drift_start=drift_start, corrupt_day=corrupt_day, drift_level=drift_level,
                               seed=seed, n_rows=n_rows, n_estimators=n_estimators)
    return simulate_scenario(scenario, port=port, model_name=model_name, echo=echo, workdir=workdir).rows


def simulate_scenario(
    scenario: Scenario | str | Path,
    *,
    days: int | None = None,
    rows: int | None = None,
    port: int | None = 5056,
    model_name: str | None = None,
    workdir: str | Path | None = None,
    echo: Callable[[str], Any] = print,
) -> SimulationResult:
    """Run a scenario (an object, a shipped name or a YAML path), print the day-by-day
    table and the summary, and return both.

    ``days`` tells the scenario's story over that many days (see ``Scenario.with_days``);
    ``rows`` overrides its rows per batch. ``model_name`` defaults to
    ``churn-sim-<UTC time>`` so that every simulation starts without a champion. ``port``:
    where the champion is served (None: no serving, no requests, no labels). ``workdir``
    holds the prediction log, the labels and the broken batches (default: a new temporary
    folder, kept and named in the header). Flow runs go to the configured Prefect API and
    backend as usual.
    """
    from registry_tasks import RegistryClient
    from serving_tasks.deploy import stop_server
    from tracking_plugin.errors import InvalidArgument

    from prefect_mlops.flows.ct_pipeline import DataValidationFailed, ct_pipeline
    from prefect_mlops.flows.drift_monitor import drift_monitor
    from prefect_mlops.flows.performance_monitor import performance_monitor
    from prefect_mlops.flows.scenario import clean_generator, day_generator_args

    started = time.perf_counter()
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    scenario = scenario.with_days(days)
    if rows is not None:
        scenario = scenario.model_validate({**scenario.model_dump(), "rows": rows})
    model_name = model_name or time.strftime("churn-sim-%Y%m%d-%H%M%S", time.gmtime())
    registry = RegistryClient()
    if registry.get_by_alias(model_name, "champion") is not None:
        raise InvalidArgument(
            f"Model {model_name!r} already has a champion; a simulation starts without one. "
            "Pass another model name (or none, for a fresh one)."
        )
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mlops-simulate-"))
    work.mkdir(parents=True, exist_ok=True)
    log_uri = str((work / "prediction-logs").resolve())
    labels = scenario.labels if port else None
    echo(_header(scenario, model_name=model_name, work=work))

    results: list[DayResult] = []
    details: list[str] = []  # one line per failed flow of the day, printed under its row
    promotions: list[tuple[int, int, int | None]] = []  # (day, new version, replaced version)
    swaps: list[tuple[float, float]] = []  # monotonic (start, end) of runs that swapped the served model
    client: _Client | None = None
    endpoint = f"http://127.0.0.1:{port}" if port else ""
    stats: dict[str, Any] = {}
    swap_rates: list[float] = []
    try:
        for day in range(scenario.days):
            args = day_generator_args(scenario, day)
            source, corrupt_kind, poisoned = _source(scenario, day, work)
            row = DayResult(day=day, drift=args["drift"], concept=args["concept"], corrupt=corrupt_kind is not None,
                            corrupt_kind=corrupt_kind, poisoned=poisoned, source=source)
            if client:
                client.set_day(day)
            champion = registry.get_by_alias(model_name, "champion")
            retrain_source: str | None = source if champion is None else None

            # 1. labels of the requests served delay_days ago arrive; the performance monitor judges them
            arrived = day - labels.delay_days if labels else -1
            arrived_labels = client.ask("labels", arrived) if client and labels and arrived >= 0 else []
            if champion is not None and arrived_labels:
                labels_file = work / "labels" / f"day-{arrived:03d}.csv"
                _write_labels(arrived_labels, labels_file)
                _wait_for_log(endpoint, client.ask("ok_rows", arrived))
                labelled_source = clean_generator(scenario, arrived).describe()
                state = performance_monitor(
                    predictions_uri=log_uri, labels_source=str(labels_file), model_name=model_name,
                    margin=labels.margin, min_labels=labels.min_labels, retrain_source=labelled_source,
                    return_state=True,
                )
                row.monitor_run_id, row.labels_day = str(state.state_details.flow_run_id), arrived
                if state.is_completed():
                    out = state.result()
                    row.degraded = bool(out["degraded"])
                    auc = out.get("latest_roc_auc")
                    row.live_auc = None if auc is None or math.isnan(auc) else float(auc)
                    if row.degraded:
                        retrain_source = labelled_source
                else:
                    details.append(_detail(day, "performance monitor", state.result(raise_on_failure=False)))

            # 2. the drift monitor on the day's batch
            if champion is not None:
                state = drift_monitor(source=source, model_name=model_name, return_state=True)
                if state.is_completed():
                    out = state.result()
                    row.valid, row.drift_score, row.drifted = True, out["drift_score"], bool(out["drifted"])
                    if row.drifted:
                        retrain_source = source
                else:
                    error = state.result(raise_on_failure=False)
                    if isinstance(error, DataValidationFailed):
                        row.valid, row.note = False, "batch quarantined"
                    else:
                        row.note = f"drift monitor: {type(error).__name__}"
                    details.append(_detail(day, "drift monitor", error))
            # 3. the nightly retraining takes a poisoned batch (it passes validation)
            if poisoned and row.valid is not False:
                retrain_source = source

            if retrain_source is not None:
                before = champion.version if champion else None
                swap_start = time.monotonic()
                state = ct_pipeline(
                    source=retrain_source, model_name=model_name, n_estimators=scenario.n_estimators, serve_port=port,
                    serve_log_predictions=1.0 if port else None, prediction_log_uri=log_uri if port else None,
                    return_state=True,
                )
                failure: Any = None if state.is_completed() else state.result(raise_on_failure=False)
                if failure is not None:
                    details.append(_detail(day, "ct_pipeline", failure))
                if isinstance(failure, DataValidationFailed):
                    row.valid, row.note = False, "batch quarantined"
                else:
                    row.valid = True if row.valid is None else row.valid
                    row.retrained = True
                    if failure is None:
                        out = state.result()
                        row.gate_passed = bool(out["promoted"])
                        if row.gate_passed:
                            promotions.append((day, int(out["model_version"]), before))
                            if client:
                                swaps.append((swap_start, time.monotonic()))
                        if retrain_source != source:
                            row.note = f"retrained on day {arrived}'s labelled batch"
                        if poisoned:
                            row.note = "poisoned batch: " + ("PROMOTED" if row.gate_passed else "gate rejected it")
                    else:
                        row.note = f"ct_pipeline: {type(failure).__name__}"
            champion = registry.get_by_alias(model_name, "champion")
            row.champion_version = champion.version if champion else None
            if client is None and champion is not None and port:
                client = _Client(endpoint, scenario, day)
            # a day lasts until the client has sent its share of requests
            if client and day < scenario.days - 1:
                deadline = time.monotonic() + 60
                while client.requests_on(day) < scenario.load.min_requests_per_day and time.monotonic() < deadline:
                    time.sleep(0.05)
            results.append(row)
            echo(_line(row, requests=False, labels=labels is not None))
            for detail in details:
                echo(detail)
            details.clear()
        if client:
            swap_rates = [client.ask("rate", window) for window in swaps]
            client.stop()  # then every answered request is in the log, or counted as dropped
            stats = _wait_for_log(endpoint, client.ok_rows)
    finally:
        if client:
            client.stop()
            for row in results:
                row.requests, row.failed_requests = client.counts.get(row.day, (0, 0))
        if port:
            stop_server(port)
    judgements = _judge_promotions(scenario, model_name, promotions)
    figures = _figures(scenario, results, judgements, stats, swap_rates)
    result = SimulationResult(scenario=scenario, rows=results, figures=figures, judgements=judgements,
                              wall_seconds=time.perf_counter() - started)
    echo("")
    echo(render_table(results, requests=bool(port), labels=labels is not None))
    echo("")
    echo(render_summary(result))
    return result


# --------------------------------------------------------------------------- judging


def _judge_promotions(scenario: Scenario, model_name: str, promotions: list[tuple[int, int, int | None]]) -> list[dict[str, Any]]:
    """Each promotion that replaced a version, judged on the labels of the next days:
    both versions' ROC AUC on the clean batches of days d+1 .. d+JUDGE_DAYS."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from prefect_mlops.flows.data import FEATURE_COLUMNS, LABEL_COLUMN
    from prefect_mlops.flows.scenario import clean_generator
    from tracking_plugin.models import load_model

    models: dict[int, Any] = {}

    def model(version: int) -> Any:
        if version not in models:
            models[version] = load_model(f"models:/{model_name}/{version}").get_raw_model()
        return models[version]

    out = []
    for day, new, old in promotions:
        if old is None:
            continue
        following = range(day + 1, day + 1 + JUDGE_DAYS)
        frame = pd.concat([clean_generator(scenario, d, seed_offset=2000, n_rows=JUDGE_ROWS).load()
                           for d in following], ignore_index=True)
        x, y = frame[list(FEATURE_COLUMNS)], frame[LABEL_COLUMN]
        new_auc = float(roc_auc_score(y, model(new).predict_proba(x)[:, 1]))
        old_auc = float(roc_auc_score(y, model(old).predict_proba(x)[:, 1]))
        out.append({"day": day, "version": new, "replaced": old, "days": [following.start, following.stop - 1],
                    "roc_auc": new_auc, "replaced_roc_auc": old_auc,
                    "regression": new_auc < old_auc - REGRESSION_TOLERANCE})
    return out


def _detection(scenario: Scenario, rows: list[DayResult]) -> dict[str, int | None]:
    """Days from each drift kind's onset to its first detection. The performance monitor
    detects concept drift only from labels of requests served since the onset: an alarm
    judged on older labels is a false alarm (``_false_alarms``), not a detection."""
    found: dict[str, int | None] = {}
    for kind in scenario.drift_kinds():
        onset = min(d.start for d in scenario.drifts if d.kind == kind)
        if kind == "concept":
            hits = [r.day for r in rows if r.degraded and r.labels_day is not None and r.labels_day >= onset]
        else:
            hits = [r.day for r in rows if r.day >= onset and r.drifted]
        found[kind] = hits[0] - onset if hits else None
    return found


def _false_alarms(scenario: Scenario, rows: list[DayResult]) -> int:
    """Days the performance monitor flagged the champion on labels of requests served
    before any concept drift began (the simulator knows the truth; the monitor does not)."""
    onsets = [d.start for d in scenario.drifts if d.kind == "concept"]
    onset = min(onsets) if onsets else None
    return sum(1 for r in rows if r.degraded and r.labels_day is not None and (onset is None or r.labels_day < onset))


def _figures(scenario: Scenario, rows: list[DayResult], judgements: list[dict[str, Any]], stats: dict[str, Any],
             swap_rates: list[float]) -> dict[str, Any]:
    corrupted = [r for r in rows if r.corrupt]
    poisoned = [r for r in rows if r.poisoned]
    figures: dict[str, Any] = {
        "corrupted_stopped": f"{sum(r.valid is False and not r.retrained for r in corrupted)}/{len(corrupted)}",
        "regressions_promoted": sum(j["regression"] for j in judgements),
        "failed_requests": sum(r.failed_requests for r in rows),
    }
    for kind, days in _detection(scenario, rows).items():
        figures[f"detection_days.{kind}"] = "none" if days is None else days
    if any(r.labels_day is not None for r in rows):
        figures["performance_false_alarms"] = _false_alarms(scenario, rows)
    figures["predictions_logged"] = int(stats.get("logged_rows", 0))
    figures["predictions_dropped"] = int(stats.get("dropped_rows", 0))
    if poisoned:
        figures["poisoned_rejected"] = f"{sum(r.retrained and r.gate_passed is False for r in poisoned)}/{len(poisoned)}"
    figures["requests"] = sum(r.requests for r in rows)
    figures["swaps"] = len(swap_rates)
    if swap_rates:
        figures["swap_requests_per_second_min"] = round(min(swap_rates), 1)
    return figures


# --------------------------------------------------------------------------- printing


def _header(scenario: Scenario, *, model_name: str, work: Path) -> str:
    """What the replayed days hold: only what falls within them."""
    last = scenario.days - 1
    parts = []
    for drift in scenario.drifts:
        what = f"{drift.kind} drift {drift.level:g} from day {drift.start}"
        if drift.ramp_days > 1:
            what += f" (reached over {drift.ramp_days} days)"
        if drift.start > last:
            what = f"no {drift.kind} drift (it starts on day {drift.start}, after the last day, {last})"
        parts.append(what)
    if not scenario.drifts:
        parts.append("no drift")
    inside = [c for c in scenario.corrupted if c.day <= last]
    if inside:
        days = ", ".join(f"{c.day} ({c.kind})" if c.kind != "generator" else str(c.day) for c in inside)
        parts.append(f"a corrupted batch on day{'s' if len(inside) > 1 else ''} {days}")
    elif scenario.corrupted:
        parts.append(f"no corrupted batch (day {scenario.corrupted[0].day} is after the last day, {last})")
    else:
        parts.append("no corrupted batch")
    for poisoned in scenario.poisoned:
        if poisoned.day <= last:
            parts.append(f"{poisoned.label_noise:.0%} of day {poisoned.day}'s labels flipped")
    if scenario.labels:
        parts.append(f"labels {scenario.labels.delay_days} day(s) late")
    return (f"Simulating days 0-{last} for model {model_name!r} (scenario {scenario.name}): {', '.join(parts)}, "
            f"{scenario.rows} rows a day, {scenario.load.requests_per_second:g} requests/s; work folder {work}")


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
_LABEL_COLUMNS = (("concept", 7), ("live auc", 8), ("degraded", 8))


def _line(row: DayResult, *, requests: bool = True, labels: bool = False) -> str:
    cells = [
        f"{row.day:>3}", f"{row.drift:>5.2f}", f"{_flag(row.valid):>5}",
        f"{'-' if row.drift_score is None else f'{row.drift_score:.3f}':>11}", f"{_flag(row.drifted):>7}",
        f"{_flag(row.retrained):>9}", f"{_flag(row.gate_passed):>4}",
        f"{'-' if row.champion_version is None else f'v{row.champion_version}':>8}",
    ]
    if labels:
        cells += [f"{row.concept:>7.2f}", f"{'-' if row.live_auc is None else f'{row.live_auc:.3f}':>8}",
                  f"{_flag(row.degraded):>8}"]
    if requests:
        cells += [f"{row.requests:>8}", f"{row.failed_requests:>6}"]
    note = row.note or (f"corrupted: {row.corrupt_kind}" if row.corrupt_kind and row.corrupt_kind != "generator" else "")
    if row.corrupt_kind and row.corrupt_kind != "generator" and row.note:
        note = f"{row.note} ({row.corrupt_kind})"
    return "  ".join(cells) + (f"  {note}" if note else "")


def render_table(rows: list[DayResult], *, requests: bool = True, labels: bool = False) -> str:
    """The day-by-day table as plain text (``requests``: with the served-requests columns;
    ``labels``: with the performance monitor's).

    ``drift`` is the batch's generated drift level, ``drift score`` the largest feature PSI
    against the champion's training data (``drifted`` when over the threshold), ``gate``
    whether the retrained candidate was promoted, ``champion`` the version serving after
    the day, ``concept`` the generator's concept drift, ``live auc`` the champion's ROC AUC
    on the labels that arrived that day (``degraded`` the performance monitor's verdict),
    ``requests`` / ``failed`` what the background client saw that day.
    """
    names = [f"{name:>{width}}" for name, width in _COLUMNS]
    if labels:
        names += [f"{name:>{width}}" for name, width in _LABEL_COLUMNS]
    if requests:
        names += [f"{'requests':>8}", f"{'failed':>6}"]
    header = "  ".join(names)
    return "\n".join([header, "-" * len(header), *(_line(r, requests=requests, labels=labels) for r in rows)])


_MACHINE_FIRST = ("corrupted_stopped", "regressions_promoted", "failed_requests")


def render_summary(result: SimulationResult) -> str:
    """A few plain sentences, then the figures as ``key: value`` lines, last."""
    f = result.figures
    scenario = result.scenario
    lines = [f"Summary of scenario {scenario.name!r} over {scenario.days} days ({result.wall_seconds:.0f} s):"]
    stopped, corrupted = f["corrupted_stopped"].split("/")
    lines.append(f"  corrupted batches stopped by validation: {stopped} of {corrupted}")
    judged = result.judgements
    lines.append(f"  promotions replacing a champion, judged on the next {JUDGE_DAYS} days' labels: {len(judged)}, "
                 f"regressions: {f['regressions_promoted']}")
    for j in judged:
        lines.append(f"    day {j['day']}: v{j['version']} ROC AUC {j['roc_auc']:.3f} vs v{j['replaced']} "
                     f"{j['replaced_roc_auc']:.3f} on days {j['days'][0]}-{j['days'][1]}"
                     + ("  REGRESSION" if j["regression"] else ""))
    if "poisoned_rejected" in f:
        lines.append(f"  poisoned batches whose model the gate rejected: {f['poisoned_rejected'].replace('/', ' of ')}")
    swaps = f"; {f['swaps']} model swap(s), at least {f['swap_requests_per_second_min']} requests/s during each" \
        if f.get("swaps") else ""
    lines.append(f"  requests: {f['requests']:,}, failed: {f['failed_requests']}{swaps}")
    for kind in scenario.drift_kinds():
        onset = min(d.start for d in scenario.drifts if d.kind == kind)
        days = f[f"detection_days.{kind}"]
        by = "performance monitor" if kind == "concept" else "drift monitor"
        lines.append(f"  {kind} drift from day {onset}: "
                     + (f"not detected by the {by}" if days == "none" else f"detected by the {by} {days} day(s) later"))
    lines.append(f"  predictions logged: {f['predictions_logged']:,}, dropped: {f['predictions_dropped']:,}")
    keys = [*_MACHINE_FIRST, *(k for k in f if k.startswith("detection_days.")), "predictions_logged",
            "predictions_dropped",
            *(k for k in ("poisoned_rejected", "performance_false_alarms", "swap_requests_per_second_min") if k in f)]
    lines += [f"{key}: {f[key]}" for key in keys]
    return "\n".join(lines)
