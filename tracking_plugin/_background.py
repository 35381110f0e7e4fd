"""Work a tracked flow hands off when it ends: posting its Prefect UI artifacts.

The two artifacts of a tracked flow run (``tracking_plugin.prefect``) are two API calls
to the Prefect server, ~0.1 s together on a small machine: as long as the whole
bookkeeping of a 100-task flow. They are a view of what the run already recorded, so the
flow does not wait for them; one daemon thread per process posts them in order.

- Each job runs in a copy of the context it was submitted from (Prefect's settings,
  e.g. the API URL of ``prefect_test_harness``, live in context variables).
- :func:`wait` returns once every job submitted so far has run; ``tracking_plugin.flush()``
  calls it. A failed job is logged as a warning (the run itself is recorded already).
- At interpreter exit an ``atexit`` hook waits for the queue (up to 30 s). It is
  registered again at every submit, so it runs before hooks registered earlier, such as
  the one that stops Prefect's ephemeral API server. ``os._exit`` and SIGKILL skip it.
- A forked child starts empty: the parent's jobs are the parent's to run.
"""

from __future__ import annotations

import atexit
import collections
import contextvars
import logging
import os
import threading
from typing import Any, Callable

__all__ = ["submit", "wait"]

_log = logging.getLogger("tracking_plugin")
_EXIT_TIMEOUT = 30.0


class _Jobs:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[contextvars.Context, Callable[[], Any]]] = collections.deque()
        self._pending = 0
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], Any]) -> None:
        context = contextvars.copy_context()
        with self._cond:
            self._queue.append((context, job))
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="prefect-mlops-background", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        atexit.unregister(_wait_at_exit)
        atexit.register(_wait_at_exit)

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                context, job = self._queue.popleft()
            try:
                context.run(job)
            except Exception as exc:  # noqa: BLE001 - jobs report their own failures; this is a backstop
                _log.warning("prefect-mlops: a background job failed: %r", exc)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()


_JOBS = _Jobs()


def submit(job: Callable[[], Any]) -> None:
    """Run ``job()`` on the background thread, in a copy of the caller's context."""
    _JOBS.submit(job)


def wait(timeout: float | None = None) -> None:
    """Block until every job submitted so far has run; ``TimeoutError`` after ``timeout`` s."""
    if not _JOBS.wait(timeout):
        raise TimeoutError(
            f"Prefect artifacts of finished flow runs were not all posted within {timeout} s; "
            "is the Prefect API reachable?"
        )


def _wait_at_exit() -> None:
    if not _JOBS.wait(_EXIT_TIMEOUT):
        _log.warning("prefect-mlops: gave up waiting for Prefect artifacts at exit after %s s", _EXIT_TIMEOUT)


def _after_fork_in_child() -> None:
    global _JOBS
    _JOBS = _Jobs()


os.register_at_fork(after_in_child=_after_fork_in_child)
