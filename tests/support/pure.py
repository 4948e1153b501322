"""What the Pure simulator holds, as the fault suites count it."""

from __future__ import annotations

from collections import Counter

from crisync.sim.pure import PureSimulator


def primary_ids(pure: PureSimulator, pure_type: str) -> Counter[str]:
    """How many objects of the type carry each PrimaryId: more than one is a duplicate."""
    return Counter(
        identifier["value"]
        for obj in pure.objects(pure_type).values()
        for identifier in obj.get("identifiers") or []
        if identifier.get("typeDiscriminator") == "PrimaryId"
    )
