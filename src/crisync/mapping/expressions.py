"""Mapping expressions: a dotted path into a source payload, then optional filters.

``fields.title``, ``fields.authors.0.last-name``, ``fields.first-name|initials``. A list of
expressions takes the first that yields a value.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from crisync.mapping.compare import normalised


def _initials(value: Any) -> Any:
    if not isinstance(value, str):
        return None
    return "".join(part[0] for part in re.split(r"[\s\-.]+", value) if part).upper() or None


def _date(value: Any) -> Any:
    """An ISO date from an Elements date ({year, month, day}; a missing part is the first)."""
    if isinstance(value, dict):
        year = value.get("year")
        if not isinstance(year, int):
            return None
        month, day = value.get("month") or 1, value.get("day") or 1
        return f"{year:04d}-{month:02d}-{day:02d}"
    if isinstance(value, str) and re.match(r"\d{4}-\d{2}-\d{2}", value):
        return value[:10]
    return None


def _year(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("year") if isinstance(value.get("year"), int) else None
    if isinstance(value, str) and re.match(r"\d{4}", value):
        return int(value[:4])
    return None


def _string(value: Any) -> Any:
    return None if isinstance(value, dict | list) or value is None else str(value)


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    text = str(value).strip().casefold()
    return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else None


FILTERS: dict[str, Callable[[Any], Any]] = {
    # Identifiers as crisync writes and compares them: a bare DOI, a Scopus id's number, ...
    "doi": partial(normalised, "doi"),
    "scopus": partial(normalised, "scopus"),
    "issn": partial(normalised, "issn"),
    "orcid": partial(normalised, "orcid"),
    "initials": _initials,
    "date": _date,
    "year": _year,
    "string": _string,
    "number": _number,
    "boolean": _boolean,
    "first": _first,
}


@dataclass(frozen=True)
class Expression:
    path: tuple[str, ...]
    filters: tuple[Callable[[Any], Any], ...]

    def evaluate(self, document: Any) -> Any:
        """The value at the path, filtered; None when anything along the way is missing."""
        value = document
        for segment in self.path:
            if isinstance(value, dict):
                value = value.get(segment)
            elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
                value = value[int(segment)]
            else:
                return None
        for apply in self.filters:
            if is_empty(value):
                return None
            value = apply(value)
        return None if is_empty(value) else value


@functools.cache
def parse_expression(text: str) -> Expression:
    path_text, *filter_names = (part.strip() for part in text.split("|"))
    path = tuple(path_text.split("."))
    if not path_text or not all(path):
        raise ValueError(f"{text!r}: a path is dot-separated names, e.g. fields.title")
    unknown = [name for name in filter_names if name not in FILTERS]
    if unknown:
        raise ValueError(f"{text!r}: unknown filter {unknown[0]!r}; known: {sorted(FILTERS)}")
    return Expression(path, tuple(FILTERS[name] for name in filter_names))


def first_value(expressions: Iterable[str], document: Any) -> Any:
    """The value of the first expression that yields one."""
    for text in expressions:
        value = parse_expression(text).evaluate(document)
        if value is not None:
            return value
    return None


def is_empty(value: Any) -> bool:
    return value is None or value in ("", [], {})


def normalise_key(parts: Iterable[Any]) -> str:
    """One comparable text for identifying values: case, accents' forms, dots and spacing aside."""
    normalised = []
    for part in parts:
        text = unicodedata.normalize("NFC", str(part)).casefold().replace(".", " ")
        normalised.append(" ".join(text.split()))
    return "|".join(normalised)


def expression_list(value: Any) -> Any:
    """`from = "a"` and `from = ["a", "b"]` alike; every expression checked."""
    expressions = [value] if isinstance(value, str) else value
    if isinstance(expressions, list):
        for text in expressions:
            if isinstance(text, str):
                parse_expression(text)
    return expressions
