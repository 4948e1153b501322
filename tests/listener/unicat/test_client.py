"""The Unicat client against the simulator: the JWT's lifecycle, the envelope, errors."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import SecretStr

from crisync.errors import CredentialError, PermanentError, RetriableError
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.unicat.client import UnicatClient
from crisync.listener.unicat.errors import UnicatSelectionError, classify_unicat
from crisync.listener.unicat.sim import UnicatSimulator
from crisync.telemetry import Telemetry
from tests.support.redirect import redirected_elsewhere
from tests.support.unicat import UNICAT_API_KEY, unicat_settings

LIFETIME = 3600.0  # the simulator's default JWT lifetime


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


@pytest.fixture
def client(
    session: aiohttp.ClientSession, unicat_url: str, pure_sim: PureSimulator, telemetry: Telemetry
) -> UnicatClient:
    settings = unicat_settings(unicat_url)
    return UnicatClient(session, settings, telemetry=telemetry)


async def test_authenticates_once_and_adopts_every_renewed_jwt(
    client: UnicatClient, unicat_sim: UnicatSimulator, telemetry: Telemetry
) -> None:
    await client.sync_get(0, 0)
    for _ in range(4):
        # Each step passes half-life (a renewal comes back) and, twice taken, the expiry of
        # the JWT before: only a client that adopted each renewal stays authenticated.
        unicat_sim.advance(LIFETIME * 0.6)
        await client.sync_get(*unicat_sim.latest_cursors())
    assert unicat_sim.tokens_issued == 1
    assert unicat_sim.request_counts["auth"] == 1
    assert telemetry.requests[("unicat", "POST", "200")] == 6
    assert ("unicat", "POST", "401") not in telemetry.requests


async def test_an_expired_jwt_is_replaced_by_one_new_auth(
    client: UnicatClient, unicat_sim: UnicatSimulator, telemetry: Telemetry
) -> None:
    await client.sync_get(0, 0)
    unicat_sim.revoke_tokens()
    page = await client.sync_get(0, 0)
    assert page.items
    assert unicat_sim.tokens_issued == 2
    assert telemetry.requests[("unicat", "POST", "401")] == 1


async def test_a_second_refusal_is_a_credential_error(
    client: UnicatClient, unicat_sim: UnicatSimulator
) -> None:
    await client.sync_get(0, 0)
    unicat_sim.fail_next(401, count=2, endpoint="sync/get")
    with pytest.raises(CredentialError) as raised:
        await client.sync_get(0, 0)
    assert raised.value.status == 401
    assert unicat_sim.tokens_issued == 2  # one new /auth, not a loop of them


async def test_a_refused_key_is_a_credential_error_that_keeps_the_key_secret(
    session: aiohttp.ClientSession, unicat_url: str, pure_sim: PureSimulator
) -> None:
    settings = unicat_settings(unicat_url)
    wrong = settings.model_copy(update={"api_key": SecretStr("wrong-key-9c4b")})
    client = UnicatClient(session, wrong, telemetry=Telemetry())
    with pytest.raises(CredentialError) as raised:
        await client.sync_get(0, 0)
    assert raised.value.status == 403
    assert "wrong-key-9c4b" not in str(raised.value)
    assert UNICAT_API_KEY not in str(raised.value)


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (1006, UnicatSelectionError),
        (500, RetriableError),
        (1000, RetriableError),
        (1002, RetriableError),
        (503, RetriableError),  # a gateway's HTML page, not an envelope
        (1001, PermanentError),
        (400, PermanentError),
        (403, CredentialError),
    ],
)
async def test_error_envelopes_become_typed_errors(
    client: UnicatClient,
    unicat_sim: UnicatSimulator,
    code: int,
    error_class: type[Exception],
) -> None:
    unicat_sim.fail_next(code, endpoint="sync/get")
    with pytest.raises(error_class) as raised:
        await client.sync_get(0, 0)
    assert type(raised.value) is error_class
    assert "/sync/get" in str(raised.value)


def test_classification_of_unicat_codes_follows_the_http_status_too() -> None:
    assert isinstance(classify_unicat("x", 1003, "Process error", 422), RetriableError)
    assert not classify_unicat("x", 1004, "Invite invalid", 422).retriable
    assert not classify_unicat("x", 1005, "Excel worksheet invalid", 422).retriable
    assert not classify_unicat("x", 422, "Unprocessable Entity", 422).retriable
    assert classify_unicat("x", 501, "Not implemented", 501).retriable is False
    assert isinstance(classify_unicat("x", 401, "Unauthorized", 401), CredentialError)


async def test_items_are_fetched_and_a_missing_one_is_none(
    client: UnicatClient, unicat_sim: UnicatSimulator
) -> None:
    gid = unicat_sim.record_gids("publication")[0]
    record = await client.get_item("records", gid)
    assert record is not None
    assert record["gid"] == gid
    assert await client.definition_name(record["definition"]) == "publication"
    unicat_sim.delete_record(gid)
    assert await client.get_item("records", gid) is None


async def test_definition_names_come_from_auth_and_are_read_again_when_forgotten(
    client: UnicatClient, unicat_sim: UnicatSimulator
) -> None:
    await client.sync_get(0, 0)
    person = unicat_sim.definition_gid("person")
    assert await client.definition_name(person) == "person"
    assert unicat_sim.request_counts["definitions/get"] == 0
    client.forget_definition(person)
    assert await client.definition_name(person) == "person"
    assert unicat_sim.request_counts["definitions/get"] == 1


async def test_a_redirect_to_another_host_is_refused_and_the_api_key_stays_home(
    session: aiohttp.ClientSession, pure_sim: PureSimulator
) -> None:
    async with redirected_elsewhere() as (gateway, elsewhere):
        settings = unicat_settings(gateway)
        client = UnicatClient(session, settings, telemetry=Telemetry())
        with pytest.raises(PermanentError, match="another host"):
            await client.sync_get(0, 0)  # begins with POST /auth {"api_key": ...}
    assert elsewhere == []
