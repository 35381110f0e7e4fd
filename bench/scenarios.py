"""`prefect-mlops simulate --scenario X --days 30` for every shipped scenario: the summary
figures (the machine-readable lines the command prints last) and the wall time of each.

Each scenario runs as the command a user types, in a folder of its own (SQLite, a local
artifact folder, Prefect's ephemeral API under a fresh PREFECT_HOME shared by the runs),
one after the other. Prints one JSON line: {"scenarios": {name: {figures..., "wall_s"}}}.

    .venv/bin/python bench/scenarios.py <workdir> [--days 30] [--only concept-drift ...]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _figures(output: str) -> dict[str, object]:
    """The `key: value` lines after the summary's last sentence."""
    figures: dict[str, object] = {}
    for line in reversed(output.splitlines()):
        key, sep, value = line.partition(": ")
        if not sep or " " in key or line.startswith(" "):
            break
        value = value.strip()
        try:
            figures[key] = int(value)
        except ValueError:
            try:
                figures[key] = float(value)
            except ValueError:
                figures[key] = value
    return dict(reversed(list(figures.items())))


def run(name: str, days: int, workdir: Path, prefect_home: Path) -> dict[str, object]:
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_MLOPS_", "PREFECT_LOGGING"))}
    env["PREFECT_HOME"] = str(prefect_home)
    script = Path(sys.executable).with_name("prefect-mlops")
    started = time.perf_counter()
    result = subprocess.run(
        [str(script), "simulate", "--scenario", name, "--days", str(days), "--port", str(_free_port())],
        cwd=folder, env=env, capture_output=True, text=True, timeout=3600,
    )
    wall = time.perf_counter() - started
    (folder / "output.txt").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        return {"error": (result.stdout + result.stderr)[-2000:], "wall_s": round(wall, 1)}
    return {**_figures(result.stdout), "wall_s": round(wall, 1)}


def main() -> None:
    from prefect_mlops.flows.scenario import shipped_scenarios

    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--write-results", action="store_true",
                        help="put the table into bench/RESULTS.md's scenario section (make bench does)")
    args = parser.parse_args()
    names = args.only or sorted(shipped_scenarios())
    out = {}
    for name in names:
        print(f"  simulate --scenario {name} --days {args.days} ...", file=sys.stderr, flush=True)
        out[name] = run(name, args.days, args.workdir, args.workdir / "prefect-home")
        print(f"    {json.dumps(out[name])}", file=sys.stderr, flush=True)
    print(json.dumps({"days": args.days, "scenarios": out}))
    if args.write_results:
        _write_results(args.days, out)


def _write_results(days: int, out: dict[str, dict[str, object]]) -> None:
    """The scenario section of bench/RESULTS.md: one row per scenario with its figures."""
    import datetime as dt

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run  # bench/run.py: the section markers and the machine description

    table = "| scenario | figures (the summary's machine-readable lines) | wall time |\n|---|---|---|\n"
    for name, figures in out.items():
        shown = ("FAILED: " + str(figures["error"]).splitlines()[-1][:160]) if "error" in figures else ", ".join(
            f"{k} {v}" for k, v in figures.items() if k != "wall_s")
        table += f"| `{name}` | {shown} | {figures['wall_s']:.0f} s |\n"
    run.replace_section(run.SC_BEGIN, run.SC_END, run.scenarios_section(
        f"## Simulated scenarios, {days} days (issue 20)\n\nMeasured {dt.date.today().isoformat()} by "
        f"`make bench` (`bench/scenarios.py`: `prefect-mlops simulate --scenario X --days {days}` as a user "
        f"types it, one after the other): {run._machine()}. Targets: 0 regressions promoted, 0 failed "
        "requests, every corrupted batch stopped, concept drift detected within 2 days of onset (labels "
        "1 day late).\n\n" + table))


if __name__ == "__main__":
    main()
