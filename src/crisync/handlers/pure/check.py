"""What `crisync check-config --online` asks Pure: does the key work, and does Pure hold the
content the configuration names (the managing organisation, uuids in mapping constants)?"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp

from crisync.errors import MissingContentError, PermanentError
from crisync.handlers.pure.client import PureClient
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.mapping import PURE
from crisync.handlers.pure.types import PURE_TYPES
from crisync.mapping.rules import MappingsConfig
from crisync.telemetry import Telemetry

TYPE_OF_SYSTEM_NAME = {known.system_name: path for path, known in PURE_TYPES.items()}


async def check_pure(
    config: PureConfig,
    mappings: MappingsConfig,
    session: aiohttp.ClientSession,
    telemetry: Telemetry,
) -> str:
    """Read each piece of content the configuration names; MissingContentError lists the
    ones Pure does not hold, the client's classified error says when Pure cannot answer."""
    named = {("organizations", config.managing_organization): "[pure] managing_organization"}
    for source, kind, rules in mappings.all():
        if rules.target != PURE:
            continue
        for path, rule in rules.properties.items():
            for system_name, uuid in _content_refs(rule.value):
                content_type = TYPE_OF_SYSTEM_NAME.get(system_name)
                if content_type is not None:
                    named[(content_type, uuid)] = f"mappings.{source}.{kind}.properties.{path}"
    client = PureClient(session, config, telemetry=telemetry)
    missing = []
    for (content_type, uuid), where in named.items():
        try:
            await client.get(content_type, uuid)
        except PermanentError as exc:
            if exc.status != 404:
                raise
            missing.append(f"{where}: Pure has no {content_type} {uuid}")
    if missing:
        raise MissingContentError("; ".join(missing), api="pure")
    return f"the API key reads the {len(named)} content item(s) the configuration names"


def _content_refs(value: object) -> Iterator[tuple[str, str]]:
    """(systemName, uuid) of every content reference in a constant, however deep."""
    if isinstance(value, dict):
        system_name, uuid = value.get("systemName"), value.get("uuid")
        if isinstance(system_name, str) and isinstance(uuid, str):
            yield system_name, uuid
        for item in value.values():
            yield from _content_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _content_refs(item)
