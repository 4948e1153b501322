"""The configured sources: a new source adds its folder, its section in `Config`, a line here."""

from __future__ import annotations

from crisync.config.model import Config
from crisync.listener.base import Source, SourceContext
from crisync.listener.elements.source import ElementsSource
from crisync.listener.unicat.source import UnicatSource


def open_sources(config: Config, context: SourceContext) -> list[Source]:
    sources: list[Source] = []
    if config.elements is not None:
        sources.append(ElementsSource(config.elements, context))
    if config.unicat is not None:
        sources.append(UnicatSource(config.unicat, context))
    return sources
