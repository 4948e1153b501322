"""Read the configuration: TOML file, environment overrides, secrets; every problem at once."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import SecretStr, ValidationError

from crisync.config.model import Config, section_types, target_types

DEFAULT_PATH = Path("/etc/crisync/crisync.toml")
ENV_PREFIX = "CRISYNC_"
EX_CONFIG = 78


def _secrets() -> tuple[dict[tuple[str, str], tuple[str, str]], set[tuple[str, str]]]:
    """Every section's secrets, its SecretStr fields: (section, key) → (environment variable,
    systemd credential name); and those a section that is on cannot work without."""
    found, required = {}, set()
    for section, section_type in section_types().items():
        for key, field in section_type.model_fields.items():
            if SecretStr in (field.annotation, *get_args(field.annotation)):
                variable = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
                found[(section, key)] = (variable, f"{section}-{key.replace('_', '-')}")
                if field.is_required():
                    required.add((section, key))
    return found, required


# Secrets come only from the environment variables and credentials named here.
SECRETS, REQUIRED_SECRETS = _secrets()


class AbsentSecret(SecretStr):
    """Stands in for a secret a command said it needs none of and was not given: reading
    it is a bug, and raises, rather than sending an empty credential to an API."""

    def __init__(self, variable: str) -> None:
        super().__init__("")
        self.variable = variable

    def get_secret_value(self) -> str:
        raise RuntimeError(f"{self.variable} was not read: this command said it needs no secrets")


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists every reason, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    path: Path


def config_path(cli_value: str | None, env: Mapping[str, str]) -> Path:
    if cli_value:
        return Path(cli_value)
    return Path(env.get("CRISYNC_CONFIG") or DEFAULT_PATH)


def load_config(
    cli_path: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    needs_secrets: bool = True,
) -> LoadedConfig:
    """Load and validate; raises ConfigError naming every problem found.

    Without `needs_secrets` (a command that talks to no API) a missing secret is no
    problem: an `AbsentSecret` takes its place. A secret given is read all the same, and
    one written into the file is refused all the same."""
    env = os.environ if env is None else env
    path = config_path(cli_path, env)
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file (use --config or CRISYNC_CONFIG)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None

    problems: list[str] = []
    misplaced = _refuse_secrets_in_file(raw, problems)
    overrides = _apply_env_overrides(raw, env, problems)
    _add_secrets(raw, env, problems, misplaced, needs_secrets=needs_secrets)
    mappings = raw.get("mappings")
    if isinstance(mappings, dict) and isinstance(mappings.get("file"), str):
        # A relative mapping file lives beside the configuration file.
        mappings["file"] = str(path.parent / mappings["file"])
    try:
        # With the targets, each mapping is checked against what its target can write.
        config = Config.model_validate(raw, context={"targets": target_types()})
    except ValidationError as exc:
        for error in exc.errors():
            # A missing secret was already reported with where to set it.
            if not (error["type"] == "missing" and tuple(error["loc"]) in SECRETS):
                problems.extend(_describe(error, overrides))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(config=config, path=path)


def _refuse_secrets_in_file(raw: dict[str, Any], problems: list[str]) -> set[tuple[str, str]]:
    """Secrets written into the file: each is reported (without its value) and dropped."""
    misplaced = set()
    for (section, key), (variable, credential) in SECRETS.items():
        table = raw.get(section)
        if isinstance(table, dict) and key in table:
            del table[key]
            misplaced.add((section, key))
            problems.append(
                f"{section}.{key}: secrets are not read from the configuration file; "
                f"set {variable} or the systemd credential {credential}"
            )
    return misplaced


def _apply_env_overrides(
    raw: dict[str, Any], env: Mapping[str, str], problems: list[str]
) -> dict[tuple[str, str], str]:
    """CRISYNC_SECTION__KEY=value overrides [section] key; a value that parses as TOML is TOML.

    Returns the variable that set each (section, key), so that a problem with its value
    names the variable rather than the file."""
    overrides = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if (section, key) in SECRETS:
            variable, credential = SECRETS[(section, key)]
            problems.append(
                f"{name}: secrets are set through {variable} or the credential {credential}"
            )
            continue
        if section not in Config.model_fields:
            known = ", ".join(sorted(Config.model_fields))
            problems.append(f"{name}: no section [{section}] (known: {known})")
            continue
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            problems.append(f"{name}: [{section}] is not a table")
            continue
        table[key] = _parse_env_value(value)
        overrides[(section, key)] = name
    return overrides


def _parse_env_value(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _add_secrets(
    raw: dict[str, Any],
    env: Mapping[str, str],
    problems: list[str],
    misplaced: set[tuple[str, str]],
    *,
    needs_secrets: bool,
) -> None:
    credentials_dir = env.get("CREDENTIALS_DIRECTORY")
    for (section, key), (variable, credential) in SECRETS.items():
        if not isinstance(raw.get(section), dict):
            continue  # the section is off, or a problem already reported
        secret = env.get(variable)
        if secret is None and credentials_dir:
            try:
                secret = (Path(credentials_dir) / credential).read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                secret = None
            except OSError as exc:
                problems.append(
                    f"{section}.{key}: cannot read credential {credential}: {exc.strerror}"
                )
                continue
        if secret:
            raw[section][key] = secret
        elif (section, key) not in REQUIRED_SECRETS or (section, key) in misplaced:
            continue
        elif needs_secrets:
            problems.append(
                f"{section}.{key}: missing; set {variable} or the systemd credential {credential}"
            )
        else:
            raw[section][key] = AbsentSecret(variable)


def _describe(error: Any, overrides: Mapping[tuple[str, str], str]) -> list[str]:
    """One line per problem, led by the environment variable when one set the value; never
    the offending input, which may be a secret."""
    parts = [str(part) for part in error["loc"]]
    if parts[:2] == ["mappings", "sources"]:
        del parts[1]  # [mappings.<source>.<kind>] in the file
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    if not parts:
        # The whole configuration's checks name where each problem is, one per line.
        return message.splitlines()
    problem = f"{'.'.join(parts)}: {message}"
    variable = overrides.get((parts[0], parts[1])) if len(parts) > 1 else None
    return [problem if variable is None else f"{variable}: {problem}"]
