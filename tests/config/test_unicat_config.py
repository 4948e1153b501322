"""The [unicat] section: its key only from the environment or a credential, rules checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from crisync.config import ConfigError, load_config

BASE = """
[state]
path = "{state}"

[unicat]
url = "https://unicat.app"
project = "3f6c1a9e-8b2d-4e57-9c1a-6d0b2e4f8a13"
{extra}

[[unicat.mappings]]
definition = "person"
pure_type = "persons"
id_source = "synchronisedUnifiedPerson"
fields = {{ firstname = "name.firstName", lastname = "name.lastName" }}

[pure]
url = "https://pure.example.ac.uk/ws/api"
managing_organization = "3b3f4f2c-2b8e-4a63-9a64-1c1d4c8e2f10"
"""
PURE_KEY = {"CRISYNC_PURE_API_KEY": "p-canary"}


def write(tmp_path: Path, extra: str = "", *, without: str | None = None) -> Path:
    text = BASE.format(state=tmp_path / "state.db", extra=extra)
    if without:
        text = text.replace(without, "")
    path = tmp_path / "crisync.toml"
    path.write_text(text)
    return path


def test_the_key_comes_from_the_environment(tmp_path: Path) -> None:
    env = {**PURE_KEY, "CRISYNC_UNICAT_API_KEY": "u-canary"}
    config = load_config(str(write(tmp_path)), env=env).config
    assert config.unicat is not None
    assert config.unicat.api_key.get_secret_value() == "u-canary"
    assert config.unicat.data_types == ["records"]
    assert config.unicat.mappings[0].fields == {
        "firstname": "name.firstName",
        "lastname": "name.lastName",
    }
    assert "u-canary" not in config.model_dump_json()


def test_the_key_comes_from_a_systemd_credential(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "unicat-api-key").write_text("u-from-credential\n")
    env = {**PURE_KEY, "CREDENTIALS_DIRECTORY": str(credentials)}
    config = load_config(str(write(tmp_path)), env=env).config
    assert config.unicat is not None
    assert config.unicat.api_key.get_secret_value() == "u-from-credential"


def test_a_missing_or_misplaced_key_and_bad_values_are_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'api_key = "in-the-file"\ndata_types = ["records", "pictures"]',
    )
    path.write_text(path.read_text().replace('"3f6c1a9e-8b2d-4e57-9c1a-6d0b2e4f8a13"', '"p1"'))
    with pytest.raises(ConfigError) as raised:
        load_config(str(path), env=PURE_KEY)
    problems = "\n".join(raised.value.problems)
    assert "unicat.api_key: secrets are not read from the configuration file" in problems
    assert "CRISYNC_UNICAT_API_KEY" in problems
    assert "unicat.project: must be the project gid, a UUID" in problems
    assert "unicat.data_types.1" in problems
    assert "in-the-file" not in problems

    with pytest.raises(ConfigError) as raised:
        load_config(str(write(tmp_path)), env=PURE_KEY)
    assert raised.value.problems == [
        "unicat.api_key: missing; set CRISYNC_UNICAT_API_KEY or the systemd credential "
        "unicat-api-key"
    ]


def test_unicat_needs_pure_and_at_least_one_mapping(tmp_path: Path) -> None:
    env = {"CRISYNC_UNICAT_API_KEY": "u"}
    no_pure = write(tmp_path)
    no_pure.write_text(no_pure.read_text().split("[pure]")[0])
    with pytest.raises(ConfigError, match=r"\[unicat\] is configured but \[pure\] is not"):
        load_config(str(no_pure), env=env)
    no_rules = write(tmp_path)
    no_rules.write_text(no_rules.read_text().replace("[[unicat.mappings]]", "[unicat_rules]"))
    with pytest.raises(ConfigError, match=r"unicat.mappings"):
        load_config(str(no_rules), env={**env, **PURE_KEY})
