"""Write-back: after a target created an object's content, set a field of the object's
Elements record to the content's uuid.

What each configured category writes to is checked once against `/{cat}/sources` (is the
source importable?) and `/{cat}/types` (which types have the field, as text that allows
`set`?), at start, so that a misconfiguration stops the run before anything is written
instead of failing object by object.

The write-back is an event of its own (source ``elements-writeback``), queued by the
dispatcher in the transaction that records the create, so a crash between the two loses
neither; its handler is declared by the Elements source.

A write-back changes the object, and its feed brings the change back. crisync recognises
its own change: when Elements' answer to the PATCH shows the object as crisync read it
but for the written field, the new timestamp is recorded in the inbox as done, so the
feed's copy is dropped as a repeat and the target hears nothing of it. When the answer
shows more (someone edited the object meanwhile), the change comes through as any other.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import structlog
from lxml import etree

from crisync.errors import CredentialError, CrisyncError, NotFoundError, PermanentError
from crisync.handlers.base import HandlerResult, SourceRefusedError
from crisync.listener.elements.atom import FeedPage, parse_sources, parse_types
from crisync.listener.elements.client import ElementsClient
from crisync.listener.elements.config import (
    CATEGORY_OF_FEED,
    FEED_OF_CATEGORY,
    ElementsConfig,
    WritebackConfig,
)
from crisync.listener.elements.feed import Feed
from crisync.state import inbox
from crisync.state.inbox import ChangeEvent, InboxEvent
from crisync.state.store import Store, utc_now

log = structlog.get_logger("crisync.listener.elements.writeback")

# The PATCH document's namespace, as elements-api-patch-record.txt writes it.
UPDATE_NAMESPACE = "http://www.symplectic.co.uk/publications/api"
# The source of write-back events: a handler of the Elements source takes them.
WRITEBACK_SOURCE = "elements-writeback"
# What every change of an object changes: left out when its write-back's answer is compared.
STAMPS = frozenset({"last-modified-when", "last-affected-when"})


@dataclass(frozen=True)
class WritebackTarget:
    """A checked write-back: where it writes, and which object types have the field."""

    category: str
    source: str
    field: str
    types: frozenset[str]


def update_record(field: str, value: str) -> bytes:
    """An update-record document that sets one text field."""
    api = f"{{{UPDATE_NAMESPACE}}}"
    root = etree.Element(
        f"{api}update-record", nsmap=cast("dict[str, str]", {None: UPDATE_NAMESPACE})
    )
    item = etree.SubElement(
        etree.SubElement(root, f"{api}fields"), f"{api}field", name=field, operation="set"
    )
    etree.SubElement(item, f"{api}text").text = value
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def misconfiguration(category: str, settings: WritebackConfig, problem: str) -> str:
    """A write-back problem as the log and `check-config --online` name it."""
    return (
        f"write-back of {category} to field {settings.field!r} of source "
        f"{settings.source!r} is misconfigured: {problem}"
    )


async def check_writeback(
    client: ElementsClient, category: str, settings: WritebackConfig
) -> WritebackTarget | str:
    """The target of a category's write-back, or what is wrong with its configuration."""
    sources = parse_sources(await client.get_document(f"/{category}/sources"))
    source = next((s for s in sources if s.name == settings.source), None)
    if source is None:
        names = ", ".join(sorted(s.name for s in sources)) or "none"
        return f"no {category} data source is named {settings.source!r} (there are: {names})"
    if not source.importable:
        return f"source {settings.source!r} does not accept API imports (importable is false)"
    fields = [
        f
        for f in parse_types(await client.get_document(f"/{category}/types"))
        if f.name == settings.field
    ]
    if not fields:
        return f"no {category} type has a field {settings.field!r}"
    types = frozenset(
        f.type_name for f in fields if f.field_type == "text" and "set" in f.operations
    )
    if not types:
        return f"field {settings.field!r} is not a text field that allows the set operation"
    return WritebackTarget(category, settings.source, settings.field, types)


