"""The configured targets: a new target adds its folder, its section in `Config`, and its
lines here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import aiohttp

from crisync.config.model import Config
from crisync.handlers.base import Target
from crisync.handlers.pure.check import check_pure
from crisync.handlers.pure.target import PureTarget
from crisync.state.store import Store
from crisync.telemetry import Telemetry


def open_targets(
    config: Config,
    *,
    store: Store,
    session: aiohttp.ClientSession,
    telemetry: Telemetry,
    planning: bool = False,
) -> dict[str, Target]:
    """The configured targets; `planning`: each reads as it would and writes nothing."""
    targets: dict[str, Target] = {}
    if config.pure is not None:
        targets[PureTarget.name] = PureTarget.open(
            config.pure,
            config.mappings,
            store=store,
            session=session,
            telemetry=telemetry,
            planning=planning,
            read=kinds_read(config),
        )
    return targets


def kinds_read(config: Config) -> frozenset[tuple[str, str]]:
    """(source, kind) of every object the configured sources read."""
    return frozenset(
        (name, kind) for name, source in config.sources.items() for kind in source.kinds()
    )


def target_checks(
    config: Config, session: aiohttp.ClientSession, telemetry: Telemetry
) -> dict[str, Callable[[], Awaitable[str]]]:
    """One check per target: what `check-config --online` asks it."""
    checks: dict[str, Callable[[], Awaitable[str]]] = {}
    if config.pure is not None:
        checks["pure"] = partial(
            check_pure, config.pure, config.mappings, session, telemetry, read=kinds_read(config)
        )
    return checks
