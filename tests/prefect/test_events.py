"""``tracking_plugin.events.emit``: sends Prefect events and never breaks its caller."""

from __future__ import annotations

import logging

from tracking_plugin.events import emit, run_resource


def test_emit_returns_the_event(prefect_harness) -> None:
    event = emit("mlops.test.emitted", run_resource("abc123", name="r"), payload={"n": 1})

    assert event is not None
    assert event.event == "mlops.test.emitted"
    assert event.resource.id == "mlops.run.abc123" and event.resource.name == "r"


def test_emit_never_raises_and_warns_instead(prefect_harness, caplog) -> None:
    # Prefect raises for an event over its size limit; the caller must not see it.
    with caplog.at_level(logging.WARNING, logger="tracking_plugin.events"):
        assert emit("mlops.test.huge", run_resource("abc123"), payload={"blob": "x" * 3_000_000}) is None
    assert "Could not emit Prefect event 'mlops.test.huge'" in caplog.text

    # A resource without an id is refused (and logged) by Prefect itself.
    assert emit("mlops.test.bad", {"name": "no id"}) is None
