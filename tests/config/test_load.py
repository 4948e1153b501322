from __future__ import annotations

from pathlib import Path

import pytest

from crisync.cli import main
from crisync.config.load import EX_CONFIG, ConfigError, load_config
from crisync.config.load import SECRETS as SECRET_NAMES

VALID = """
[state]
path = "{state}"

[elements]
url = "https://elements.example.ac.uk:8091/secure-api/v5.5"
username = "api-user"
categories = ["users", "publications"]
poll_interval = 60

[pure]
url = "https://pure.example.ac.uk/ws/api"
managing_organization = "3b3f4f2c-2b8e-4a63-9a64-1c1d4c8e2f10"

[mqtt]
url = "mqtt://localhost:1883"
topic_prefix = "crisync"
"""
SECRETS = {
    "CRISYNC_ELEMENTS_PASSWORD": "e-secret-canary",
    "CRISYNC_PURE_API_KEY": "p-secret-canary",
}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "crisync.toml"
    path.write_text(VALID.format(state=tmp_path / "state.db"))
    return path


def test_valid_file_with_secrets_from_environment(config_file: Path) -> None:
    loaded = load_config(str(config_file), env=SECRETS)
    assert loaded.config.elements is not None
    assert loaded.config.elements.password.get_secret_value() == "e-secret-canary"
    assert loaded.config.elements.categories == ["users", "publications"]
    assert loaded.config.mqtt is not None
    assert loaded.config.mqtt.port == 1883


def test_secrets_from_systemd_credentials_directory(config_file: Path, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "elements-password").write_text("from-credential\n")
    (credentials / "pure-api-key").write_text("pure-from-credential")
    loaded = load_config(str(config_file), env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert loaded.config.elements is not None
    assert loaded.config.elements.password.get_secret_value() == "from-credential"
    assert loaded.config.pure is not None
    assert loaded.config.pure.api_key.get_secret_value() == "pure-from-credential"


def test_environment_overrides_any_key(config_file: Path) -> None:
    env = {
        **SECRETS,
        "CRISYNC_ELEMENTS__POLL_INTERVAL": "15",
        "CRISYNC_MQTT__TOPIC_PREFIX": "uni",
        "CRISYNC_ELEMENTS__CATEGORIES": '["publications"]',
    }
    loaded = load_config(str(config_file), env=env)
    assert loaded.config.elements is not None
    assert loaded.config.elements.poll_interval == 15
    assert loaded.config.elements.categories == ["publications"]
    assert loaded.config.mqtt is not None
    assert loaded.config.mqtt.topic_prefix == "uni"


def test_every_problem_is_reported_at_once(config_file: Path) -> None:
    text = config_file.read_text()
    text = text.replace("poll_interval = 60", "poll_interval = -1\npol_interval = 5")
    text = text.replace('url = "mqtt://localhost:1883"', 'url = "http://localhost:1883"')
    text = text.replace("[pure]", '[pure]\napi_key = "written-in-the-file"')
    config_file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(config_file), env={})
    problems = "\n".join(caught.value.problems)
    assert "elements.poll_interval" in problems
    assert "elements.pol_interval: unknown key" in problems
    assert "mqtt.url" in problems
    assert "pure.api_key: secrets are not read from the configuration file" in problems
    assert "elements.password: missing; set CRISYNC_ELEMENTS_PASSWORD" in problems
    assert "written-in-the-file" not in problems
    assert len(caught.value.problems) == 5


def test_a_section_left_out_is_off(config_file: Path) -> None:
    text = config_file.read_text()
    config_file.write_text(text[: text.index("[mqtt]")])
    loaded = load_config(str(config_file), env=SECRETS)
    assert loaded.config.mqtt is None


def test_feeds_without_pure_is_an_error(config_file: Path) -> None:
    text = config_file.read_text()
    start, end = text.index("[pure]"), text.index("[mqtt]")
    config_file.write_text(text[:start] + text[end:])
    with pytest.raises(ConfigError, match="nowhere to go"):
        load_config(str(config_file), env=SECRETS)


def test_per_page_above_the_full_detail_limit_is_refused(config_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"elements\.per_page"):
        load_config(str(config_file), env={**SECRETS, "CRISYNC_ELEMENTS__PER_PAGE": "26"})


