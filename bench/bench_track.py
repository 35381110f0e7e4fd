"""Overhead of ``@track``: the same flow of 100 trivial tasks, untracked and tracked.

    python bench/bench_track.py [--rounds 9] [--tasks 100]

Runs in one process against a local Prefect test server (``prefect_test_harness``), with
Prefect's flow heartbeat off (as in the test suite) so the flow's own fixed cost does not
hide or inflate the difference. Each round runs the variants in turn (interleaved, after a
warm-up, with a short pause so the server drains its event backlog between flows). The
headline figures use the fastest run of each variant, as ``timeit`` does: other processes
on a shared machine only ever add time, and the fastest run is the closest to the code's
own cost. Medians and this process's CPU time are reported too.

- ``untracked``: ``@flow`` calling an ``@task`` 100 times;
- ``tracked``: the same with ``@track`` on the flow (the tasks log nothing themselves);
- ``tracked_tasks``: ``@track`` on the flow *and* the task: a child run per task run.

Prints a markdown table row, then (last line) one JSON object for ``bench/run.py``.
The target (issue 3): at most 5% more wall time, or at most 2 ms per tracked task.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _flows(n_tasks: int):  # type: ignore[no-untyped-def]
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    from tracking_plugin.prefect import track

    @task(cache_policy=NO_CACHE)
    def step(i: int) -> int:
        return i + 1

    def body(n: int, task_fn) -> dict[str, float]:  # type: ignore[no-untyped-def]
        total = 0
        for i in range(n):
            total += task_fn(i)
        return {"total": float(total)}

    @flow(name="bench-untracked")
    def untracked(n: int = n_tasks) -> dict[str, float]:
        return body(n, step)

    @track(experiment="bench-track")
    @flow(name="bench-tracked")
    def tracked(n: int = n_tasks) -> dict[str, float]:
        return body(n, step)

    tracked_step = track(step)

    @track(experiment="bench-track-tasks")
    @flow(name="bench-tracked-tasks")
    def tracked_tasks(n: int = n_tasks) -> dict[str, float]:
        return body(n, tracked_step)

    return {"untracked": untracked, "tracked": tracked, "tracked_tasks": tracked_tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--tasks", type=int, default=100)
    # The test server persists each flow's task-run events after the flow returns; a flow
    # started while it is still busy takes 2-6x longer whatever is measured. 6 s drains it.
    parser.add_argument("--pause", type=float, default=6.0, help="seconds between runs (not timed)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-track-"))
    os.environ["PREFECT_MLOPS_TRACKING_URI"] = f"sqlite:///{workdir / 'mlops.db'}"
    os.environ["PREFECT_MLOPS_ARTIFACT_ROOT"] = str(workdir / "artifacts")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # this process's CPU time: steadier on a busy machine
    with prefect_test_harness(server_startup_timeout=180), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        flows = _flows(args.tasks)
        for fn in flows.values():  # warm-up: imports, schema creation, first API calls
            fn()
        for _ in range(args.rounds):
            for name, fn in flows.items():
                time.sleep(args.pause)
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                times.setdefault(name, []).append(time.perf_counter() - start)
                cpu.setdefault(name, []).append(time.process_time() - start_cpu)

    best = {name: min(values) for name, values in times.items()}
    med = {name: statistics.median(values) for name, values in times.items()}
    med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    overhead = best["tracked"] - best["untracked"]
    overhead_tasks = best["tracked_tasks"] - best["untracked"]
    result = {
        "tasks": args.tasks,
        "rounds": args.rounds,
        "statistic": "min",
        "untracked_s": best["untracked"],
        "tracked_s": best["tracked"],
        "overhead_pct": 100 * overhead / best["untracked"],
        "overhead_ms_per_task": 1000 * overhead / args.tasks,
        "tracked_tasks_s": best["tracked_tasks"],
        "tracked_tasks_overhead_pct": 100 * overhead_tasks / best["untracked"],
        "tracked_tasks_overhead_ms_per_task": 1000 * overhead_tasks / args.tasks,
        "median_untracked_s": med["untracked"],
        "median_tracked_s": med["tracked"],
        "median_tracked_tasks_s": med["tracked_tasks"],
        "cpu_untracked_s": med_cpu["untracked"],
        "cpu_tracked_s": med_cpu["tracked"],
        "cpu_tracked_tasks_s": med_cpu["tracked_tasks"],
        "cpu_overhead_ms_per_task": 1000 * (med_cpu["tracked"] - med_cpu["untracked"]) / args.tasks,
        "cpu_tracked_tasks_overhead_ms_per_task": 1000 * (med_cpu["tracked_tasks"] - med_cpu["untracked"]) / args.tasks,
        "samples": times,
        "cpu_samples": cpu,
    }
    print(
        f"| @track, flow of {args.tasks} trivial tasks (fastest of {args.rounds}) | untracked {best['untracked']:.3f} s "
        f"| tracked flow {best['tracked']:.3f} s ({result['overhead_pct']:+.1f}%, "
        f"{result['overhead_ms_per_task']:.2f} ms/task) | tracked flow + tasks {best['tracked_tasks']:.3f} s "
        f"({result['tracked_tasks_overhead_pct']:+.1f}%, {result['tracked_tasks_overhead_ms_per_task']:.2f} ms/task) "
        "| <= 5% or <= 2 ms/task |"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
