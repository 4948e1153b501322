"""What the loops say about themselves: progress for health checks, counts and timings for metrics.

One Telemetry object is made by the daemon and passed to every loop and client. Loops
`beat()` whenever they complete a round of work, so a health check (or the systemd
watchdog) can tell a live loop from a stuck one.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field


@dataclass
class LoopProgress:
    deadline: float  # seconds a loop may go without a beat before it counts as stalled
    last_beat: float  # time.monotonic() of the last beat (or of registration)


# Upper bounds (seconds) of the request latency buckets: API calls take tens of ms to a minute.
LATENCY_BOUNDS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Latency:
    """A histogram of request durations, in the shape Prometheus exports."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BOUNDS))
    count: int = 0
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        for index, bound in enumerate(LATENCY_BOUNDS):
            if seconds <= bound:
                self.buckets[index] += 1
                return

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, requests at most that long), the last bound being +Inf."""
        running, result = 0, []
        for bound, n in zip(LATENCY_BOUNDS, self.buckets, strict=True):
            running += n
            result.append((bound, running))
        return [*result, (float("inf"), self.count)]


@dataclass
class Telemetry:
    loops: dict[str, LoopProgress] = field(default_factory=dict)
    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # api, method, status
    request_latency: dict[tuple[str, str], Latency] = field(default_factory=dict)  # api, status
    events_received: Counter[str] = field(default_factory=Counter)  # feed → events added
    outcomes: Counter[str] = field(default_factory=Counter)  # action → count
    # Each API with an outage circuit → why it is out ("since ...: reason"), None while it answers
    api_outages: dict[str, str | None] = field(default_factory=dict)
    # Whether the publisher holds a connection to the broker; None without a publisher. Not an
    # outage: a broker that is down delays outcomes (they wait in the outbox), loses none.
    broker_connected: bool | None = None
    # Each API with an hourly quota → (the quota, requests of it left in the last hour)
    quotas: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Why backfill work waits now (outside its window, its share spent); None: it may run
    backfill_waits: str | None = None

    def expect(self, loop: str, deadline: float) -> None:
        """Register a loop that must beat at least every `deadline` seconds."""
        self.loops[loop] = LoopProgress(deadline, time.monotonic())

    def beat(self, loop: str) -> None:
        progress = self.loops.get(loop)
        if progress is not None:
            progress.last_beat = time.monotonic()

    def stalled(self) -> list[str]:
        """Loops past their deadline, each with how long it has been silent."""
        now = time.monotonic()
        return [
            f"{name} silent for {now - p.last_beat:.0f}s (deadline {p.deadline:.0f}s)"
            for name, p in sorted(self.loops.items())
            if now - p.last_beat > p.deadline
        ]

    def request(self, api: str, method: str, status: int | str, seconds: float) -> None:
        self.requests[(api, method, str(status))] += 1
        self.request_latency.setdefault((api, str(status)), Latency()).observe(seconds)

    def request_totals(self) -> dict[str, dict[str, float]]:
        """Per API: the requests sent and the seconds they took, added up (each from its
        slot being taken to its answer read)."""
        requests: Counter[str] = Counter()
        seconds: dict[str, float] = defaultdict(float)
        for (api, _), latency in self.request_latency.items():
            requests[api] += latency.count
            seconds[api] += latency.total
        return {
            api: {"requests": requests[api], "seconds": round(seconds[api], 3)}
            for api in sorted(requests)
        }

    def received(self, feed: str, count: int) -> None:
        self.events_received[feed] += count

    def outcome(self, action: str) -> None:
        self.outcomes[action] += 1

    def api_state(self, api: str, outage: str | None) -> None:
        """An API's circuit closed (None) or opened, with why."""
        self.api_outages[api] = outage

    def availability(self) -> dict[str, bool]:
        """Each API → whether it answers; `mqtt`: whether the broker takes the outcomes (it is
        connected, and no other client takes crisync's client id)."""
        answers = {api: not outage for api, outage in self.api_outages.items()}
        if self.broker_connected is not None:
            answers["mqtt"] = self.broker_connected and answers.get("mqtt", True)
        return answers

    def quota(self, api: str, limit: int, remaining: int) -> None:
        self.quotas[api] = (limit, remaining)

    def unavailable(self) -> list[str]:
        """The APIs that are out, each with why."""
        return [f"{api}: {why}" for api, why in sorted(self.api_outages.items()) if why]
