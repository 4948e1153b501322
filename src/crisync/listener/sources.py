"""The configured sources: a new source adds its folder, its section in `Config`, and its
lines here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import aiohttp

from crisync.config.model import Config
from crisync.listener.base import Source, SourceContext
from crisync.listener.elements.source import ElementsSource, check_elements
from crisync.listener.unicat.source import UnicatSource, check_unicat
from crisync.telemetry import Telemetry

# One authenticated request to a system, saying what it confirmed (`check-config --online`).
Check = Callable[[], Awaitable[str]]


def open_sources(config: Config, context: SourceContext) -> list[Source]:
    sources: list[Source] = []
    if config.elements is not None:
        sources.append(ElementsSource(config.elements, context))
    if config.unicat is not None:
        sources.append(UnicatSource(config.unicat, context))
    return sources


def source_checks(
    config: Config, session: aiohttp.ClientSession, telemetry: Telemetry
) -> dict[str, Check]:
    """One check per source: what `check-config --online` asks it."""
    checks: dict[str, Check] = {}
    if config.elements is not None:
        checks["elements"] = partial(check_elements, config.elements, session, telemetry)
    if config.unicat is not None:
        checks["unicat"] = partial(check_unicat, config.unicat, session, telemetry)
    return checks
