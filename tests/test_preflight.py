"""`crisync check-config --online`: every API and the broker asked, each answer one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import SecretStr

from crisync.cli import EX_CONFIG, EX_OK, EX_UNAVAILABLE, main
from crisync.config.model import Config
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from crisync.mapping.rules import MappingsConfig
from crisync.preflight import Answer, check_online
from crisync.sim.server import free_port, serve
from tests.support.secrets import PURE_API_KEY

PLACEHOLDER = "00000000-0000-0000-0000-000000000000"


async def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    status = await asyncio.to_thread(main, ["check-config", "--online", "--config", str(path)])
    return status, capsys.readouterr().out.splitlines()[1:]


async def test_every_system_answers(
    config_path: Path, pure_sim: PureSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines = await check(config_path, capsys)
    assert status == EX_OK
    assert [line.split(":")[0].split() for line in lines] == [
        ["ok", "elements"],
        ["ok", "pure"],
        ["ok", "mqtt"],
    ]
    assert "crisync may read users" in lines[0]
    assert "may write 3 (external-persons, persons, research-outputs)" in lines[1]
    # Each type the read kinds need is read, its right to write asked of no content, and
    # the managing organisation read: nothing is written.
    written = ("external-persons", "persons", "research-outputs")
    assert pure_sim.request_counts == {
        ("organizations", "get"): 1,
        **{(pure_type, "list"): 1 for pure_type in written},
        **{(pure_type, "update"): 1 for pure_type in written},
        ("research-outputs", "list"): 2,  # and a sample for identifiers: match rules use them
        ("journals", "list"): 1,  # the journal list: articles are found in it
    }
    assert all(not pure_sim.objects(pure_type) for pure_type in written)


async def test_a_refused_key_and_an_absent_broker_are_unavailable(
    config_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CRISYNC_PURE_API_KEY", "not-the-key")
    monkeypatch.setenv("CRISYNC_MQTT__URL", f"mqtt://127.0.0.1:{free_port()}")
    status, lines = await check(config_path, capsys)
    assert status == EX_UNAVAILABLE
    assert lines[0].split()[:2] == ["ok", "elements:"]
    assert lines[1].startswith("  FAILED pure: refused the credentials (HTTP 401): ")
    assert lines[2].startswith("  FAILED mqtt: cannot connect: ")
    assert "not-the-key" not in "".join(lines)


def with_writeback(path: Path, source: str, field: str) -> None:
    """The operator's file with a write-back of publications into `field` of `source`."""
    with path.open("a") as file:
        file.write(f'\n[elements.writeback.publications]\nsource = "{source}"\nfield = "{field}"\n')


@pytest.mark.parametrize(
    ("source", "field", "problem"),
    [
        ("nope", "notes", "no publication data source is named 'nope' (there are: "),
        ("manual", "nonsense", "no publication type has a field 'nonsense'"),
    ],
)
async def test_a_write_back_elements_cannot_take_is_a_configuration_problem(
    config_path: Path, capsys: pytest.CaptureFixture[str], source: str, field: str, problem: str
) -> None:
    with_writeback(config_path, source, field)
    status, lines = await check(config_path, capsys)
    assert status == EX_CONFIG
    assert lines[0].startswith(
        f"  FAILED elements: write-back of publication to field {field!r} of source "
        f"{source!r} is misconfigured: {problem}"
    )
    assert lines[1].split()[:2] == ["ok", "pure:"]  # every system asked all the same


