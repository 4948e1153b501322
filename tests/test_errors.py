"""The classification of transport failures, from what aiohttp really raises."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web

from crisync.errors import RetriableError, classify_exception, parse_retry_after
from crisync.sim.server import serve


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port where connections are refused: bound, not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


async def failure_of(session: aiohttp.ClientSession, url: str) -> RetriableError:
    with pytest.raises(aiohttp.ClientError) as raised:
        await session.get(url)
    classified = classify_exception("pure", raised.value)
    assert isinstance(classified, RetriableError)
    return classified


async def test_a_refused_connection_names_the_host_and_the_reason_in_words(
    session: aiohttp.ClientSession, refusing_port: int
) -> None:
    failure = await failure_of(session, f"http://127.0.0.1:{refusing_port}/ws/api")
    assert failure.message == (
        f"connection failed: cannot connect to 127.0.0.1:{refusing_port}: Connection refused"
    )
    assert failure.info().message == f"pure: {failure.message}"


async def test_a_tls_failure_says_what_tls_said_without_aiohttp_s_ssl_setting(
    session: aiohttp.ClientSession,
) -> None:
    async with serve(web.Application()) as origin:  # plain HTTP where TLS is asked for
        port = int(origin.rpartition(":")[2])
        failure = await failure_of(session, f"https://127.0.0.1:{port}/")
    assert failure.message.startswith(f"connection failed: cannot connect to 127.0.0.1:{port}: ")
    assert "SSL" in failure.message
    assert "ssl:" not in failure.message


NOW = datetime(2026, 12, 5, 18, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("Sat, 05 Dec 2026 18:02:30 GMT", 150.0),  # an HTTP date, counted from now
        ("Sat, 05 Dec 2026 17:59:00 GMT", 0.0),  # a date past is no wait
        ("soon", None),
        ("2026-12-05 18:02", None),
        (None, None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds
