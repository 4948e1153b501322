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


def test_request_totals_add_up_every_status_of_an_api() -> None:
    telemetry = Telemetry()
    telemetry.request("pure", "POST", 200, 0.05)
    telemetry.request("pure", "PUT", 409, 0.25)
    telemetry.request("pure", "GET", "ClientConnectorError", 0.5)
    telemetry.request("elements", "GET", 200, 0.125)
    assert telemetry.request_totals() == {
        "elements": {"requests": 1, "seconds": 0.125},
        "pure": {"requests": 3, "seconds": 0.8},
    }
