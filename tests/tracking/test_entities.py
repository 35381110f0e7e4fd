"""Entities built by the stores' positional builders are the same values as built by
their constructors: equal, hashable alike, still frozen."""

from __future__ import annotations

import dataclasses

import pytest

from tracking_plugin.entities import LifecycleStage, Run, RunData, RunInfo, RunStatus, _positional_builder


def _info_values() -> tuple:
    return ("a" * 32, "1", "r", RunStatus.FINISHED, 1, 2, "u", "/tmp/a", LifecycleStage.ACTIVE, None, "f", None)


def test_builder_equals_the_constructor_and_keeps_the_entity_frozen() -> None:
    info = _positional_builder(RunInfo)(*_info_values())
    assert info == RunInfo(*_info_values())
    assert hash(info) == hash(RunInfo(*_info_values()))
    assert info.prefect_flow_run_id == "f" and info.run_uuid == "a" * 32
    data = _positional_builder(RunData)({"m": 1.0}, {"p": "v"}, {}, {})
    run = _positional_builder(Run)(info, data)
    assert run == Run(info=RunInfo(*_info_values()), data=RunData(metrics={"m": 1.0}, params={"p": "v"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.status = RunStatus.FAILED  # type: ignore[misc]


def test_builder_takes_every_field_and_refuses_unsuitable_classes() -> None:
    with pytest.raises(TypeError):
        _positional_builder(RunInfo)(*_info_values()[:-1])

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            assert self.x > 0

    @dataclasses.dataclass(frozen=True)
    class Unslotted:
        x: int

    for cls in (Checked, Unslotted):
        with pytest.raises(TypeError, match=cls.__name__):
            _positional_builder(cls)
