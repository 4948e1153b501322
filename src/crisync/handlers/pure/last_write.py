"""What crisync last wrote to Pure content, compactly, and the patch a change makes of it.

While Pure still holds the version of crisync's last write, it holds exactly what crisync
wrote then, so a change needs no read first: one PUT of the owned properties whose value
changed, with that version. To know which changed, the mapping row keeps a short digest
of each owned property as last written (8 bytes each; most objects have about ten). The
identifiers array replaces whole under merge patch, so other sources' entries as of that
write are kept beside it, and only when there are any. The row also keeps a digest of each
entry crisync wrote into such a list (a Scopus id, a DOI's electronic version): when the
source changes one, the read path knows which entry was crisync's and replaces it, and
leaves every other party's.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from crisync.handlers.pure.mapping import PureContent
from crisync.handlers.pure.shared_lists import MERGED_LISTS, identifier_key

DIGEST_BYTES = 8
# A Pure object's class and the type classification that belongs to it: fixed once
# created, and kept as Pure has it for content found there; a change of them is the read
# path's to judge.
CLASS_PROPERTIES = ("typeDiscriminator", "type")


def _digest(name: str, value: Any) -> bytes:
    canonical = json.dumps([name, value], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=DIGEST_BYTES).digest()


def _property_names(target: PureContent) -> list[str]:
    return sorted(target.owned | target.body.keys())


def property_digests(target: PureContent) -> bytes:
    """The digests of every owned property (absent ones as null), for the mapping row, and
    of each entry crisync writes into a list others add to."""
    properties = (_digest(name, target.body.get(name)) for name in _property_names(target))
    return b"".join((*properties, *sorted(own_entry_digests(target))))


def own_entry_digests(target: PureContent) -> set[bytes]:
    """The entries crisync writes into lists others add to, by their keys: what it may
    replace there when the source changes them. The object's PrimaryId is left out: its key
    is crisync's for as long as the object is, so it is never stale."""
    primary = identifier_key(
        {"typeDiscriminator": "PrimaryId", "idSource": target.id_source, "value": target.primary_id}
    )
    return {
        entry_digest(name, key)
        for name, key_of in MERGED_LISTS.items()
        for key in map(key_of, target.body.get(name) or [])
        if key is not None and key != primary
    }


def entry_digest(name: str, key: object) -> bytes:
    """An entry of a list others add to, by its key (named apart from whole properties)."""
    return _digest(f"{name}[]", key)


def written_digests(written: bytes | None) -> set[bytes]:
    """The digests a mapping row keeps of crisync's last write."""
    if not written:
        return set()
    return {written[at : at + DIGEST_BYTES] for at in range(0, len(written), DIGEST_BYTES)}


def changed_patch(
    target: PureContent, written: bytes, foreign_identifiers: Iterable[dict[str, Any]]
) -> dict[str, Any] | None:
    """The merge patch from what crisync last wrote to `target`; None when it needs a read."""
    last = written_digests(written)
    patch: dict[str, Any] = {}
    for name in _property_names(target):
        value = target.body.get(name)
        if _digest(name, value) in last:
            continue
        if name in CLASS_PROPERTIES:
            return None
        if name in MERGED_LISTS and name != "identifiers":
            return None  # others' entries as of the last write are not kept: read them
        if name == "identifiers":
            patch[name] = [*foreign_identifiers, *(value or [])]
        elif isinstance(value, dict):
            patch[name] = _clearing_vanished(name, value, target.paths)
        else:
            patch[name] = value
    return patch


def _clearing_vanished(name: str, value: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """The object with null where a property path of the mapping now has no value: under
    merge patch, objects merge, so what is left out would stay."""
    cleared = copy.deepcopy(value)
    for path in paths:
        segments = path.split(".")
        if segments[0] != name or len(segments) < 2:
            continue
        container = cleared
        for segment in segments[1:-1]:
            if segment.isdigit() or not isinstance(container, dict):
                break  # an array replaces whole: nothing inside it to clear
            container = container.setdefault(segment, {})
        else:
            leaf = segments[-1]
            if isinstance(container, dict) and not leaf.isdigit() and leaf not in container:
                container[leaf] = None
    return cleared
