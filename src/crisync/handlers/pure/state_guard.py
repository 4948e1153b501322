"""Before the first write to Pure: does Pure hold content crisync wrote that this state
database does not know? A new or lost state database would create all of it again.

Only a state database that maps nothing (and has no create under way) is asked about: one
search per Pure type some mapping writes, for the words of the PrimaryIds crisync writes
into it (``source:kind:key``). Objects carrying one match those words and rank first, so
the first page tells; an object counts only when its PrimaryId is crisync's by idSource
and mapped kind, never HR's own. A type this Pure does not have is left out.
"""

from __future__ import annotations

from collections import defaultdict

from crisync.errors import PermanentError
from crisync.handlers.pure.client import PRIMARY_ID_SEARCH_PAGE, PureClient
from crisync.handlers.pure.mapping import PURE, primary_id_of
from crisync.handlers.pure.primary_ids import crisync_keys
from crisync.mapping.rules import MappingsConfig, ObjectMapping
from crisync.state import create_intents, mapping
from crisync.state.store import Store


async def foreign_content(store: Store, pure: PureClient, mappings: MappingsConfig) -> str | None:
    """Why this state database must not write to Pure, or None (see the module)."""
    async with store.reading() as conn:
        if await mapping.count(conn) or await create_intents.count(conn):
            return None
    by_type: dict[str, dict[tuple[str, str], ObjectMapping]] = defaultdict(dict)
    for source, kind, rules in mappings.all():
        if rules.target == PURE:
            by_type[rules.type][(source, kind)] = rules
    for pure_type, rules_of in sorted(by_type.items()):
        words = " ".join(sorted({primary_id_of(*source_kind, "") for source_kind in rules_of}))
        try:
            page = await pure.search(pure_type, words, size=PRIMARY_ID_SEARCH_PAGE)
        except PermanentError as exc:
            if exc.status not in (404, 405):
                raise
            continue  # this Pure (API version) has no such content type
        found = sorted(
            (key, str(item.get("uuid")))
            for item in page.items
            for key in crisync_keys(item, rules_of)
        )
        if found:
            (source, kind, key), uuid = found[0]
            return (
                f"Pure holds {pure_type} crisync wrote ({len(found)} on the first page of a "
                f"search, e.g. {primary_id_of(source, kind, key)} as {uuid}) but the state "
                "database maps nothing: `crisync reconcile` rebuilds the mapping from Pure; "
                "--allow-empty-state replicates anyway and creates that content a second time"
            )
    return None
