"""The configured targets: a new target adds its folder, its section in `Config`, a line here."""

from __future__ import annotations

import aiohttp

from crisync.config.model import Config
from crisync.handlers.base import Target
from crisync.handlers.pure.target import PureTarget
from crisync.state.store import Store
from crisync.telemetry import Telemetry


def open_targets(
    config: Config, *, store: Store, session: aiohttp.ClientSession, telemetry: Telemetry
) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    if config.pure is not None:
        targets[PureTarget.name] = PureTarget.open(
            config.pure, config.mappings, store=store, session=session, telemetry=telemetry
        )
    return targets
