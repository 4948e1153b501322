"""What the broker connection went through: how long to wait before the next attempt, and
whether another client is taking crisync's client id.

The delay's ceiling grows with the outage, not with the number of attempts: attempts
refused at once would otherwise raise it to the cap within seconds, and a broker back
after three seconds could wait fourteen more. Waiting at most as long as the outage has
lasted so far, crisync is back within about twice the outage (or the base). A connection
that lasted `stable_after` ends an outage; one lost sooner continues it.

A broker keeps one connection per client id: a second client connecting with crisync's
id ends crisync's connection, and crisync's reconnect ends the other's, back and forth.
MQTT 5 says so (DISCONNECT with reason 0x8E, session taken over); on 3.1.1 the broker
just closes the connection, so a clash is inferred from connections the broker ended
while it let crisync straight back in, `clash_after` times within `clash_window`.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass

import aiomqtt
from aiomqtt.exceptions import MqttCodeError

# MQTT 5's DISCONNECT reason when another connection took over the session.
SESSION_TAKEN_OVER = 0x8E


@dataclass(frozen=True)
class Setback:
    delay: float  # seconds before the next attempt
    clash: str | None  # why another client seems to use the client id, if it does


def session_taken_over(exc: BaseException) -> bool:
    """Whether the failure, or one it came from, is the broker's "session taken over"."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MqttCodeError) and getattr(seen.rc, "value", seen.rc) == (
            SESSION_TAKEN_OVER
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class ConnectionHistory:
    def __init__(
        self,
        *,
        base: float,
        cap: float,
        stable_after: float,
        clash_after: int = 3,
        clash_window: float = 300.0,
    ) -> None:
        self._base = base
        self._cap = cap
        self._stable_after = stable_after
        self._clash_after = clash_after
        self._clash_window = clash_window
        self._out_since: float | None = None
        self._connected_at: float | None = None
        self._lost_connection = False  # the last failure ended a connection (not an attempt)
        self._bounces: deque[float] = deque()  # connections made right after the broker ended one

    def connected(self) -> None:
        now = time.monotonic()
        if self._lost_connection:
            self._bounces.append(now)
        self._connected_at = now

    def until_stable(self) -> float:
        """Seconds until the current connection counts as a good one (0: it does)."""
        if self._connected_at is None:
            return self._stable_after
        return max(0.0, self._connected_at + self._stable_after - time.monotonic())

    def failed(self, exc: aiomqtt.MqttError) -> Setback:
        """A connection attempt failed, or the connection was lost."""
        now = time.monotonic()
        was_connected = self._connected_at is not None
        if self._out_since is None or (was_connected and self.until_stable() == 0):
            self._out_since = now
        self._connected_at = None
        self._lost_connection = was_connected
        while self._bounces and self._bounces[0] < now - self._clash_window:
            self._bounces.popleft()
        clash = None
        if was_connected and session_taken_over(exc):
            clash = "the broker gave the session to another client (MQTT 5: session taken over)"
        elif was_connected and len(self._bounces) >= self._clash_after:
            clash = (
                f"the broker ended {len(self._bounces) + 1} connections in "
                f"{self._clash_window / 60:.0f} minutes while letting crisync straight back in"
            )
        ceiling = min(self._cap, max(self._base, now - self._out_since))
        return Setback(random.uniform(0, ceiling), clash)  # noqa: S311 - jitter, not secrecy
