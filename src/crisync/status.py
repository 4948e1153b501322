"""`crisync status`: cursors, backlog, outbox depth and dead letters from the state database."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from crisync.state import api_circuits, api_quotas, cursors, dead_letters, inbox, mapping, outbox
from crisync.state.store import Store


@dataclass(frozen=True)
class StatusReport:
    schema_version: int
    # one line per API that is out (since when, how much waits for it) or refuses a feed
    unavailable: list[str]
    # each API's hourly quota (what is left, or until when it is spent); backfill that waits
    throttling: list[str]
    cursors: list[dict[str, Any]]
    backlog: int
    outbox_depth: int
    dead_letters: list[dict[str, Any]]
    mapped_objects: int


async def read_status(store: Store) -> StatusReport:
    version = await store.schema_version()
    async with store.reading() as conn:
        return StatusReport(
            schema_version=version,
            unavailable=[
                *await api_circuits.describe_open(conn),
                *await cursors.describe_parked(conn),
            ],
            throttling=await api_quotas.describe(conn),
            cursors=[
                {
                    "feed": c.feed,
                    "high_water": c.high_water.isoformat() if c.high_water else None,
                    "sweep_in_progress": c.next_url is not None,
                    "last_error": c.last_error,
                }
                for c in await cursors.all_cursors(conn)
            ],
            backlog=await inbox.pending_count(conn),
            outbox_depth=await outbox.depth(conn),
            dead_letters=[asdict(d) for d in await dead_letters.all_dead_letters(conn)],
            mapped_objects=await mapping.count(conn),
        )


def render_status(report: StatusReport, *, every_dead_letter: bool = False) -> str:
    """The report for a person; dead letters grouped by their error unless each is asked for."""
    # An API that is out or refuses a feed comes first: it is why the backlog grows, or
    # stays empty, and nothing fails.
    lines = [
        *report.unavailable,
        *report.throttling,
        f"state schema version {report.schema_version}",
        "",
        "feeds:",
    ]
    if not report.cursors:
        lines.append("  (none polled yet)")
    for c in report.cursors:
        sweep = " (sweep in progress)" if c["sweep_in_progress"] else ""
        error = f"  last error: {c['last_error']}" if c["last_error"] else ""
        lines.append(f"  {c['feed']:<24} high water {c['high_water'] or '-'}{sweep}{error}")
    lines += [
        "",
        f"backlog (pending events): {report.backlog}",
        f"outbox (unpublished outcomes): {report.outbox_depth}",
        f"mapped objects: {report.mapped_objects}",
        f"dead letters: {len(report.dead_letters)}",
    ]
    if every_dead_letter:
        lines.extend(
            f"  {d['source']}/{d['kind']}/{d['key']}: {d['error_class']} "
            f"{d['status'] or ''} {d['message']} (attempts {d['attempts']}, {d['failed_at']})"
            for d in report.dead_letters
        )
    else:
        lines.extend(_grouped(report.dead_letters))
    return "\n".join(lines)


# Keys shown as examples of a group of dead letters with one error.
EXAMPLE_KEYS = 3


def _grouped(dead_letters: list[dict[str, Any]]) -> list[str]:
    """One line per distinct error, most frequent first, with a few of the objects it hit:
    the same error on hundreds of objects is one line, not hundreds."""
    groups: dict[tuple[str, int | None, str], list[dict[str, Any]]] = defaultdict(list)
    for letter in dead_letters:
        groups[(letter["error_class"], letter["status"], letter["message"])].append(letter)
    lines = []
    for (error_class, status, message), letters in sorted(
        groups.items(), key=lambda group: -len(group[1])
    ):
        keys = [f"{d['source']}/{d['kind']}/{d['key']}" for d in letters[:EXAMPLE_KEYS]]
        more = f", and {len(letters) - EXAMPLE_KEYS} more" if len(letters) > EXAMPLE_KEYS else ""
        lines.append(f"  {len(letters)} objects: {error_class} {status or ''} {message}")
        last = max(d["failed_at"] for d in letters)
        lines.append(f"      e.g. {', '.join(keys)}{more}; last {last}")
    if groups:
        lines.append("  (crisync status --all lists each; crisync retry puts them back)")
    return lines
