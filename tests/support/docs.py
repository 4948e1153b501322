"""The README and the pages of docs/, read as the tests of what they claim need them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
PAGES = (README, *sorted((ROOT / "docs").glob("*.md")))

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def code_blocks(page: Path, language: str) -> list[str]:
    """The fenced blocks of one language, e.g. every ```toml example."""
    return [
        body for lang, body in _FENCE.findall(page.read_text(encoding="utf-8")) if lang == language
    ]


def prose(page: Path) -> str:
    """The page without its fenced blocks: what links and references live in."""
    return _FENCE.sub("", page.read_text(encoding="utf-8"))


def table_rows(header: str) -> list[list[str]]:
    """The cells (stripped, without their backquotes) of each row of every table, on any
    page, whose header row starts `| header |`."""
    rows: list[list[str]] = []
    for page in PAGES:
        in_table = False
        for line in prose(page).splitlines():
            if line.startswith(f"| {header} |"):
                in_table = True
            elif not line.startswith("|"):
                in_table = False
            elif in_table and not line.startswith("| ---"):
                cells = _UNESCAPED_PIPE.split(line)[1:-1]  # `a\|b` is one cell
                rows.append([cell.strip().strip("`") for cell in cells])
    return rows


def first_column(header: str) -> set[str]:
    """The first cells of every table whose header row starts `| header |`: e.g. every event
    the tables of log events list."""
    return {row[0] for row in table_rows(header)}
