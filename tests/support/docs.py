"""The README and the pages of docs/, read as the tests of what they claim need them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
PAGES = (README, *sorted((ROOT / "docs").glob("*.md")))

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def code_blocks(page: Path, language: str) -> list[str]:
    """The fenced blocks of one language, e.g. every ```toml example."""
    return [
        body for lang, body in _FENCE.findall(page.read_text(encoding="utf-8")) if lang == language
    ]


def prose(page: Path) -> str:
    """The page without its fenced blocks: what links and references live in."""
    return _FENCE.sub("", page.read_text(encoding="utf-8"))


def first_column(header: str) -> set[str]:
    """The first cells (without their backquotes) of every table, on any page, whose header
    row starts `| header |`: e.g. every event the tables of log events list."""
    found: set[str] = set()
    for page in PAGES:
        in_table = False
        for line in prose(page).splitlines():
            if line.startswith(f"| {header} |"):
                in_table = True
            elif not line.startswith("|"):
                in_table = False
            elif in_table and not line.startswith("| ---"):
                found.add(line.split("|")[1].strip().strip("`"))
    return found
