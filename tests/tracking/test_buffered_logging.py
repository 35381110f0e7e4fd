"""Buffered metric logging: queued in the caller, written by a background thread, never lost."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import tracking_plugin as mlops
from tracking_plugin import _buffer
from tracking_plugin.entities import Metric, RunStatus
from tracking_plugin.errors import Conflict, InvalidArgument, NotFound

REPO_ROOT = Path(__file__).resolve().parents[2]


def _history(run_id: str, key: str) -> list[Metric]:
    return mlops.TrackingClient().get_metric_history(run_id, key)


def test_flush_writes_every_queued_point(tracking_env) -> None:
    with mlops.start_run() as run:
        for step in range(10_000):
            mlops.log_metric("loss", 1.0 / (step + 1), step=step, synchronous=False)
        mlops.flush()
        history = _history(run.info.run_id, "loss")
        assert [m.step for m in history] == list(range(10_000))
        assert mlops.get_run(run.info.run_id).data.metrics["loss"] == 1.0 / 10_000


def test_end_run_writes_pending_points_before_ending(tracking_env) -> None:
    run = mlops.start_run()
    mlops.log_metrics({f"m{i}": float(i) for i in range(50)}, step=1, synchronous=False)
    for step in range(2_000):
        mlops.log_metric("acc", step / 2_000, step=step, synchronous=False)
    mlops.end_run()
    stored = mlops.get_run(run.info.run_id)
    assert stored.info.status is RunStatus.FINISHED
    assert len(_history(run.info.run_id, "acc")) == 2_000
    assert len(stored.data.metrics) == 51
    # Every point was written before the status changed: none is newer than the end.
    assert max(m.timestamp for m in _history(run.info.run_id, "acc")) <= stored.info.end_time


def test_exception_in_block_drains_then_marks_failed(tracking_env) -> None:
    with pytest.raises(ValueError, match="diverged"):
        with mlops.start_run() as run:
            for step in range(3_000):
                mlops.log_metric("loss", float(step), step=step, synchronous=False)
            raise ValueError("training diverged")
    assert mlops.get_run(run.info.run_id).info.status is RunStatus.FAILED
    assert len(_history(run.info.run_id, "loss")) == 3_000


def test_bad_points_are_refused_at_the_call(tracking_env) -> None:
    with mlops.start_run() as run:
        with pytest.raises(InvalidArgument, match="'bad key!'"):
            mlops.log_metric("bad key!", 1.0, synchronous=False)
        with pytest.raises(InvalidArgument, match="real number"):
            mlops.log_metric("loss", "high", synchronous=False)
        with pytest.raises(InvalidArgument, match="step"):
            mlops.log_metric("loss", 1.0, step=1.5, synchronous=False)
        with pytest.raises(InvalidArgument, match="'x'"):
            mlops.log_metrics({"ok": 1.0, "x": None}, synchronous=False)
        mlops.flush()  # nothing bad was queued, so nothing fails in the background
    assert mlops.get_run(run.info.run_id).data.metrics == {}


def test_background_error_surfaces_on_flush_and_spares_other_runs(tracking_env) -> None:
    client = mlops.TrackingClient()
    experiment_id = client.create_experiment("errors")
    good = client.create_run(experiment_id)
    gone = client.create_run(experiment_id)
    client.delete_run(gone.info.run_id)

    client.log_metric(good.info.run_id, "m", 1.0, step=0, synchronous=False)
    client.log_metric(gone.info.run_id, "m", 1.0, synchronous=False)
    client.log_metric("f" * 32, "m", 1.0, synchronous=False)  # no such run
    client.log_metric(good.info.run_id, "m", 2.0, step=1, synchronous=False)
    with pytest.raises((Conflict, NotFound)) as excinfo:
        client.flush()
    notes = "\n".join(getattr(excinfo.value, "__notes__", []))
    assert "were not written" in notes and "Also failed" in notes  # both failures reported
    client.flush()  # reported once, not forever
    assert [m.value for m in client.get_metric_history(good.info.run_id, "m")] == [1.0, 2.0]


def test_end_run_still_ends_the_run_when_buffered_points_failed(tracking_env) -> None:
    client = mlops.TrackingClient()
    with pytest.raises(NotFound):
        with mlops.start_run() as run:
            client.log_metric("0" * 32, "lost", 1.0, synchronous=False)
    assert mlops.get_run(run.info.run_id).info.status is RunStatus.FINISHED
    assert mlops.active_run() is None


def test_user_exception_is_kept_when_buffered_points_also_failed(tracking_env) -> None:
    client = mlops.TrackingClient()
    with pytest.raises(KeyError) as excinfo:
        with mlops.start_run() as run:
            client.log_metric("0" * 32, "lost", 1.0, synchronous=False)
            raise KeyError("user error")
    assert any("while ending run" in note for note in excinfo.value.__notes__)
    assert mlops.get_run(run.info.run_id).info.status is RunStatus.FAILED


def test_async_logging_setting_makes_log_metric_buffered(tracking_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_MLOPS_ASYNC_LOGGING", "true")
    client = mlops.TrackingClient()
    # A buffered call does not touch the database, so an unknown run only fails on flush.
    client.log_metric("e" * 32, "m", 1.0)
    with pytest.raises(NotFound):
        client.flush()
    with mlops.start_run() as run:
        mlops.log_metric("m", 1.0)
        mlops.log_metric("m", 2.0, synchronous=True)  # explicit choice wins over the setting
    assert len(_history(run.info.run_id, "m")) == 2


def _run_script(tmp_path: Path, env: object, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PREFECT_MLOPS_TRACKING_URI": env.tracking_uri,  # type: ignore[attr-defined]
        "PREFECT_MLOPS_ARTIFACT_ROOT": env.artifact_root,  # type: ignore[attr-defined]
    }
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # a fresh interpreter plus 50,000 points: ~5-13 s
def test_process_exit_writes_every_buffered_point(tracking_env, tmp_path: Path) -> None:
    result = _run_script(
        tmp_path,
        tracking_env,
        """
        import tracking_plugin as mlops
        run = mlops.start_run()          # never ended: exit ends it, after the queue drains
        print(run.info.run_id)
        for step in range(50_000):
            mlops.log_metric("loss", 1.0 / (step + 1), step=step, synchronous=False)
        """,
    )
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip()
    assert len(_history(run_id, "loss")) == 50_000
    stored = mlops.get_run(run_id)
    assert stored.info.status is RunStatus.FINISHED
    assert stored.data.metrics["loss"] == 1.0 / 50_000


@pytest.mark.slow  # a fresh interpreter plus 50,000 points: ~5-13 s
def test_uncaught_exception_still_writes_every_buffered_point(tracking_env, tmp_path: Path) -> None:
    result = _run_script(
        tmp_path,
        tracking_env,
        """
        import tracking_plugin as mlops
        client = mlops.TrackingClient()
        inside = mlops.start_run()
        print(inside.info.run_id, flush=True)
        for step in range(25_000):
            mlops.log_metric("loss", float(step), step=step, synchronous=False)
        for step in range(25_000):
            client.log_metric(inside.info.run_id, "acc", float(step), step=step, synchronous=False)
        raise RuntimeError("crash after logging")
        """,
    )
    assert result.returncode == 1 and "crash after logging" in result.stderr
    run_id = result.stdout.strip()
    assert len(_history(run_id, "loss")) == 25_000
    assert len(_history(run_id, "acc")) == 25_000
    # An uncaught exception ends the still-active run as FAILED (MLflow would say FINISHED).
    assert mlops.get_run(run_id).info.status is RunStatus.FAILED


@pytest.mark.slow  # a fresh interpreter plus 50,000 points: ~5-13 s
def test_exception_in_with_block_in_a_process_writes_every_point(tracking_env, tmp_path: Path) -> None:
    result = _run_script(
        tmp_path,
        tracking_env,
        """
        import tracking_plugin as mlops
        with mlops.start_run() as run:
            print(run.info.run_id, flush=True)
            for step in range(50_000):
                mlops.log_metric("loss", float(step), step=step, synchronous=False)
            raise RuntimeError("boom")
        """,
    )
    assert result.returncode == 1 and "boom" in result.stderr
    run_id = result.stdout.strip()
    assert len(_history(run_id, "loss")) == 50_000
    assert mlops.get_run(run_id).info.status is RunStatus.FAILED


def test_forked_child_writes_only_its_own_points(sqlite_env, monkeypatch: pytest.MonkeyPatch) -> None:
    client = mlops.TrackingClient()
    experiment_id = client.create_experiment("fork")
    parent_run = client.create_run(experiment_id).info.run_id
    child_run = client.create_run(experiment_id).info.run_id
    buffer = _buffer.get_buffer()
    # Keep the parent's points queued across the fork: a long interval, no size trigger.
    monkeypatch.setattr(buffer, "interval", 30.0)
    monkeypatch.setattr(buffer, "batch_size", 1_000_000)
    client.flush()  # the writer now sleeps with the long interval
    for step in range(500):
        client.log_metric(parent_run, "m", 1.0, step=step, synchronous=False)
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            for step in range(300):
                client.log_metric(child_run, "m", 2.0, step=step, synchronous=False)
            client.flush()
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    client.flush()
    assert len(client.get_metric_history(parent_run, "m")) == 500  # not written twice
    assert len(client.get_metric_history(child_run, "m")) == 300


class RecordingStore:
    """A TrackingStore stand-in that records what the writer hands it (slowly, on demand)."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate  # the first write waits until the test sets it
        self.writing = threading.Event()
        self.calls: list[tuple[str, list[Metric]]] = []
        self.lock = threading.Lock()

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:  # type: ignore[no-untyped-def]
        self.writing.set()
        if self.gate is not None and not self.calls:
            self.gate.wait(60)
        time.sleep(self.delay)
        with self.lock:
            self.calls.append((run_id, list(metrics)))

    def points(self, run_id: str) -> list[Metric]:
        with self.lock:
            return [m for rid, batch in self.calls if rid == run_id for m in batch]


