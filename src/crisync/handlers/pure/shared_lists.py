"""Lists of Pure content that several parties add to: identifiers and electronic versions.

crisync writes its own entries into them and never removes another's: entries are told
apart by a key (an identifier by its kind, source or type, and value; an electronic
version by its kind and its DOI, link or file).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crisync.handlers.pure.mapping import PureContent
from crisync.mapping.compare import normalised


def identifier_key(identifier: Any) -> tuple[str, str, str] | None:
    """What makes an identifier the same one: its kind, its source or type, its value."""
    if not isinstance(identifier, dict):
        return None
    kind = str(identifier.get("typeDiscriminator"))
    if kind == "ClassifiedId":
        uri = (identifier.get("type") or {}).get("uri")
        return kind, str(uri), str(identifier.get("id"))
    return kind, str(identifier.get("idSource")), str(identifier.get("value"))


def version_key(version: Any) -> tuple[str, str] | None:
    """What makes an electronic version the same one: its kind and its DOI, link or file."""
    if not isinstance(version, dict):
        return None
    doi = normalised("doi", version.get("doi"))
    where = doi or version.get("link") or version.get("title") or version
    return str(version.get("typeDiscriminator")), str(where)


# Lists of entries several parties add to, merged entry by entry: crisync adds the entries it
# writes that are not there yet (by key: a DOI however written is the same one, and keeps
# what an editor set on it), and never clears the list.
MERGED_LISTS: dict[str, Callable[[Any], object]] = {
    "identifiers": identifier_key,
    "electronicVersions": version_key,
}


def foreign_identifiers(current: dict[str, Any], target: PureContent) -> list[dict[str, Any]]:
    """The identifiers of Pure content that are not among those crisync writes."""
    ours = {identifier_key(identifier) for identifier in target.body.get("identifiers") or []}
    return [
        identifier
        for identifier in current.get("identifiers") or []
        if identifier_key(identifier) not in ours
    ]
