"""`crisync sim change|add|delete`: change a running simulator's world from outside.

Each simulator takes these on `/_sim/<simulator>/...` beside its API (see sim.server): an
operator changes, adds or deletes an object and watches crisync carry the change to Pure.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

import aiohttp

from crisync.cli import EX_NOINPUT, EX_OK, EX_UNAVAILABLE, EX_USAGE
from crisync.sim.server import CONTROL_PATH, DEFAULT_PORTS

# What each verb of the command line is called on the simulator.
ACTIONS = {"change": "touch", "delete": "delete", "add": "add"}
CHANGEABLE = ("elements", "unicat")  # the sources; Pure is crisync's to write


@dataclass(frozen=True)
class WorldChange:
    verb: str  # change, add or delete
    simulator: str  # elements or unicat
    kind: str  # an Elements category (publication, user, ...); for Unicat "record" or, to
    # add, a definition (person, publication)
    key: str | None  # the object's id; None to add
    title: str | None = None  # Elements: the new title
    fields: tuple[str, ...] = ()  # Unicat: FIELD=VALUE
    url: str | None = None  # the simulator's origin; default: where `sim all` serves it

    def path(self) -> str:
        where = self.kind if self.key is None else f"{self.kind}/{self.key}"
        return f"{CONTROL_PATH}{self.simulator}/{where}/{ACTIONS[self.verb]}"

    def body(self) -> dict[str, Any]:
        if self.simulator == "elements":
            return {} if self.title is None else {"title": self.title}
        return {"fields": dict(field.partition("=")[::2] for field in self.fields)}

    def problem(self) -> str | None:
        """What the command line got wrong, before any request."""
        if (self.verb == "add") != (self.key is None):
            return f"sim {self.verb} {self.simulator} KIND{'' if self.verb == 'add' else ' KEY'}"
        if self.title is not None and self.simulator != "elements":
            return "--title is for Elements objects; Unicat records take --set FIELD=VALUE"
        if self.fields and self.simulator != "unicat":
            return "--set is for Unicat records; Elements objects take --title"
        if self.verb == "delete" and (self.title is not None or self.fields):
            return "a deletion takes no --title or --set"
        if any("=" not in field for field in self.fields):
            return "--set takes FIELD=VALUE"
        return None


def run_world_change(change: WorldChange) -> int:
    problem = change.problem()
    if problem is not None:
        print(f"crisync: {problem}", file=sys.stderr)
        return EX_USAGE
    origin = change.url or f"http://127.0.0.1:{DEFAULT_PORTS[change.simulator]}"
    try:
        status, answer = asyncio.run(_post(origin.rstrip("/") + change.path(), change.body()))
    except (aiohttp.ClientError, TimeoutError) as exc:
        why = exc.os_error.strerror if isinstance(exc, aiohttp.ClientConnectorError) else exc
        print(
            f"crisync: no {change.simulator} simulator answers at {origin} ({why or 'timeout'}); "
            "is `crisync sim all` running (else give --url)?",
            file=sys.stderr,
        )
        return EX_UNAVAILABLE
    if status == 200:
        print(_in_words(change, answer))
        return EX_OK
    error = answer.get("error") or f"HTTP {status}: no such kind or action here"
    print(f"crisync: sim {change.verb}: {error}", file=sys.stderr)
    return EX_NOINPUT if status == 404 else EX_USAGE


async def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, json=body) as response,
    ):
        try:
            answer = await response.json(content_type=None)
        except json.JSONDecodeError:
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}


def _in_words(change: WorldChange, answer: dict[str, Any]) -> str:
    key = answer.get("id", answer.get("gid", change.key))
    done = {"change": "changed", "add": "added", "delete": "deleted"}[change.verb]
    kind = answer.get("category", answer.get("definition", change.kind))
    title = f": {answer['title']!r}" if "title" in answer else ""
    return f"{done} {change.simulator} {kind} {key}{title}"
