"""Interleaved A/B of this tree's tracking workloads against another checkout (e.g. main).

    git archive main | tar -x -C /tmp/base
    .venv/bin/python bench/ab.py /tmp/base [log_metric lifecycle log_batch search]

Both sides run ``bench/ours.py`` of their own tree with this venv's Python (``PYTHONPATH``
picks the tree), in alternating order: one-shot workloads (log_metric, lifecycle) as
alternating fresh processes, the others as two processes whose timed rounds alternate
(as bench/run.py does against MLflow). Prints each side's median and old/new; a busy
machine slows both sides alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# workload -> (kind, rounds, calls per round, result key, higher is better)
WORKLOADS = {
    "log_metric": ("oneshot", 6, 0, "log_metric_ms", False),
    "lifecycle": ("oneshot", 6, 0, "runs_per_s", True),
    "log_batch": ("rounds", 12, 1, "", False),
    "search": ("rounds", 25, 6, "", False),
}


def _command(tree: Path, name: str, workdir: str) -> tuple[list[str], dict[str, str]]:
    return [sys.executable, str(tree / "bench" / "ours.py"), name, workdir], {**os.environ, "PYTHONPATH": str(tree)}


def _oneshot(trees: dict[str, Path], name: str, rounds: int, key: str) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {label: [] for label in trees}
    for number in range(rounds):
        for label in list(trees) if number % 2 == 0 else list(trees)[::-1]:
            with tempfile.TemporaryDirectory() as workdir:
                command, env = _command(trees[label], name, workdir)
                proc = subprocess.run(command, env=env, cwd=trees[label], capture_output=True, text=True)
                if proc.returncode:
                    raise RuntimeError(f"{label} {name} failed:\n{proc.stderr[-3000:]}")
                values[label].append(json.loads(proc.stdout.strip().splitlines()[-1])[key])
    return values


def _rounds(trees: dict[str, Path], name: str, rounds: int, calls: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {label: [] for label in trees}
    with tempfile.TemporaryDirectory() as scratch:
        procs = {}
        for label, tree in trees.items():
            command, env = _command(tree, name, os.path.join(scratch, label))
            procs[label] = subprocess.Popen(
                command, env=env, cwd=tree, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )

        def read_until(label: str, done) -> str:  # type: ignore[no-untyped-def]
            for line in procs[label].stdout:  # type: ignore[union-attr]
                if done(line.strip()):
                    return line.strip()
            raise RuntimeError(f"{label} {name} failed:\n{procs[label].stderr.read()[-3000:]}")  # type: ignore[union-attr]

        try:
            for label in procs:
                read_until(label, lambda line: line == "ready")
            for number in range(rounds):
                for label in list(trees) if number % 2 == 0 else list(trees)[::-1]:
                    procs[label].stdin.write(f"go {calls}\n")  # type: ignore[union-attr]
                    procs[label].stdin.flush()  # type: ignore[union-attr]
                    times[label].extend(json.loads(read_until(label, lambda line: line.startswith("["))))
            for proc in procs.values():
                proc.communicate("end\n", timeout=600)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
    return times


def main() -> None:
    base, names = Path(sys.argv[1]).resolve(), sys.argv[2:] or list(WORKLOADS)
    trees = {"old": base, "new": ROOT}
    for name in names:
        kind, rounds, calls, key, higher_better = WORKLOADS[name]
        values = _oneshot(trees, name, rounds, key) if kind == "oneshot" else _rounds(trees, name, rounds, calls)
        old, new = statistics.median(values["old"]), statistics.median(values["new"])
        speedup = new / old if higher_better else old / new
        unit = key or "s per call"
        print(f"{name}: old {old:.6g}, new {new:.6g} ({unit}); new is {speedup:.3f}x the old speed "
              f"({len(values['old'])} + {len(values['new'])} samples)", flush=True)


if __name__ == "__main__":
    main()
