"""h3pipe.faults: every point is declared once, and H3PIPE_FAULTS names only declared ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from h3pipe import faults
from h3pipe.errors import ConfigError, OperationError

PACKAGE = Path(faults.__file__).resolve().parent


def test_unknown_point_in_the_environment_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        faults._parse("task-recorded:kill@1,task-recroded:kill@2")

    assert info.value.message == "H3PIPE_FAULTS: unknown fault point 'task-recroded'"
    assert info.value.hint == (
        "known points: batch, write-partial, task-output-written, task-recorded, "
        "stage-completed, result-written, published, batch.STEP_ID, task.STEP_ID")


def test_declared_points_and_the_batch_family_are_read() -> None:
    assert faults._parse("batch:sleep=0.5, batch.people:fail@2,published:kill@1") == {
        "batch": ("sleep", 0.5), "batch.people": ("fail", 2.0), "published": ("kill", 1.0)}


@pytest.mark.parametrize("name", ["batch.", "batches", "", "Published"])
def test_near_misses_are_unknown(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown fault point"):
        faults._parse(f"{name}:kill@1")


def test_an_undeclared_point_in_the_code_is_a_bug() -> None:
    with pytest.raises(AssertionError, match="'no-such-moment' is not declared"):
        faults.point("no-such-moment")


def test_a_declared_point_without_an_action_does_nothing(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    # Armed at other points (one of them the same family), so a lookup by the wrong name
    # would act; every action's effect is recorded instead of happening.
    monkeypatch.setattr(faults, "_ACTIONS", faults._parse(
        "batch:fail@1,batch.other_step:fail@1,published:sleep=30,task-recorded:kill@1"))
    monkeypatch.setattr(faults, "_REACHED", {})
    acted: list[str] = []
    monkeypatch.setattr(faults.time, "sleep", lambda s: acted.append(f"sleep {s}"))
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: acted.append(f"kill {sig}"))
    monkeypatch.setattr(faults, "_busy", lambda s: acted.append(f"busy {s}"))

    assert faults.point("result-written") is None
    assert faults.point("batch.some_step") is None
    assert faults.point("stage-completed") is None

    assert acted == [] and faults._REACHED == {}  # nothing done, nothing even counted
    # The same set-up acts where it is armed: the points above were truly passed over.
    faults.point("published")
    with pytest.raises(OperationError, match="fault injected at batch.other_step"):
        faults.point("batch.other_step")
    assert acted == ["sleep 30.0"]
    assert faults._REACHED == {"published": 1, "batch.other_step": 1}


def test_every_point_the_code_reaches_is_declared() -> None:
    # Read the call sites from the source, not from POINTS, so a new point cannot be
    # added without declaring it (and a declared one cannot go unused). An f-string
    # call, such as f"batch.{step_id}", is a family: its text up to the first brace.
    calls = [m for path in PACKAGE.rglob("*.py")
             for m in re.findall(r'faults\.point\((f?)"([^"{]+)', path.read_text())]

    assert {name for f, name in calls if not f} == set(faults.POINTS)
    assert {name for f, name in calls if f} == set(faults.FAMILIES)
