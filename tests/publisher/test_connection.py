"""The broker connection's history: a session taken over is recognised from its reason."""

from __future__ import annotations

import aiomqtt
from aiomqtt.exceptions import MqttCodeError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from crisync.publisher.connection import SESSION_TAKEN_OVER, ConnectionHistory


def lost(reason: int) -> aiomqtt.MqttError:
    """What aiomqtt raises from message iteration when the broker sent DISCONNECT."""
    iteration = aiomqtt.MqttError("Disconnected during message iteration")
    iteration.__cause__ = MqttCodeError(
        ReasonCode(PacketTypes.DISCONNECT, identifier=reason), "Unexpected disconnection"
    )
    return iteration


def test_an_mqtt_5_session_taken_over_is_a_clash_at_once() -> None:
    history = ConnectionHistory(base=1.0, cap=30.0, stable_after=10.0)
    history.connected()
    setback = history.failed(lost(SESSION_TAKEN_OVER))
    assert setback.clash is not None
    assert "session taken over" in setback.clash
    assert 0 <= setback.delay <= 1.0


def test_another_reason_and_a_failed_attempt_are_no_clash() -> None:
    history = ConnectionHistory(base=1.0, cap=30.0, stable_after=10.0)
    history.connected()
    assert history.failed(lost(0x8B)).clash is None  # server shutting down
    assert history.failed(aiomqtt.MqttError("connection refused")).clash is None
