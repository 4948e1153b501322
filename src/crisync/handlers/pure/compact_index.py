"""Uuids by value for a scan of a whole Pure type, at 24 bytes an entry.

A scan holds a value of every object of a type (the DOIs of 100k research outputs). As
strings in a dict of lists that is about 250 bytes an entry, and the small objects, made
between the scan's pages, keep the allocator's arenas from going back to the system: a
long backfill's rescans grew the daemon by tens of MB. Here an entry is an 8-byte digest
of the value in one flat array, sorted once before the first lookup, and the uuid's 16
bytes at the same place in another.

Two values share a digest with a chance of about n·m / 2^64 over n entries and m lookups
(5·10^-10 for 100k of each): far below any other way a match can go wrong.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from uuid import UUID

from crisync.errors import PermanentError

UUID_BYTES = 16


def _digest(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


class CompactIndex:
    """Uuids by value: `add` while scanning, then `get`."""

    def __init__(self) -> None:
        self._digests = array("Q")
        self._uuids = bytearray()
        self._sorted = True

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, value: str, uuid: str) -> None:
        try:
            uuid_bytes = UUID(uuid).bytes
        except ValueError:
            raise PermanentError(f"Pure listed {uuid!r} as a uuid", api="pure") from None
        self._digests.append(_digest(value))
        self._uuids += uuid_bytes
        self._sorted = False

    def get(self, value: str) -> list[str]:
        """The uuids added for this value, in the order they were added."""
        if not self._sorted:
            self._sort()
        digest = _digest(value)
        found = []
        at = bisect_left(self._digests, digest)
        while at < len(self._digests) and self._digests[at] == digest:
            start = at * UUID_BYTES
            found.append(str(UUID(bytes=bytes(self._uuids[start : start + UUID_BYTES]))))
            at += 1
        return found

    def clear(self) -> None:
        self._digests = array("Q")
        self._uuids = bytearray()
        self._sorted = True

    def _sort(self) -> None:
        # A stable sort: one value's uuids stay in the order the scan met them.
        order = sorted(range(len(self._digests)), key=self._digests.__getitem__)
        self._digests = array("Q", (self._digests[i] for i in order))
        uuids = bytearray(len(self._uuids))
        for position, i in enumerate(order):
            uuids[position * UUID_BYTES : (position + 1) * UUID_BYTES] = self._uuids[
                i * UUID_BYTES : (i + 1) * UUID_BYTES
            ]
        self._uuids = uuids
        self._sorted = True