async def test_a_write_back_elements_takes_is_said(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with_writeback(config_path, "manual", "notes")
    status, lines = await check(config_path, capsys)
    assert status == EX_OK
    assert lines[0].endswith(", and may write back into publications")


async def test_a_category_the_account_may_not_read_is_named(
    config_path: Path, elements_sim: ElementsSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    elements_sim.fail_next(403, "unauthorised access", path="/publications")
    status, lines = await check(config_path, capsys)
    assert status == EX_CONFIG
    assert lines[0] == "  FAILED elements: the Elements account may not read publications"


async def test_a_placeholder_organisation_is_a_configuration_problem(
    config_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRISYNC_PURE__MANAGING_ORGANIZATION", PLACEHOLDER)
    status, lines = await check(config_path, capsys)
    assert status == EX_CONFIG
    assert lines[1] == (
        f"  FAILED pure: [pure] managing_organization: Pure has no organizations {PLACEHOLDER}"
    )


def add_user_property(config_path: Path, line: str) -> None:
    """`line` among the properties of the user mapping in the configuration file."""
    last_property = '"name.lastName" = { from = "fields.last-name", required = true }\n'
    text = config_path.read_text()
    assert text.count(last_property) == 1
    config_path.write_text(text.replace(last_property, f"{last_property}{line}\n"))


async def test_an_organisation_a_mapping_names_that_pure_lacks_is_a_configuration_problem(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each uuid a mapping's constant names is read, as the managing organisation is."""
    add_user_property(
        config_path,
        '"staffOrganizationAssociations" = { value = [{ organization = '
        f'{{ systemName = "Organization", uuid = "{PLACEHOLDER}" }} }}] }}',
    )
    status, lines = await check(config_path, capsys)
    assert status == EX_CONFIG
    assert lines[1] == (
        "  FAILED pure: mappings.elements.user.properties.staffOrganizationAssociations: "
        f"Pure has no organizations {PLACEHOLDER}"
    )


async def answer_of(config: Config, limited: PureSimulator) -> Answer:
    """What check-config --online says of Pure behind this key, with the built-in mappings."""
    async with serve(limited.app()) as origin:
        assert config.pure is not None
        pure = config.pure.model_copy(
            update={
                "url": f"{origin}/ws/api",
                "managing_organization": limited.organization_uuids[0],
            }
        )
        # The built-in mappings: persons are only read (link-only), found by HR's PrimaryId.
        site = config.model_copy(update={"pure": pure, "mappings": MappingsConfig()})
        answers = await check_online(site)
    (answer,) = [a for a in answers if a.system == "pure"]
    return answer


async def test_a_key_without_the_rights_the_mappings_need_is_named_precisely(
    config: Config,
) -> None:
    access = {
        "persons": ["read"],
        "external-persons": ["read", "write"],
        "organizations": ["read"],
        "journals": ["read"],
    }
    answer = await answer_of(config, PureSimulator(api_key=PURE_API_KEY, access=access))
    assert (answer.ok, answer.misconfigured) == (False, True)
    assert answer.message == (
        "the API key's access definition: may not read research-outputs; "
        "may not write research-outputs"
    )


async def test_identifiers_the_key_is_not_shown_are_a_hint_not_a_failure(config: Config) -> None:
    limited = PureSimulator(api_key=PURE_API_KEY, hidden_fields=["identifiers"])
    hr_id = {
        "typeDiscriminator": "PrimaryId",
        "idSource": "synchronisedUnifiedPerson",
        "value": "1",
    }
    person = {"name": {"firstName": "Ada", "lastName": "Lovelace"}, "identifiers": [hr_id]}
    limited.seed("persons", person, by="hr-sync")
    answer = await answer_of(config, limited)
    assert answer.ok
    assert "no identifiers seen on persons (none among the first 1)" in answer.message


async def test_unicat_signs_in_with_its_key(unicat_config: Config) -> None:
    answers = await check_online(unicat_config)
    assert [(a.system, a.ok) for a in answers] == [("unicat", True), ("pure", True), ("mqtt", True)]
    assert unicat_config.unicat is not None
    wrong_key = unicat_config.unicat.model_copy(update={"api_key": SecretStr("nope")})
    [unicat, *_] = await check_online(unicat_config.model_copy(update={"unicat": wrong_key}))
    assert (unicat.ok, unicat.misconfigured) == (False, False)
    assert unicat.message.startswith("refused the credentials (HTTP 403): POST /auth")
