"""``bench/rest.py`` in interleaved rounds: ours, mlflow server and the floor, side by side.

    python bench/rest_rounds.py [ROUNDS]      (default 3; PEER_PYTHON as bench/run.py)

On a shared machine single runs drift with other load; here each round runs the three
sides one after the other (the order rotating from round to round), each in a fresh work
folder and server, and the answer is the median of each figure over the rounds with the
ratios mlflow/ours (the gain) and mlflow/floor (the most any server could gain), plus the
load average before and after. Takes about 2.5 minutes a round.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Absolute (not resolved: the venv's python is a symlink): servers start in other folders.
PEER = os.path.abspath(os.environ.get("PEER_PYTHON", str(ROOT / ".venv-peer" / "bin" / "python")))
SIDES = ("ours", "mlflow", "floor")
# figure -> True when bigger is better (ratios are then side/mlflow, else mlflow/side)
FIGURES = {"log_metric_ms": False, "log_batch_points_per_s": True, "runs_per_s": True, "search_ms": False}


def _load() -> str:
    """The 1, 5 and 15 minute load averages (what else ran on the cores)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _one(side: str, work: Path) -> dict:
    env = dict(os.environ)
    env.setdefault("OURS_SERVER", str(Path(sys.executable).parent / "prefect-mlops"))
    out = subprocess.run([PEER, str(HERE / "rest.py"), side, str(work)], capture_output=True, text=True, env=env,
                         check=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def main(rounds: int) -> dict:
    results: dict[str, list[dict]] = {side: [] for side in SIDES}
    load_before = _load()
    for r in range(rounds):
        order = SIDES[r % 3:] + SIDES[: r % 3]
        for side in order:
            work = Path(tempfile.mkdtemp(prefix=f"rest-{side}-"))
            try:
                results[side].append(_one(side, work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(f"round {r + 1} {side}: " + json.dumps({k: round(results[side][-1][k], 2) for k in FIGURES}),
                  file=sys.stderr, flush=True)
    medians = {side: {k: statistics.median(x[k] for x in results[side]) for k in FIGURES} for side in SIDES}

    def gain(side: str, key: str) -> float:
        a, b = medians[side][key], medians["mlflow"][key]
        return a / b if FIGURES[key] else b / a

    return {
        "rounds": rounds, "load_before": load_before, "load_after": _load(), "medians": medians,
        "ours_vs_mlflow": {k: round(gain("ours", k), 2) for k in FIGURES},
        "floor_vs_mlflow": {k: round(gain("floor", k), 2) for k in FIGURES},
        "search_hits": sorted({x["search_hits"] for side in SIDES for x in results[side]}),
        "search_runs": results["ours"][0]["search_runs"],
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=1))
