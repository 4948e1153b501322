from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from crisync.config.load import ConfigError, load_config
from crisync.config.model import Config, MqttConfig
from tests.support.example import SHIPPED_OFF, switched_on

BASE = """
[state]
path = "{state}"

[mqtt]
url = "mqtts://broker.example.ac.uk"
username = "crisync"
ca_file = "{ca}"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a connect")
    path = tmp_path / "crisync.toml"
    path.write_text(BASE.format(state=tmp_path / "state.db", ca=ca))
    return path


def test_mqtts_with_a_password_from_the_environment_and_protocol_5(config_file: Path) -> None:
    env = {"CRISYNC_MQTT_PASSWORD": "m-secret-canary", "CRISYNC_MQTT__PROTOCOL": "5"}
    mqtt = load_config(str(config_file), env=env).config.mqtt
    assert mqtt is not None
    assert (mqtt.tls, mqtt.host, mqtt.port, mqtt.protocol) == (
        True,
        "broker.example.ac.uk",
        8883,
        "5",
    )
    assert mqtt.password is not None
    assert mqtt.password.get_secret_value() == "m-secret-canary"
    assert "m-secret-canary" not in MqttConfig.model_dump_json(mqtt)


def test_a_password_needs_a_username(config_file: Path) -> None:
    env = {"CRISYNC_MQTT_PASSWORD": "m-secret-canary"}
    config_file.write_text(config_file.read_text().replace('username = "crisync"\n', ""))
    with pytest.raises(ConfigError) as raised:
        load_config(str(config_file), env=env)
    assert raised.value.problems == ["mqtt: a password (CRISYNC_MQTT_PASSWORD) needs username"]


@pytest.mark.parametrize(
    ("mqtt", "problem"),
    [
        ({"url": "mqtt://broker", "ca_file": "{ca}"}, "need an mqtts:// url"),
        ({"url": "mqtts://broker", "key_file": "{ca}"}, "key_file needs cert_file"),
        (
            {"url": "mqtts://broker", "cert_file": "/nonexistent.pem"},
            "Path does not point to a file",
        ),
        ({"url": "http://broker"}, "mqtt://host[:port] or mqtts://host[:port]"),
        ({"protocol": "3.1"}, "Input should be '3.1.1' or '5'"),
    ],
)
def test_mqtt_settings_that_cannot_work_are_refused(
    tmp_path: Path, mqtt: dict[str, str], problem: str
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    settings = {key: value.format(ca=ca) for key, value in mqtt.items()}
    with pytest.raises(ValidationError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        MqttConfig.model_validate(settings)


def test_metrics_and_commands_are_off_unless_their_section_is_there() -> None:
    assert (Config().metrics, Config().commands) == (None, None)
    config = Config.model_validate({"mqtt": {}, "metrics": {}, "commands": {}})
    assert config.metrics is not None
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9660)
    assert config.commands is not None
    assert config.commands.allow == ["retry", "resync"]


def test_commands_need_mqtt_and_known_names() -> None:
    with pytest.raises(ValidationError, match=r"\[commands\] is configured but \[mqtt\] is not"):
        Config.model_validate({"commands": {}})
    with pytest.raises(ValidationError, match="Input should be 'retry' or 'resync'"):
        Config.model_validate({"mqtt": {}, "commands": {"allow": ["reboot"]}})


def test_the_example_configuration_is_valid_with_every_section_on(tmp_path: Path) -> None:
    path = tmp_path / "crisync.toml"
    path.write_text(switched_on(*SHIPPED_OFF, "elements.writeback.publications"))
    env = {
        "CRISYNC_ELEMENTS_PASSWORD": "e",
        "CRISYNC_PURE_API_KEY": "p",
        "CRISYNC_UNICAT_API_KEY": "u",
    }
    config = load_config(str(path), env=env).config
    assert config.elements is not None
    assert config.unicat is not None
    assert config.mqtt is not None
    assert config.metrics is not None
    assert config.commands is not None
    assert config.mappings.for_kind("unicat", "record") is not None
    assert list(config.elements.writeback) == ["publications"]
    assert (config.mqtt.protocol, config.metrics.host) == ("3.1.1", "127.0.0.1")
