"""A Pure client for `crisync plan`: it reads Pure as the daemon would and writes nothing.

Every read goes to Pure; every write is recorded instead, answered as Pure would answer
it, and remembered so that a later read in the same plan sees it (content the plan would
create is read back as created). The handlers run unchanged on it, so what the plan says
is what `crisync once` does.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

from crisync.handlers.base import PlannedContent
from crisync.handlers.pure.client import PureClient, PureConflictError
from crisync.handlers.pure.merge_patch import apply_merge_patch

# Top-level properties Pure manages itself: no difference a person needs to see.
SERVER_MANAGED = frozenset(
    {"version", "modifiedDate", "modifiedBy", "createdDate", "createdBy", "pureId", "uuid"}
)


@dataclass(frozen=True)
class PlannedWrite:
    method: str  # create, update, delete, lock, unlock
    pure_type: str
    uuid: str
    before: dict[str, Any] | None  # the content as Pure holds it now
    after: dict[str, Any] | None  # the content the write would leave


def _visible(content: dict[str, Any] | None) -> dict[str, Any] | None:
    if content is None:
        return None
    return {name: value for name, value in content.items() if name not in SERVER_MANAGED}


class PlanningPureClient(PureClient):
    """Reads from Pure; writes recorded in `writes`, by (type, uuid), never sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: dict[tuple[str, str], list[PlannedWrite]] = {}
        self._planned: dict[tuple[str, str], dict[str, Any]] = {}
        self._read: dict[tuple[str, str], dict[str, Any]] = {}
        self._numbers = itertools.count(1)

    def _record(self, write: PlannedWrite) -> None:
        self.writes.setdefault((write.pure_type, write.uuid), []).append(write)
        if write.after is not None:
            self._planned[(write.pure_type, write.uuid)] = write.after

    def planned(self, pure_type: str, uuid: str) -> PlannedContent | None:
        """The content now and after every write the plan made to it; as read, the same
        after, when the plan writes nothing to it (content linked, or left unchanged)."""
        writes = self.writes.get((pure_type, uuid))
        if not writes:
            read = _visible(self._read.get((pure_type, uuid)))
            return None if read is None else PlannedContent(read, read)
        after = writes[0].before if writes[0].method != "create" else None
        for write in writes:
            if write.method == "delete":
                after = None
            elif write.after is not None:
                after = write.after
        return PlannedContent(
            _visible(writes[0].before), _visible(after), tuple(write.method for write in writes)
        )

    async def get(self, pure_type: str, uuid: str) -> dict[str, Any]:
        planned = self._planned.get((pure_type, uuid))
        if planned is not None:
            return copy.deepcopy(planned)
        current = await super().get(pure_type, uuid)
        self._read[(pure_type, uuid)] = current
        return current

    async def create(self, pure_type: str, body: dict[str, Any]) -> dict[str, Any]:
        uuid = f"new-{pure_type}-{next(self._numbers)}"
        created = {**copy.deepcopy(body), "uuid": uuid, "version": "planned"}
        self._record(PlannedWrite("create", pure_type, uuid, None, created))
        return created

    async def update(self, pure_type: str, uuid: str, body: dict[str, Any]) -> dict[str, Any]:
        """The body merged into the content as Pure would (a merge patch); a stale
        version is refused as Pure refuses it."""
        before = self._planned.get((pure_type, uuid)) or self._read.get((pure_type, uuid))
        if before is None:
            before = await self.get(pure_type, uuid)
        version = body.get("version")
        if version is not None and version != before.get("version"):
            message = f"PUT /{pure_type}/{uuid}: planned against version {version}"
            raise PureConflictError(message, api="pure", status=409)
        updated = copy.deepcopy(before)
        apply_merge_patch(updated, {k: v for k, v in body.items() if k not in SERVER_MANAGED})
        updated.update(uuid=uuid, version="planned")
        self._record(PlannedWrite("update", pure_type, uuid, before, updated))
        return copy.deepcopy(updated)

    async def delete(self, pure_type: str, uuid: str) -> bool:
        self._record(PlannedWrite("delete", pure_type, uuid, None, None))
        return True

    async def lock(self, pure_type: str, uuid: str) -> bool:
        self._record(PlannedWrite("lock", pure_type, uuid, None, None))
        return True

    async def unlock(self, pure_type: str, uuid: str) -> bool:
        self._record(PlannedWrite("unlock", pure_type, uuid, None, None))
        return True
