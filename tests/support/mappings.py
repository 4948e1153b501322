"""The mapping most tests run with: a site where crisync creates Elements users as Pure persons.

The built-in mapping links users to the persons HR synchronises into Pure and creates none
(a link-only mapping, tested in tests/handlers/pure/test_first_contact.py); the pipeline's
tests need persons crisync writes, as a site without HR synchronisation would configure.
`with_mappings` puts a test's own Elements mappings over a configuration's.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

from crisync.config.model import Config
from crisync.mapping.rules import MappingsConfig

USERS_CREATED_TOML = """
[mappings.elements.user]
pure_type = "persons"
reference_key = ["name.lastName", "name.firstName|initials"]

[mappings.elements.user.properties]
"name.firstName" = { from = "fields.first-name" }
"name.lastName" = { from = "fields.last-name", required = true }
"""


def users_created(more_sources: Mapping[str, Any] | None = None) -> MappingsConfig:
    """That mapping, and `more_sources`' tables ([mappings.<source>...]) beside it."""
    tables = tomllib.loads(USERS_CREATED_TOML)["mappings"]
    return MappingsConfig.model_validate({**tables, **(more_sources or {})})


def with_mappings(config: Config, **kinds: dict[str, Any]) -> Config:
    """The configuration with these Elements mappings over its own."""
    elements = {
        kind: rules.model_dump(by_alias=True)
        for kind, rules in config.mappings.sources["elements"].items()
    }
    tables = {"elements": {**elements, **kinds}}
    return config.model_copy(update={"mappings": MappingsConfig.model_validate(tables)})
