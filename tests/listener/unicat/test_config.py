"""The [unicat] section: its key only from the environment or a credential; its records'
kinds each mapped; the old [[unicat.mappings]] rules refused with their new form."""

from __future__ import annotations

from pathlib import Path

import pytest

from crisync.config.load import ConfigError, load_config

BASE = """
[state]
path = "{state}"

[unicat]
url = "https://unicat.app"
project = "3f6c1a9e-8b2d-4e57-9c1a-6d0b2e4f8a13"
definitions = ["person"]
{extra}

[mappings.unicat.person]
pure_type = "persons"

[mappings.unicat.person.properties]
"name.firstName" = {{ from = "fields.firstname" }}
"name.lastName" = {{ from = "fields.lastname" }}

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
    assert config.unicat.kinds() == {"person"}
    person = config.mappings.for_kind("unicat", "person")
    assert person is not None
    assert (person.target, person.type) == ("pure", "persons")
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


def test_unicat_needs_a_target_and_a_mapping_for_each_kind_it_reads(tmp_path: Path) -> None:
    env = {"CRISYNC_UNICAT_API_KEY": "u"}
    no_pure = write(tmp_path)
    no_pure.write_text(no_pure.read_text().split("[pure]")[0])
    with pytest.raises(ConfigError, match=r"\[unicat\] configured but no target"):
        load_config(str(no_pure), env=env)
    unmapped = write(tmp_path)
    unmapped.write_text(unmapped.read_text().replace('["person"]', '["person", "project"]'))
    with pytest.raises(ConfigError) as raised:
        load_config(str(unmapped), env={**env, **PURE_KEY})
    assert raised.value.problems == [
        "unicat: reads project objects, but no mapping says what they become: "
        "add [mappings.unicat.project] or stop reading them"
    ]
    every_record = write(tmp_path, without='definitions = ["person"]')
    with pytest.raises(ConfigError, match=r"add \[mappings.unicat.record\]"):
        load_config(str(every_record), env={**env, **PURE_KEY})


def test_a_mapping_for_a_definition_that_is_not_read_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text().replace("unicat.person", "unicat.persn"))
    with pytest.raises(ConfigError) as raised:
        load_config(str(path), env={"CRISYNC_UNICAT_API_KEY": "u", **PURE_KEY})
    problems = "\n".join(raised.value.problems)
    assert "unicat: reads person objects, but no mapping" in problems
    assert "mappings.unicat.persn: unicat reads no persn objects (person)" in problems


def test_the_old_rules_are_refused_with_their_new_form(tmp_path: Path) -> None:
    old = """
[[unicat.mappings]]
definition = "person"
pure_type = "persons"
fields = { firstname = "name.firstName" }

[[unicat.mappings]]
definition = "publication"
pure_type = "research-outputs"
fields = { title = "title.value" }
[unicat.mappings.static]
category = { uri = "/dk/atira/pure/researchoutput/category/research" }
"""
    path = tmp_path / "crisync.toml"
    path.write_text(f"""
[unicat]
project = "3f6c1a9e-8b2d-4e57-9c1a-6d0b2e4f8a13"
{old}
[pure]
url = "https://pure.example.ac.uk/ws/api"
managing_organization = "3b3f4f2c-2b8e-4a63-9a64-1c1d4c8e2f10"
""")
    with pytest.raises(ConfigError) as raised:
        load_config(str(path), env={"CRISYNC_UNICAT_API_KEY": "u", **PURE_KEY})
    (problem,) = [p for p in raised.value.problems if "unicat.mappings" in p]
    assert "[[unicat.mappings]] is gone" in problem
    new_form = problem.split("replace those rules with:\n", 1)[1]
    assert new_form.splitlines()[:5] == [
        "[unicat]",
        'definitions = ["person", "publication"]',
        "",
        "[mappings.unicat.person]",
        'pure_type = "persons"',
    ]
    assert '"category.uri" = { value = "/dk/atira/pure/researchoutput/category/research" }' in (
        new_form
    )
    assert '"title.value" = { from = "fields.title" }' in new_form
