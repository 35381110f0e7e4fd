"""A daemon thread that calls ``check()`` every ``interval`` seconds, or at once when woken.

The holder of an alias-following server uses it to ask the registry where the alias
points; the thread never dies of a failed check (the next one may succeed).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

__all__ = ["RegistryPoller"]

logger = logging.getLogger("serving_tasks")


class RegistryPoller:
    """Calls ``check`` every ``interval`` seconds (``None`` or 0: only when woken)."""

    def __init__(self, check: Callable[[], object], *, interval: float | None, what: str) -> None:
        self._check = check
        self.interval = interval
        self._what = what
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="mlops-alias-poll", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Check now instead of at the next interval."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        interval = self.interval or None  # None: wait for wake() only
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._check()
            except Exception:  # never let the thread die: the next poll may succeed
                logger.exception("alias poll of %s failed", self._what)
