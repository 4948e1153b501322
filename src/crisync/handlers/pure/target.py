"""The Pure target: what the dispatcher and the commands see of Pure."""

from __future__ import annotations

import aiohttp

from crisync.handlers.base import HandlerResult, PlannedContent, Target
from crisync.handlers.pure.check import rights_gaps
from crisync.handlers.pure.client import PureClient
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.pacing import PurePacing
from crisync.handlers.pure.planning import PlanningPureClient
from crisync.handlers.pure.reconcile import ReconcileReport, reconcile
from crisync.handlers.pure.replicate import replicate_to_pure
from crisync.handlers.pure.state_guard import foreign_content
from crisync.handlers.throttle import Clock
from crisync.mapping.rules import MappingsConfig
from crisync.state import mapping
from crisync.state.inbox import InboxEvent
from crisync.state.store import Store
from crisync.telemetry import Telemetry


class PureTarget(Target):
    name = "pure"

    def __init__(
        self, context: PureContext, read: frozenset[tuple[str, str]] = frozenset()
    ) -> None:
        self.context = context
        self._read = read

    @classmethod
    def open(
        cls,
        config: PureConfig,
        mappings: MappingsConfig,
        *,
        store: Store,
        session: aiohttp.ClientSession,
        telemetry: Telemetry,
        planning: bool = False,
        read: frozenset[tuple[str, str]] = frozenset(),
        clock: Clock | None = None,
    ) -> PureTarget:
        """`read`: the (source, kind) the sources read, whose mappings' rights are checked;
        `clock`: what its pacing goes by (the system's unless a test gives one)."""
        client_type = PlanningPureClient if planning else PureClient
        pacing = PurePacing(config, telemetry=telemetry, clock=clock)
        client = client_type(session, config, telemetry=telemetry, pacing=pacing)
        return cls(PureContext(store, client, config, mappings), read)

    @property
    def workers(self) -> int:
        # Twice as many handlers as Pure request slots: what a handler does between its
        # requests (mapping, state writes) overlaps others' requests, so the slots stay full.
        return 2 * self.context.pure_config.concurrency

    @property
    def max_attempts(self) -> int:
        return self.context.pure_config.max_attempts

    @property
    def park_duration(self) -> float:
        return self.context.pure_config.park_duration

    @property
    def throttle(self) -> PurePacing:
        return self.context.pure.pacing

    async def handle(self, event: InboxEvent) -> HandlerResult:
        return await replicate_to_pure(event, self.context)

    def planned(self, target_type: str, target_uuid: str) -> PlannedContent | None:
        client = self.context.pure
        if not isinstance(client, PlanningPureClient):
            return None
        return client.planned(target_type, target_uuid)

    async def rights_gap(self) -> str | None:
        # First contact only: later, a right taken away shows as refused credentials (403).
        ctx = self.context
        async with ctx.store.reading() as conn:
            if await mapping.count(conn):
                return None
        return await rights_gaps(ctx.pure, ctx.mappings, self._read)

    async def foreign_state(self) -> str | None:
        ctx = self.context
        return await foreign_content(ctx.store, ctx.pure, ctx.mappings)

    async def reconcile(self, *, apply: bool) -> ReconcileReport:
        ctx = self.context
        return await reconcile(ctx.store, ctx.pure, ctx.mappings, apply=apply)
