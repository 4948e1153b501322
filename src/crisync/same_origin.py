"""Requests to an API stay on its configured origin: its credentials go to no other host.

aiohttp follows redirects by itself. On the way to another origin it drops Authorization
and cookies, but not a header of the API's own such as Pure's ``api-key``, and after a
307 or 308 it sends the body again, such as Unicat's ``/auth`` ``{"api_key": ...}``. A
request middleware sees every request, redirects included, and refuses one elsewhere.
"""

from __future__ import annotations

from aiohttp import ClientHandlerType, ClientMiddlewareType, ClientRequest, ClientResponse
from yarl import URL

from crisync.errors import PermanentError


def same_origin_only(base_url: str, *, api: str) -> ClientMiddlewareType:
    """A request middleware that refuses any request off the origin of `base_url`."""
    origin = URL(base_url).origin()

    async def refuse_other_origins(
        request: ClientRequest, handler: ClientHandlerType
    ) -> ClientResponse:
        if request.url.origin() != origin:
            raise PermanentError(
                f"{request.method} redirected to another host, {request.url.origin()}: "
                f"refused, the credentials for {origin} go to no other host",
                api=api,
            )
        return await handler(request)

    return refuse_other_origins
