"""The UI's own queries on both databases: run counts, downsampling on the step and time
axes (the SQL differs: per-bucket range aggregates vs one GROUP BY), sparklines."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import pytest

from serving_tasks.tracking_server.ui import queries
from tracking_plugin.entities import Metric, Param
from tracking_plugin.errors import InvalidArgument
from tracking_plugin.store.sql import SqlStore


@pytest.fixture
def store(db_uri: str) -> Iterator[SqlStore]:
    s = SqlStore.from_uri(db_uri)
    s.db.upgrade()
    yield s
    s.close()


def test_downsampling_keeps_spikes_on_both_axes_and_counts_every_point(store: SqlStore, tmp_path: Path) -> None:
    exp = store.create_experiment("q", str(tmp_path / "artifacts"))
    run = store.create_run(exp, user_id="u", start_time=1_000, run_name="r").info.run_id
    n = 9_000
    points = [Metric("loss", 1.0 + math.sin(s / 50), 1_000 + 7 * s, s) for s in range(n)]
    points[4321] = Metric("loss", 99.0, 1_000 + 7 * 4321, 4321)
    points[77] = Metric("loss", -42.0, 1_000 + 7 * 77, 77)
    points.append(Metric("loss", float("nan"), 1_000 + 7 * n, n))  # left out
    for i in range(0, len(points), 1_000):
        store.log_batch(run, metrics=points[i:i + 1_000], params=[Param("p", "1")] if i == 0 else [])
    for axis in ("step", "time"):
        h = queries.downsampled_history(store, run, "loss", axis=axis, buckets=100)  # type: ignore[arg-type]
        assert h.sampled and h.total == n and len(h.x) <= 200, axis
        assert max(h.y) == 99.0 and min(h.y) == -42.0, axis  # type: ignore[type-var]
        assert h.x == sorted(h.x), axis
    exact = queries.downsampled_history(store, run, "loss", lo=4300, hi=4350)
    assert not exact.sampled and exact.x == [float(s) for s in range(4300, 4351)] and 99.0 in exact.y
    values, length = queries.sparkline_values(store, run, "loss")
    assert length == n + 1 and len(values) == 48 and values[0] == pytest.approx(1.0)
    [overview] = [e for e in queries.experiments_overview(store, "q") if e.experiment_id == exp]
    assert overview.run_count == 1 and overview.last_activity == 1_000
    keys = queries.run_keys(store, [run])
    assert keys["metrics"] == ["loss"] and keys["params"] == ["p"]
    with pytest.raises(InvalidArgument, match="buckets"):
        queries.downsampled_history(store, run, "loss", buckets=queries.MAX_BUCKETS + 1)
