"""The APIs the dispatcher holds work back for: what `crisync status`, systemd and the
operators read while an API is out (the daemon's memory is not theirs to read)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from crisync.errors import REFUSED_CONFIGURATION, REFUSED_CREDENTIALS
from crisync.state import inbox
from crisync.state.store import fetch_all


@dataclass(frozen=True)
class OpenCircuit:
    api: str
    opened_at: str
    reason: str
    routes: list[str]  # "source/kind" whose events wait
    probes_failed: int
    next_probe_at: str | None


async def put(conn: aiosqlite.Connection, circuit: OpenCircuit) -> None:
    await conn.execute(
        """INSERT OR REPLACE INTO api_circuits
               (api, opened_at, reason, routes, probes_failed, next_probe_at)
           VALUES (?, ?, ?, ?, ?, ?)""",
        (
            circuit.api,
            circuit.opened_at,
            circuit.reason,
            json.dumps(sorted(circuit.routes)),
            circuit.probes_failed,
            circuit.next_probe_at,
        ),
    )


async def remove(conn: aiosqlite.Connection, api: str) -> None:
    await conn.execute("DELETE FROM api_circuits WHERE api = ?", (api,))


async def clear(conn: aiosqlite.Connection) -> None:
    """Forget what a daemon that is no longer running recorded: a new one starts closed."""
    await conn.execute("DELETE FROM api_circuits")


async def all_open(conn: aiosqlite.Connection) -> list[OpenCircuit]:
    rows = await fetch_all(
        conn,
        """SELECT api, opened_at, reason, routes, probes_failed, next_probe_at
           FROM api_circuits ORDER BY api""",
    )
    return [OpenCircuit(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]


async def describe_open(conn: aiosqlite.Connection) -> list[str]:
    """One line per API that is out, e.g. "pure unreachable since 13:40:02 UTC, 300 waiting"."""
    return [
        describe(circuit, await inbox.pending_count(conn, routes=circuit.routes))
        for circuit in await all_open(conn)
    ]


def describe(circuit: OpenCircuit, waiting: int) -> str:
    since = datetime.fromisoformat(circuit.opened_at).strftime("%H:%M:%S")
    if circuit.reason.startswith((REFUSED_CREDENTIALS, REFUSED_CONFIGURATION)):
        return f"{circuit.api} {circuit.reason} since {since} UTC, {waiting} waiting"
    return f"{circuit.api} unreachable since {since} UTC, {waiting} waiting"