class ElementsWriteback:
    """The configured write-backs, checked and cached; PATCHes through the shared client."""

    def __init__(self, config: ElementsConfig, client: ElementsClient, store: Store) -> None:
        self._client = client
        self._store = store
        self._wanted: dict[str, WritebackConfig] = {
            CATEGORY_OF_FEED[feed]: settings for feed, settings in config.writeback.items()
        }
        self._ready: dict[str, WritebackTarget] = {}
        self._problems: dict[str, str] = {}
        # Of those, the ones Elements' answer showed to be the configuration's: no such
        # source or field. A check Elements failed to answer (a redirect elsewhere, a 404
        # of the API itself) is the feeds' to report: they meet the same failure.
        self._misconfigured: set[str] = set()
        self._checking = asyncio.Lock()

    def wanted(self, category: str) -> bool:
        """Whether a create of this category should be written back (not known to be broken)."""
        return category in self._wanted and category not in self._problems

    async def verify(self) -> None:
        """Check every configured category now: SourceRefusedError names each one Elements
        shows misconfigured, before anything is written; one it cannot answer is checked
        later, and one whose check fails for good gets no write-back (logged)."""
        for category in self._wanted:
            try:
                await self.target(category)
            except CrisyncError as exc:
                if category in self._problems:
                    continue  # logged as such; refused below if the configuration's
                log.warning(
                    "elements.writeback_check_deferred",
                    category=category,
                    error=exc.message,
                    detail="checked again before the first write-back",
                )
        if self._misconfigured:
            problems = (self._problems[category] for category in sorted(self._misconfigured))
            raise SourceRefusedError("; ".join(problems))

    async def target(self, category: str) -> WritebackTarget:
        """The checked write-back of a category; checked on first use, then cached."""
        async with self._checking:
            if category in self._ready:
                return self._ready[category]
            if category in self._problems:
                raise PermanentError(self._problems[category], api="elements")
            try:
                target = await check_writeback(self._client, category, self._wanted[category])
            except CredentialError:
                raise  # not the configuration's fault: the listener parks and says why
            except PermanentError as exc:
                self._fail(category, f"could not check: {exc.message}")
                raise
            if isinstance(target, str):
                self._fail(category, target)
                self._misconfigured.add(category)
                raise PermanentError(target, api="elements")
            self._ready[category] = target
            log.info(
                "elements.writeback_ready",
                category=category,
                source=target.source,
                field=target.field,
                types=sorted(target.types),
            )
            return target

    def _fail(self, category: str, problem: str) -> None:
        settings = self._wanted[category]
        self._problems[category] = misconfiguration(category, settings, problem)
        log.error(
            "elements.writeback_misconfigured",
            category=category,
            source=settings.source,
            field=settings.field,
            problem=problem,
            detail="no write-back for this category until the configuration is fixed",
        )

    async def write(self, category: str, payload: dict[str, Any], value: str) -> bool:
        """PATCH the object's record; False when it has no such record or its type no such field."""
        try:
            return await self._write(category, payload, value)
        except CredentialError as exc:
            # Not the dispatcher's pause for refused credentials: that would hold up the
            # replication into the target too, for want of a right only write-back needs.
            raise PermanentError(
                f"Elements refused the write-back ({exc.message}); check the API account's "
                "credentials and its right to modify data",
                api="elements",
                status=exc.status,
            ) from exc

    async def _write(self, category: str, payload: dict[str, Any], value: str) -> bool:
        target = await self.target(category)
        record = next(
            (
                r
                for r in payload.get("records") or []
                if r.get("source") == target.source and r.get("id_at_source")
            ),
            None,
        )
        object_type = (payload.get("attributes") or {}).get("type")
        if record is None:
            return _skipped(category, payload, f"it has no record from {target.source}")
        if object_type is not None and object_type not in target.types:
            return _skipped(category, payload, f"its type {object_type} lacks {target.field}")
        try:
            answer = await self._client.patch_record(
                category,
                target.source,
                str(record["id_at_source"]),
                update_record(target.field, value),
            )
        except NotFoundError:
            # Deleted in Elements since it was read: its deletion comes through the feed.
            return _skipped(category, payload, f"its record from {target.source} is gone")
        await self._recognise_echo(category, payload, target.field, answer)
        return True

    async def _recognise_echo(
        self, category: str, payload: dict[str, Any], field: str, answer: FeedPage
    ) -> None:
        """Record the object's new timestamp as done when the write-back is its only change."""
        written = next((o for o in answer.objects if o.id == payload.get("id")), None)
        if written is None or "fields" not in payload:
            return  # nothing to compare (an answer without the object, an older event)
        if payload.get("relationships_read"):
            # The answer shows no relationships: a link added, hidden or taken away with a
            # deleted user before the PATCH would go unseen under the new timestamp. The feed
            # brings the object back and its relationships are read; Pure hears of it only
            # when the mapped content changed.
            return
        if _compared(written.payload, field) != _compared(payload, field):
            log.info(
                "elements.writeback_not_alone",
                category=category,
                id=written.id,
                detail="the object changed besides the write-back: replicated again",
            )
            return
        echo = ChangeEvent(
            Feed(FEED_OF_CATEGORY[category]).name,
            "elements",
            category,
            written.id,
            "upsert",
            written.changed_at,
            {},
        )
        async with self._store.transaction() as conn:
            await inbox.add_events(conn, [echo], utc_now(), done=True)

    def follow_ups(
        self, event: InboxEvent, target_type: str, target_uuid: str
    ) -> tuple[ChangeEvent, ...]:
        """The write-back a create of this Elements object calls for, if one is configured."""
        if event.source != "elements" or not self.wanted(event.kind):
            return ()
        return (
            ChangeEvent(
                f"{WRITEBACK_SOURCE}:{event.kind}",
                WRITEBACK_SOURCE,
                event.kind,
                event.key,
                "upsert",
                datetime.fromisoformat(event.changed_at),
                {
                    "id": event.key,
                    "category": event.kind,
                    "attributes": event.payload.get("attributes") or {},
                    "fields": event.payload.get("fields") or {},
                    "records": event.payload.get("records") or [],
                    # Whether the object's relationships are part of what was replicated.
                    "relationships_read": "relationships" in event.payload,
                    # The outcome and the queued event keep their documented key.
                    "pure": {"type": target_type, "uuid": target_uuid},
                },
            ),
        )

    async def handle(self, event: InboxEvent) -> HandlerResult:
        """The handler of write-back events."""
        content = event.payload["pure"]
        written = await self.write(event.kind, event.payload, content["uuid"])
        return HandlerResult(
            "updated" if written else "unchanged", content["type"], content["uuid"], mapping=None
        )


def _skipped(category: str, payload: dict[str, Any], reason: str) -> bool:
    log.info("elements.writeback_skipped", category=category, id=payload.get("id"), reason=reason)
    return False


def _compared(payload: dict[str, Any], field: str) -> dict[str, Any]:
    """What a write-back of `field` leaves as it was."""
    return {
        "attributes": {
            name: value
            for name, value in (payload.get("attributes") or {}).items()
            if name not in STAMPS
        },
        "fields": {
            name: value for name, value in (payload.get("fields") or {}).items() if name != field
        },
        "records": payload.get("records") or [],
    }
