"""Serve a simulator's aiohttp application on loopback."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

# Where `crisync sim all` serves each simulator unless told otherwise. Here, not beside the
# simulators: the command line's parser names them, and importing the simulators (and the
# Pure contract they validate against) would cost every crisync command, the daemon too.
DEFAULT_PORTS = {"elements": 8401, "pure": 8402, "unicat": 8403}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: web.Application, port: int = 0, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run `app` until the block ends; yields its origin, e.g. ``http://127.0.0.1:8091``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port or free_port())
    await site.start()
    try:
        bound = runner.addresses[0]
        yield f"http://{host}:{bound[1]}"
    finally:
        await runner.cleanup()


# Where a served simulator takes requests that change its world from outside (`crisync sim
# change|add|delete`): past the API's credentials, latency and injected faults.
CONTROL_PATH = "/_sim/"

ControlAction = Callable[[web.Request], Awaitable[dict[str, Any]]]


def control_route(action: ControlAction) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler answering what `action` changed, or why nothing changed (JSON): an unknown
    object is a KeyError (404), a request that makes no sense a ValueError or TypeError (400)."""

    async def answer(request: web.Request) -> web.Response:
        try:
            return web.json_response(await action(request))
        except KeyError as exc:
            return web.json_response({"error": str(exc.args[0])}, status=404)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    return answer


async def control_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; none is an empty one."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise TypeError("the body must be a JSON object")
    return body