def test_writer_groups_per_run_and_respects_batch_size() -> None:
    store = RecordingStore()
    buffer = _buffer.MetricBuffer(batch_size=100, interval=30.0)
    for step in range(1_000):
        buffer.enqueue(store, "a" if step % 2 else "b", Metric("m", float(step), 1, step))  # type: ignore[arg-type]
    buffer.flush(timeout=30)
    assert [m.step for m in store.points("a")] == list(range(1, 1_000, 2))  # order kept per run
    assert [m.step for m in store.points("b")] == list(range(0, 1_000, 2))
    assert max(len(batch) for _, batch in store.calls) <= 100


def test_callers_never_wait_for_a_slow_write() -> None:
    # The first write blocks until released: a caller that waited for it would never finish
    # (no wall-clock bound, so a stalled machine cannot fail the test).
    release = threading.Event()
    store = RecordingStore(gate=release)
    buffer = _buffer.MetricBuffer(batch_size=10, interval=0.01)
    buffer.enqueue(store, "r", Metric("m", 0.0, 1, 0))  # type: ignore[arg-type]
    assert store.writing.wait(30)  # the writer is now inside the blocked write
    enqueued = threading.Event()

    def caller() -> None:
        for step in range(1, 5_001):
            buffer.enqueue(store, "r", Metric("m", float(step), 1, step))  # type: ignore[arg-type]
        enqueued.set()

    threading.Thread(target=caller, daemon=True).start()
    assert enqueued.wait(60), "enqueue waited for the write in progress"
    assert store.calls == []  # that write has not finished
    release.set()
    buffer.flush(timeout=60)
    assert len(store.points("r")) == 5_001


def test_flush_from_many_threads_sees_each_threads_points() -> None:
    store = RecordingStore(delay=0.001)
    buffer = _buffer.MetricBuffer(batch_size=50, interval=0.005)
    failures: list[str] = []

    def worker(name: str) -> None:
        for round_ in range(20):
            for step in range(25):
                buffer.enqueue(store, name, Metric("m", 1.0, 1, round_ * 25 + step))  # type: ignore[arg-type]
            buffer.flush(timeout=60)
            written = len(store.points(name))
            if written < (round_ + 1) * 25:
                failures.append(f"{name}: {written} written after flush of {(round_ + 1) * 25}")

    threads = [threading.Thread(target=worker, args=(f"run{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert all(len(store.points(f"run{i}")) == 500 for i in range(4))


def test_out_of_range_step_is_refused_even_for_a_known_key(sqlite_env) -> None:
    with mlops.start_run() as run:
        mlops.log_metric("m", 1.0, step=1, synchronous=False)  # "m" is now a known key
        with pytest.raises(InvalidArgument, match="64 bits"):
            mlops.log_metric("m", 1.0, step=2**63, synchronous=False)
        mlops.flush()
    assert len(_history(run.info.run_id, "m")) == 1
