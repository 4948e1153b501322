"""deploy/crisync.toml.example, and its commented-out tables switched on as it tells operators."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

EXAMPLE = Path(__file__).parents[2] / "deploy" / "crisync.toml.example"
# The sections the example ships commented out (with Unicat's mapping): "every section on".
SHIPPED_OFF = ("unicat", "mappings.unicat.record", "metrics", "commands")


def switched_on(*tables: str) -> str:
    """The example's text with each table's block, from its `# [table]` line down to the next
    blank line, uncommented one level: the first "# " of each line removed."""
    text = EXAMPLE.read_text()
    for table in tables:
        start = text.index(f"\n# [{table}]\n") + 1  # ValueError: the example lost the table
        end = text.find("\n\n", start)
        if end == -1:  # the file's last block
            end = len(text)
        text = text[:start] + re.sub(r"(?m)^# ?", "", text[start:end]) + text[end:]
    return text


def config_tables(model: type[BaseModel], prefix: str = "") -> dict[str, type[BaseModel]]:
    """Every TOML table the configuration knows, by dotted name, nested ones included."""
    tables: dict[str, type[BaseModel]] = {}
    for name, field in model.model_fields.items():
        for candidate in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                dotted = f"{prefix}{name}"
                tables[dotted] = candidate
                tables.update(config_tables(candidate, dotted + "."))
    return tables