def test_check_config_exits_78_and_never_prints_secrets(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config", "--config", str(config_file)]) == 0
    out = capsys.readouterr()
    assert "configuration is valid" in out.out
    assert "secret-canary" not in out.out + out.err

    monkeypatch.setenv("CRISYNC_ELEMENTS__PER_PAGE", "1000")
    assert main(["check-config", "--config", str(config_file)]) == EX_CONFIG
    out = capsys.readouterr()
    assert "elements.per_page" in out.err
    assert "secret-canary" not in out.out + out.err


def test_missing_file_is_a_clear_problem(tmp_path: Path) -> None:
    assert main(["check-config", "--config", str(tmp_path / "nope.toml")]) == EX_CONFIG


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        (
            {"CRISYNC_ELEMENT__POLL_INTERVAL": "5"},
            "CRISYNC_ELEMENT__POLL_INTERVAL: no section [element] (known: commands, daemon, "
            "elements, mappings, metrics, mqtt, pure, state, unicat)",
        ),
        (
            {"CRISYNC_ELEMENTS__POLL_INTERVL": "5"},
            "CRISYNC_ELEMENTS__POLL_INTERVL: elements.poll_intervl: unknown key",
        ),
        (
            {"CRISYNC_ELEMENTS__POLL_INTERVAL": "soon"},
            "CRISYNC_ELEMENTS__POLL_INTERVAL: elements.poll_interval: "
            "Input should be a valid number, unable to parse string as a number",
        ),
        (
            {"CRISYNC_ELEMENTS__CATEGORIES": '["users", "pubs"]'},
            "CRISYNC_ELEMENTS__CATEGORIES: elements.categories.1: Input should be",
        ),
        (
            # A mapping's location is rewritten to where it is in the file, then matched.
            {"CRISYNC_MAPPINGS__ELEMENTS": '{publication = {pure_type = "nope"}}'},
            "CRISYNC_MAPPINGS__ELEMENTS: mappings.elements.publication: unknown Pure type 'nope'",
        ),
    ],
)
def test_a_problem_with_an_environment_override_names_the_variable(
    config_file: Path, override: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(config_file), env={**SECRETS, **override})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(problem)


def test_a_problem_in_the_file_names_no_variable_even_beside_overrides(config_file: Path) -> None:
    config_file.write_text(config_file.read_text().replace("poll_interval = 60", "lookback = -1"))
    env = {**SECRETS, "CRISYNC_ELEMENTS__POLL_INTERVAL": "soon"}
    with pytest.raises(ConfigError) as caught:
        load_config(str(config_file), env=env)
    assert sorted(caught.value.problems) == [
        "CRISYNC_ELEMENTS__POLL_INTERVAL: elements.poll_interval: "
        "Input should be a valid number, unable to parse string as a number",
        "elements.lookback: Input should be greater than or equal to 0",
    ]


@pytest.fixture
def without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment with none of the API secrets, as an operator's shell has."""
    for variable, _ in SECRET_NAMES.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


@pytest.mark.usefixtures("without_secrets")
def test_status_and_retry_read_the_state_without_the_api_secrets(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--config", str(config_file)]) == 0
    assert "no state database" in capsys.readouterr().out
    assert main(["retry", "--all", "--config", str(config_file)]) == 0
    assert "requeued 0 dead letter(s)" in capsys.readouterr().out
    assert (tmp_path / "state.db").exists()
    assert main(["status", "--json", "--config", str(config_file)]) == 0
    assert '"dead_letters": []' in capsys.readouterr().out


@pytest.mark.usefixtures("without_secrets")
def test_status_still_refuses_a_secret_written_into_the_file(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = config_file.read_text().replace("[pure]", '[pure]\napi_key = "written-in-the-file"')
    config_file.write_text(text)
    assert main(["status", "--config", str(config_file)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "pure.api_key: secrets are not read from the configuration file" in err
    assert "missing" not in err
    assert "written-in-the-file" not in err


@pytest.mark.usefixtures("without_secrets")
@pytest.mark.parametrize(
    "command",
    [
        ["check-config"],
        ["run"],
        ["once"],
        ["reconcile", "--check"],
        ["resync", "elements", "publication", "1042"],
    ],
)
def test_commands_that_use_an_api_name_each_missing_secret(
    config_file: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    assert main([*command, "--config", str(config_file)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "elements.password: missing; set CRISYNC_ELEMENTS_PASSWORD" in err
    assert "pure.api_key: missing; set CRISYNC_PURE_API_KEY" in err


def test_without_needing_secrets_a_secret_given_is_read_and_one_absent_cannot_be_used(
    config_file: Path,
) -> None:
    env = {"CRISYNC_ELEMENTS_PASSWORD": "e-secret-canary"}
    config = load_config(str(config_file), env=env, needs_secrets=False).config
    assert config.elements is not None
    assert config.elements.password.get_secret_value() == "e-secret-canary"
    assert config.pure is not None
    with pytest.raises(RuntimeError, match="CRISYNC_PURE_API_KEY was not read"):
        config.pure.api_key.get_secret_value()
