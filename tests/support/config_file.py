"""A configuration file as an operator writes it, pointing at the test's simulators and broker."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from crisync.config.model import Config, MqttConfig
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.config import ElementsCategory, ElementsConfig, WritebackConfig
from crisync.sim.broker import MosquittoBroker
from tests.support.mappings import USERS_CREATED_TOML, users_created
from tests.support.secrets import ELEMENTS_PASSWORD, PURE_API_KEY


def write_config(path: Path, config: Config, broker: MosquittoBroker, prefix: str) -> None:
    assert config.elements is not None
    assert config.pure is not None
    path.write_text(f"""
[state]
path = "{config.state.path}"

[daemon]
shutdown_timeout = 10

[elements]
url = "{config.elements.url}"
username = "crisync"
poll_interval = 0.5
request_gap = 0

[pure]
url = "{config.pure.url}"
managing_organization = "{config.pure.managing_organization}"
concurrency = {config.pure.concurrency}
timeout = {config.pure.timeout}

[mqtt]
url = "{broker.url}"
topic_prefix = "{prefix}"
client_id = "daemon-{prefix}"
{USERS_CREATED_TOML}""")
    with path.open("a") as file:
        for feed, writeback in config.elements.writeback.items():
            file.write(f"""
[elements.writeback.{feed}]
source = "{writeback.source}"
field = "{writeback.field}"
""")


def write_simulator_config(
    path: Path,
    elements_origin: str,
    pure_origin: str,
    pure: PureSimulator,
    broker: MosquittoBroker,
    prefix: str,
    writeback: dict[ElementsCategory, WritebackConfig] | None = None,
    **pure_settings: Any,
) -> Config:
    """The file for a daemon of the simulators' origins, with its state database beside it;
    `writeback` as [elements] writeback says, `pure_settings` are more [pure] settings,
    e.g. concurrency."""
    config = Config(
        state={"path": path.with_name("state.db")},
        elements=ElementsConfig(
            url=f"{elements_origin}/secure-api/v5.5",
            username="crisync",
            password=ELEMENTS_PASSWORD,
            writeback=writeback or {},
        ),
        pure=PureConfig(
            url=f"{pure_origin}/ws/api",
            api_key=PURE_API_KEY,
            managing_organization=pure.organization_uuids[0],
            **pure_settings,
        ),
        mqtt=MqttConfig(url=broker.url, topic_prefix=prefix),
        mappings=users_created(),
    )
    write_config(path, config, broker, prefix)
    return config


def config_toml(config: Config) -> str:
    """Every setting the configuration was given, as TOML; secrets are left out, as they must."""
    document = config.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    lines = []
    for section, table in document.items():
        lines.append(f"[{section}]")
        lines.extend(f"{_key(key)} = {_value(value)}" for key, value in table.items())
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    # Other keys are quoted, and a quoted key in TOML is a JSON string.
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    # Strings, numbers and booleans: TOML spells them as JSON does.
    return json.dumps(value)
