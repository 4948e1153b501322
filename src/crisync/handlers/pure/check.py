"""What `crisync check-config --online` asks Pure: does the key work, may it read and write
what the mappings need (its access definition), and does Pure hold the content the
configuration names (the managing organisation, uuids in mapping constants)?"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp

from crisync.errors import CredentialError, MissingContentError, MissingRightsError, PermanentError
from crisync.handlers.pure.client import PureClient
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.mapping import PURE
from crisync.handlers.pure.references import EXTERNAL_PERSONS
from crisync.handlers.pure.types import PURE_TYPES
from crisync.mapping.rules import MappingsConfig
from crisync.telemetry import Telemetry

TYPE_OF_SYSTEM_NAME = {known.system_name: path for path, known in PURE_TYPES.items()}


async def check_pure(
    config: PureConfig,
    mappings: MappingsConfig,
    session: aiohttp.ClientSession,
    telemetry: Telemetry,
    *,
    read: frozenset[tuple[str, str]],
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
    gaps = await rights_gaps(client, mappings, read)
    if gaps is not None:
        raise MissingRightsError(gaps, api="pure")
    reads, writes, _ = _types_needed(mappings, read)
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
    unseen = await unseen_identifiers(client, mappings, read)
    hint = (
        f"; no identifiers seen on {', '.join(unseen)}: if the key's access definition hides "
        "them, match rules by identifier find nothing"
        if unseen
        else ""
    )
    return (
        f"the API key reads {len(reads)} type(s), may write {len(writes)} "
        f"({', '.join(sorted(writes)) or 'none'}), and reads the {len(named)} content "
        f"item(s) the configuration names{hint}"
    )


# A uuid no content has: asking to update it shows the right to write, and changes nothing.
NO_CONTENT = "00000000-0000-4000-8000-000000000000"
# Objects read to see whether the key is shown identifiers.
IDENTIFIER_SAMPLE = 20


async def rights_gaps(
    client: PureClient, mappings: MappingsConfig, read: frozenset[tuple[str, str]]
) -> str | None:
    """What the API key's access definition lacks for the mappings of the kinds read, in
    one line, or None: read each type, write where crisync writes."""
    reads, writes, _ = _types_needed(mappings, read)
    gaps = [gap for pure_type in sorted(reads) if (gap := await _read_gap(client, pure_type))]
    gaps += [gap for pure_type in sorted(writes) if (gap := await _write_gap(client, pure_type))]
    return "the API key's access definition: " + "; ".join(gaps) if gaps else None


async def unseen_identifiers(
    client: PureClient, mappings: MappingsConfig, read: frozenset[tuple[str, str]]
) -> list[str]:
    """The types a match rule finds by an identifier (HR's persons by their PrimaryId) whose
    first objects show none: an access definition may hide them. Only a hint: content
    without identifiers is common, so this never fails a check."""
    _, _, by_identifier = _types_needed(mappings, read)
    unseen = []
    for pure_type in sorted(by_identifier):
        page = await client.list_page(pure_type, offset=0, size=IDENTIFIER_SAMPLE)
        if page.items and not any("identifiers" in item for item in page.items):
            unseen.append(f"{pure_type} (none among the first {len(page.items)})")
    return unseen


def _types_needed(
    mappings: MappingsConfig, read: frozenset[tuple[str, str]]
) -> tuple[set[str], set[str], set[str]]:
    """The Pure types the mappings of the kinds sources read need to read, to write (link-only
    ones are read only), and to find by an identifier (a match rule's)."""
    reads, writes, by_identifier = set(), set(), set()
    for source, kind, rules in mappings.all():
        if rules.target != PURE or (source, kind) not in read:
            continue
        reads.add(rules.type)
        if any(rule.identifier is not None for rule in rules.match):
            by_identifier.add(rules.type)
        if not rules.link_only:
            writes.add(rules.type)
        for rule in rules.properties.values():
            if rule.find is not None:
                reads.add(rule.find)
            if rule.persons is not None and rule.persons.external is not None:
                reads.add(EXTERNAL_PERSONS)
                writes.add(EXTERNAL_PERSONS)
    return reads, writes, by_identifier


async def _read_gap(client: PureClient, pure_type: str) -> str | None:
    try:
        await client.list_page(pure_type, offset=0, size=1)
    except CredentialError as exc:
        if exc.status != 403:
            raise
        return f"may not read {pure_type}"
    return None


async def _write_gap(client: PureClient, pure_type: str) -> str | None:
    try:
        await client.update(pure_type, NO_CONTENT, {})
    except CredentialError as exc:
        if exc.status != 403:
            raise
        return f"may not write {pure_type}"
    except PermanentError:
        return None  # no such content (404) or not a valid body (400): the key may write
    return None


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
