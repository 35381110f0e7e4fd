"""prefect-mlops' side of ``bench/pg.py`` (runs in .venv)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pgside  # noqa: E402


class Ours(_pgside.Side):
    batch_points = 100_000

    def __init__(self, url: str, workdir: str) -> None:
        from tracking_plugin.client import TrackingClient

        os.environ["PREFECT_MLOPS_TRACKING_URI"] = url
        os.environ["PREFECT_MLOPS_ARTIFACT_ROOT"] = str(Path(workdir) / "artifacts")
        self.client = TrackingClient(url)
        exp = self.client.get_experiment_by_name("bench")
        self.exp = exp.experiment_id if exp is not None else self.client.create_experiment("bench")

    def experiment_id(self) -> str:
        return str(self.exp)

    def create_run(self) -> str:
        return self.client.create_run(self.exp).info.run_id

    def end_run(self, run_id: str) -> None:
        self.client.set_terminated(run_id)

    def log_param(self, run_id: str, key: str, value: str) -> None:
        self.client.log_param(run_id, key, value)

    def log_metric(self, run_id: str, key: str, value: float) -> None:
        self.client.log_metric(run_id, key, value, synchronous=True)

    def log_batch(self, run_id: str, points: list[tuple[str, float, int, int]]) -> None:
        from tracking_plugin.entities import Metric

        self.client.log_batch(run_id, metrics=[Metric(*p) for p in points], synchronous=True)

    def history(self, run_id: str, key: str) -> int:
        return len(self.client.get_metric_history(run_id, key))

    def search(self, experiment_id: str, filter_string: str, max_results: int) -> int:
        return len(self.client.search_runs([experiment_id], filter_string, max_results=max_results))


if __name__ == "__main__":
    _pgside.main(Ours)
