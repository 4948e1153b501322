"""README.md and docs/: short enough to read, links that lead somewhere, examples that work.

The log events and the metrics the pages list are checked against the code beside the code
that emits them: tests/test_logs.py and tests/test_metrics.py.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from crisync import cli
from crisync.config.load import EX_CONFIG, REQUIRED_SECRETS
from crisync.config.model import Config, target_types
from crisync.daemon import EX_LOOP_FAILED
from tests.support.docs import PAGES, README, ROOT, code_blocks, first_column, prose
from tests.support.example import EXAMPLE, config_tables

README_LIMIT = 15 * 1024  # bytes: a newcomer's five minutes
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# `[section] key` in prose, e.g. `[pure] max_attempts` or `[unicat] definitions = [...]`
OPTION = re.compile(r"`\[([\w.-]+)\] (\w+)")
ARGPARSE_USAGE_ERROR = 2  # argparse's own exit status for a wrong command line


def test_the_readme_is_read_in_five_minutes() -> None:
    assert README.stat().st_size <= README_LIMIT


def test_the_readme_gives_the_test_command_ci_runs() -> None:
    ci_command = re.search(r"^(\.venv/bin/pytest)$", (ROOT / ".ci" / "run").read_text(), re.M)
    assert ci_command, ".ci/run no longer runs the tests as the README says"
    readme_lines = {line for block in code_blocks(README, "sh") for line in block.splitlines()}
    assert ci_command.group(1) in readme_lines


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", prose(page), flags=re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):
            continue  # https://, mailto: and the like: not this repository's to keep
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert broken == []


def test_every_page_of_docs_is_linked_from_the_readme() -> None:
    linked = {(README.parent / target).resolve() for target in LINK.findall(prose(README))}
    assert {page for page in PAGES if page != README} <= linked


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


TOML_EXAMPLES = [
    pytest.param(page, block, id=f"{page.name}-{n}")
    for page in PAGES
    for n, block in enumerate(code_blocks(page, "toml"))
]


@pytest.mark.parametrize(("page", "block"), TOML_EXAMPLES)
def test_every_toml_example_is_valid_configuration(page: Path, block: str) -> None:
    """Each example, set into the example file as shipped, passes the configuration's checks."""
    document = _merged(tomllib.loads(EXAMPLE.read_text()), tomllib.loads(block))
    for section, key in REQUIRED_SECRETS:
        if section in document:
            document[section][key] = "placeholder"  # as load_config adds them
    Config.model_validate(document, context={"targets": target_types()})


def test_the_toml_examples_are_found() -> None:
    assert {param.values[0].name for param in TOML_EXAMPLES} >= {"configuration.md", "mappings.md"}


def test_every_option_named_in_the_prose_exists() -> None:
    tables = config_tables(Config)
    unknown = []
    for page in PAGES:
        for section, key in OPTION.findall(prose(page)):
            known = tables.get(section)
            if section.startswith("mappings.") or section.count(".") > 1:
                continue  # [mappings.<source>.<kind>] and [elements.writeback.<category>]: data
            if known is None or key not in known.model_fields:
                unknown.append(f"{page.name}: [{section}] {key}")
    assert unknown == []


def test_the_exit_code_table_has_every_code_the_command_line_returns() -> None:
    returned = {value for name, value in vars(cli).items() if name.startswith("EX_")}
    documented = {int(code) for code in first_column("code")}
    # A failed loop ends the daemon with its own exit (a SystemExit), not the command line's.
    assert documented == returned | {EX_CONFIG, ARGPARSE_USAGE_ERROR, EX_LOOP_FAILED}
