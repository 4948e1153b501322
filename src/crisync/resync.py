"""`crisync resync`: fetch objects from their sources again and queue them for replication.

One object is queued as a repair: its target writes and locks it again even when nothing
changed (`queue_resync`). `--all` re-applies the mappings to every mapped object, e.g.
after a mapping changed: each is queued as it is now, so an unchanged one costs the target
nothing and a changed one one update. It is backfill work: it runs in the target's backfill
window, leaving ordinary changes their share.
"""

from __future__ import annotations

from collections.abc import Callable

from crisync.daemon import resync_event
from crisync.errors import NotFoundError, PermanentError
from crisync.listener.base import Source, queue_resync
from crisync.state import inbox, mapping
from crisync.state.store import Store, utc_now

# Objects fetched between two commits of `resync --all`.
BATCH = 200


async def resync_one(store: Store, sources: list[Source], source: str, kind: str, key: str) -> str:
    event = await resync_event(sources, source, kind, key)
    await queue_resync(store, event)
    return (
        f"queued {source}/{kind}/{key} (changed {event.changed_at.isoformat()}) for "
        "replication; a running daemon takes it within seconds, else run `crisync once`"
    )


async def resync_all(
    store: Store,
    sources: list[Source],
    source: str | None = None,
    kind: str | None = None,
    *,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> str:
    """Every mapped object (of a source, of a kind); `progress(done, total)` after each fetch."""
    names = {s.name for s in sources}
    if source is not None and source not in names:
        raise PermanentError(
            f"no source {source!r} is configured (configured: {', '.join(sorted(names))})",
            api="crisync",
        )
    async with store.reading() as conn:
        wanted = [k for k in await mapping.keys(conn, source, kind) if k[0] in names]
    queued, gone = 0, []
    progress(0, len(wanted))
    for start in range(0, len(wanted), BATCH):
        events = []
        batch = wanted[start : start + BATCH]
        for done, (object_source, object_kind, key) in enumerate(batch, start + 1):
            try:
                events.append(await resync_event(sources, object_source, object_kind, key))
            except NotFoundError:
                gone.append(f"{object_source}/{object_kind}/{key}")
            progress(done, len(wanted))
        async with store.transaction() as conn:
            await inbox.add_events(conn, events, utc_now(), backfill=True)
        queued += len(events)
    lines = [
        f"queued {queued} mapped object(s) for replication; a running daemon takes them, "
        "else run `crisync once` (unchanged ones cost the target nothing)"
    ]
    if gone:
        lines.append(
            f"{len(gone)} no longer in their source (their deletion reaches the target through "
            f"the source's feed): {', '.join(gone[:10])}{' …' if len(gone) > 10 else ''}"
        )
    return "\n".join(lines)
