"""Comparing identifying values the way people write them: a DOI with or without its
resolver, an ORCID as a URL, an ISSN without its hyphen, a Scopus EID or its number."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

# How a match rule compares the source's value with the target's.
Comparison = Literal["exact", "text", "doi", "orcid", "issn", "email", "scopus"]

_DOI_PREFIX = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:\s*)", re.IGNORECASE)
_ORCID = re.compile(r"(\d{4}-?\d{4}-?\d{4}-?\d{3}[\dX])$", re.IGNORECASE)
_ISSN = re.compile(r"^(\d{4})-?(\d{3}[\dX])$", re.IGNORECASE)
_SCOPUS_EID = re.compile(r"^2-s2\.0-(\d+)$")


def _text(value: str) -> str:
    return " ".join(unicodedata.normalize("NFC", value).casefold().split())


def _doi(value: str) -> str | None:
    bare = _DOI_PREFIX.sub("", value.strip()).strip().casefold()
    return bare if bare.startswith("10.") and "/" in bare else None


def _orcid(value: str) -> str | None:
    found = _ORCID.search(value.strip())
    return found.group(1).replace("-", "").upper() if found else None


def _issn(value: str) -> str | None:
    found = _ISSN.match(value.strip())
    return f"{found.group(1)}-{found.group(2).upper()}" if found else None


def _scopus(value: str) -> str | None:
    text = value.strip()
    eid = _SCOPUS_EID.match(text)
    number = eid.group(1) if eid else text
    return number if number.isdigit() else None


NORMALISERS: dict[Comparison, Callable[[str], str | None]] = {
    "exact": lambda value: value.strip() or None,
    "text": lambda value: _text(value) or None,
    "doi": _doi,
    "orcid": _orcid,
    "issn": _issn,
    "email": lambda value: _text(value) if "@" in value else None,
    "scopus": _scopus,
}


@dataclass(frozen=True)
class PersonIdScheme:
    """An author identifier scheme: how its values compare, and how a target holds one.

    `classified`: the last segments of the classification URIs of the ClassifiedIds that
    carry it (e.g. .../externalpersonsources/scopusauthor); None: any identifier whose value
    has the scheme's form, which only an ORCID iD's form is distinctive enough for.
    """

    comparison: Comparison
    classified: frozenset[str] | None = None


# Keyed by the names Elements gives the schemes (<api:identifier scheme="...">).
PERSON_ID_SCHEMES: dict[str, PersonIdScheme] = {
    "orcid": PersonIdScheme("orcid"),
    "scopus-author-id": PersonIdScheme("scopus", frozenset({"scopusauthor", "scopusauthorid"})),
}


def normalised(comparison: Comparison, value: Any) -> str | None:
    """The value as compared, or None when it is not one (a malformed DOI matches nothing)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return NORMALISERS[comparison](str(value))


def spellings(comparison: Comparison, value: str) -> list[str]:
    """The ways a normalised value is written, for a full-text search to find any of them
    (a search matches words: 0021-9991 is not the word 00219991)."""
    if comparison == "issn":
        return [value, value.replace("-", "")]
    if comparison == "orcid":
        hyphenated = "-".join(value[i : i + 4] for i in range(0, 16, 4))
        return [hyphenated, value]
    return [value]
