"""A gateway that redirects every request to another host, which records what reaches it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from crisync.sim.server import serve


@dataclass(frozen=True)
class Arrived:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@contextlib.asynccontextmanager
async def redirected_elsewhere() -> AsyncIterator[tuple[str, list[Arrived]]]:
    """The gateway's origin, and the requests that reached the other host.

    The redirect is a 307, after which a client repeats the method and the body.
    """
    arrived: list[Arrived] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.read()
        arrived.append(Arrived(request.method, request.path_qs, dict(request.headers), body))
        return web.json_response({}, status=404)

    elsewhere = web.Application()
    elsewhere.router.add_route("*", "/{tail:.*}", record)
    async with serve(elsewhere) as other_origin:

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(other_origin + request.path_qs)

        gateway = web.Application()
        gateway.router.add_route("*", "/{tail:.*}", redirect)
        async with serve(gateway) as origin:
            yield origin, arrived
