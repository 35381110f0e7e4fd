"""Wakes a :class:`~serving_tasks._model_holder.ModelHolder` when Prefect reports that its
model was promoted (``mlops.model.promoted``), so a promotion is served within moments
rather than at the next poll."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

import orjson

from tracking_plugin.events import MODEL_PROMOTED

from serving_tasks._model_holder import ModelHolder

__all__ = ["PROMOTED_EVENT", "PromotionListener", "start_promotion_listener"]

logger = logging.getLogger("serving_tasks")


# Prefect events ------------------------------------------------------------------------

PROMOTED_EVENT = MODEL_PROMOTED


class PromotionListener:
    """Wakes a :class:`ModelHolder` when a ``mlops.model.promoted`` Prefect event arrives.

    Runs its own event loop in a daemon thread; ``prefect`` is imported there, after the
    server is up, so it never slows startup or the request path. Polling stays on as the
    safety net: a missed event only delays the swap until the next poll.
    """

    def __init__(self, holder: ModelHolder) -> None:
        self._holder = holder
        self._loop: Any = None
        self._task: Any = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlops-promotion-events", daemon=True)
        self.events_seen = 0

    def start(self) -> "PromotionListener":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with _suppress_closed_loop():
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import asyncio

        self._loop = asyncio.new_event_loop()
        try:
            self._task = self._loop.create_task(self._listen_forever())
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:  # stop()
            pass
        except Exception:
            logger.exception("the %s listener stopped; alias moves are noticed by polling only", PROMOTED_EVENT)
        finally:
            self._loop.close()

    async def _listen_forever(self) -> None:
        import asyncio

        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        event_filter = EventFilter(event=EventNameFilter(name=[PROMOTED_EVENT]))
        delay = 1.0
        while not self._stopped.is_set():
            try:
                async with get_events_subscriber(filter=event_filter) as subscriber:
                    delay = 1.0
                    logger.info("listening for %s Prefect events", PROMOTED_EVENT)
                    # Whatever moved while we were not subscribed: one check covers it.
                    self._holder.wake()
                    async for event in subscriber:
                        self.events_seen += 1
                        if self._concerns_us(event):
                            logger.info("%s event for %s: checking the registry now", PROMOTED_EVENT, self._holder.name)
                            self._holder.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Prefect event subscription failed (%s); polling continues, retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    def _concerns_us(self, event: Any) -> bool:
        # The event names the model in its resource or payload; when it does not say,
        # checking the registry once costs less than missing a promotion.
        name = self._holder.name
        try:
            text = orjson.dumps(
                {"resource": dict(event.resource), "related": [dict(r) for r in event.related], "payload": event.payload},
                default=str,
            ).decode()
        except Exception:
            return True
        return name is None or name in text


@contextlib.contextmanager
def _suppress_closed_loop() -> Any:
    try:
        yield
    except RuntimeError:  # the loop already closed
        pass


def start_promotion_listener(holder: ModelHolder, *, enabled: bool | None = None) -> PromotionListener | None:
    """Start a :class:`PromotionListener` if ``enabled`` (None: when PREFECT_API_URL is set).

    Without a Prefect API URL there is no server to subscribe to (Prefect's ephemeral mode
    would start one in a subprocess), so alias moves are noticed by polling alone.
    """
    if enabled is None:
        enabled = bool(os.environ.get("PREFECT_API_URL"))
    if not enabled or not holder.follows_alias:
        return None
    return PromotionListener(holder).start()
