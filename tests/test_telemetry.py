from __future__ import annotations

import time

import pytest

from crisync.telemetry import Telemetry


def test_a_loop_without_a_beat_past_its_deadline_is_stalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    telemetry = Telemetry()
    telemetry.expect("dispatcher", 10)
    telemetry.expect("publisher", 30)
    now[0] += 20
    assert telemetry.stalled() == ["dispatcher silent for 20s (deadline 10s)"]
    telemetry.beat("dispatcher")
    now[0] += 8
    assert telemetry.stalled() == []
    now[0] += 4
    assert telemetry.stalled() == [
        "dispatcher silent for 12s (deadline 10s)",
        "publisher silent for 32s (deadline 30s)",
    ]
