"""The configuration's shape and rules: one pydantic model per TOML section.

The pipeline's own sections are here; each outside system's section lives beside its
code and is listed in `Config`: its sources (`SourceSection`) and targets (`TargetSection`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from crisync.config.section import Section, SourceSection, TargetSection
from crisync.handlers.pure.config import PureConfig
from crisync.listener.elements.config import ElementsConfig
from crisync.listener.unicat.config import UnicatConfig
from crisync.mapping.rules import MappingsConfig


class StateConfig(Section):
    path: Path = Path("/var/lib/crisync/state.db")


class MqttConfig(Section):
    url: str = Field(
        "mqtt://localhost:1883", description="mqtt://host[:port] or mqtts://host[:port] (TLS)"
    )
    topic_prefix: str = "crisync"
    client_id: str = Field(
        "crisync", min_length=1, description="stable: the broker keeps the session under it"
    )
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    username: str | None = None
    password: SecretStr | None = Field(None, exclude=True)
    ca_file: FilePath | None = Field(
        None, description="mqtts: CA certificates to trust (default: the system's)"
    )
    cert_file: FilePath | None = Field(None, description="mqtts: client certificate (PEM)")
    key_file: FilePath | None = Field(
        None, description="mqtts: the client certificate's key, unless cert_file holds it"
    )
    keepalive: int = Field(60, ge=5, le=65535)
    publish_timeout: float = Field(
        10.0, gt=0, description="seconds to wait for the broker's PUBACK before sending again"
    )
    persistent_session: bool = Field(
        True,
        description="the broker keeps the session across disconnects; false for a trial run "
        "(`crisync demo`) that must leave nothing behind",
    )
    session_expiry: int = Field(
        86400, ge=0, description="MQTT 5: seconds the broker keeps the session after a disconnect"
    )

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must be an mqtt://host[:port] or mqtts://host[:port] URL")
        return value

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: object) -> object:
        # CRISYNC_MQTT__PROTOCOL=5 arrives as the number 5.
        return str(value) if isinstance(value, int) else value

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        if (
            not value
            or any(c in value for c in "#+")
            or value.startswith("/")
            or value.endswith("/")
        ):
            raise ValueError("must be a non-empty topic level without '#', '+' or edge slashes")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if not self.tls and any((self.ca_file, self.cert_file, self.key_file)):
            raise ValueError("ca_file, cert_file and key_file need an mqtts:// url")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        if self.password is not None and self.username is None:
            raise ValueError("a password (CRISYNC_MQTT_PASSWORD) needs username")
        return self

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


class MetricsConfig(Section):
    """The HTTP endpoint with /healthz and /metrics; the section switches it on."""

    host: str = Field("127.0.0.1", description="address to listen on; 127.0.0.1 keeps it local")
    port: int = Field(9660, ge=1, le=65535)


CommandName = Literal["retry", "resync"]


class CommandsConfig(Section):
    """Operator commands over MQTT; the section switches them on."""

    allow: list[CommandName] = Field(default=["retry", "resync"], min_length=1)


class DaemonConfig(Section):
    shutdown_timeout: float = Field(
        20.0, gt=0, description="seconds SIGTERM waits for in-flight work and the outbox"
    )
    once_outage_timeout: float = Field(
        300.0,
        gt=0,
        description="seconds `crisync once` waits for an API that is out before it exits 69",
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class Config(Section):
    state: StateConfig = StateConfig()
    daemon: DaemonConfig = DaemonConfig()
    elements: ElementsConfig | None = None
    unicat: UnicatConfig | None = None
    pure: PureConfig | None = None
    mqtt: MqttConfig | None = None
    # Always there: without a [mappings] section the built-in mappings apply.
    mappings: MappingsConfig = Field(default_factory=MappingsConfig)
    metrics: MetricsConfig | None = None
    commands: CommandsConfig | None = None

    @property
    def sources(self) -> dict[str, SourceSection]:
        """The configured sources, by section name."""
        return {n: s for n, s in self._sections().items() if isinstance(s, SourceSection)}

    @property
    def targets(self) -> dict[str, TargetSection]:
        """The configured targets, by section name."""
        return {n: s for n, s in self._sections().items() if isinstance(s, TargetSection)}

    def _sections(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in type(self).model_fields}

    @model_validator(mode="after")
    def _sources_need_a_target(self) -> Config:
        if self.sources and not self.targets:
            names = ", ".join(f"[{name}]" for name in self.sources)
            raise ValueError(f"{names} configured but no target: changes would have nowhere to go")
        return self

    @model_validator(mode="after")
    def _every_kind_mapped_once(self) -> Config:
        """Each kind a source reads has a mapping to a configured target, and each mapping
        the configuration declares has a source that reads its kind."""
        problems = []
        known_sources = {n for n, c in section_types().items() if issubclass(c, SourceSection)}
        for source, section in self.sources.items():
            for kind in sorted(section.kinds()):
                if self.mappings.for_kind(source, kind) is None:
                    problems.append(
                        f"{source}: reads {kind} objects, but no mapping says what they become: "
                        f"add [mappings.{source}.{kind}] or stop reading them"
                    )
        for source, kind in sorted(self.mappings.declared):
            configured = self.sources.get(source)
            if source not in known_sources:
                problems.append(f"mappings.{source}.{kind}: no source is named {source!r}")
            elif configured is not None and kind not in configured.kinds():
                reads = ", ".join(sorted(configured.kinds()))
                problems.append(
                    f"mappings.{source}.{kind}: {source} reads no {kind} objects ({reads})"
                )
        for source, kind, rules in self.mappings.all():
            if source in self.sources and rules.target not in self.targets:
                problems.append(
                    f"mappings.{source}.{kind}: writes to {rules.target}, "
                    f"but [{rules.target}] is not configured"
                )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _commands_need_mqtt(self) -> Config:
        if self.commands is not None and self.mqtt is None:
            raise ValueError(
                "[commands] is configured but [mqtt] is not: commands arrive over MQTT"
            )
        return self


def section_types() -> dict[str, type[Section]]:
    """The class of every section `Config` lists, by section name."""
    found: dict[str, type[Section]] = {}
    for name, field in Config.model_fields.items():
        for option in getattr(field.annotation, "__args__", (field.annotation,)):
            if isinstance(option, type) and issubclass(option, Section):
                found[name] = option
    return found


def target_types() -> dict[str, type[TargetSection]]:
    """The section class of every target `Config` lists: what mappings can name."""
    return {n: c for n, c in section_types().items() if issubclass(c, TargetSection)}
