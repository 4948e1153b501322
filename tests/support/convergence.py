"""Whether a replication into the Pure simulator is complete: every object, latest content."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from crisync.handlers.pure.mapping import primary_id_of
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from tests.support.mqtt import Received

# Elements category → the Pure type it is replicated to.
REPLICATED = {"user": "persons", "publication": "research-outputs"}


def primary_ids(pure: PureSimulator, pure_type: str) -> Counter[str]:
    return Counter(
        identifier["value"]
        for obj in pure.objects(pure_type).values()
        for identifier in obj.get("identifiers") or []
        if identifier.get("typeDiscriminator") == "PrimaryId"
    )


def not_written_back(elements: ElementsSimulator, pure: PureSimulator) -> int:
    """Publications whose notes do not hold their research output's uuid (conferences have
    no notes field in the simulator: nothing is written back to them)."""
    uuids = {
        identifier["value"]: uuid
        for uuid, obj in pure.objects("research-outputs").items()
        for identifier in obj.get("identifiers") or []
        if identifier.get("typeDiscriminator") == "PrimaryId"
    }
    return sum(
        elements.notes_of("publication", p)
        != uuids.get(primary_id_of("elements", "publication", str(p)))
        for p in elements.object_ids("publication")
        if elements.type_of("publication", p) != "conference"
    )


def converged(
    elements: ElementsSimulator,
    pure: PureSimulator,
    received: Received,
    last_touch: dict[int, float],
) -> bool:
    """Pure holds every object with its latest title, and its last change's outcome arrived."""
    objects = len(elements.object_ids("user")) + len(elements.object_ids("publication"))
    if len(received.messages) < objects:
        return False  # cheap; the rest reads every object of the simulator (a deep copy)
    outcome_times: dict[str, float] = {}
    for (topic, payload, _), when in zip(received.messages, received.arrival, strict=True):
        if "/outcomes/" in topic:
            outcome = json.loads(payload)
            if outcome["action"] != "failed":
                outcome_times[f"{outcome['kind']}:{outcome['key']}"] = when
    titles = {obj["title"]["value"] for obj in pure.objects("research-outputs").values()}
    return all(f"user:{i}" in outcome_times for i in elements.object_ids("user")) and all(
        f"publication:{i}" in outcome_times
        and outcome_times[f"publication:{i}"] >= last_touch.get(i, 0)
        and elements.title_of(i) in titles
        for i in elements.object_ids("publication")
    )


@dataclass(frozen=True)
class Tally:
    """What a finished replication left in Pure, per Pure type."""

    missing: dict[str, int]  # Elements objects without their PrimaryId in Pure
    duplicates: dict[str, int]  # Pure objects beyond the first carrying one PrimaryId
    unlocked: int  # replicated objects not locked

    @property
    def lost(self) -> int:
        return sum(self.missing.values())

    @property
    def duplicated(self) -> int:
        return sum(self.duplicates.values())


def tally(
    elements: ElementsSimulator, pure: PureSimulator, also_unique: tuple[str, ...] = ()
) -> Tally:
    """Count what is missing, duplicated and unlocked; `also_unique` names further Pure types
    (e.g. external persons crisync creates) whose PrimaryIds must not repeat either."""
    found = {pure_type: primary_ids(pure, pure_type) for pure_type in REPLICATED.values()}
    found.update({pure_type: primary_ids(pure, pure_type) for pure_type in also_unique})
    missing = {
        pure_type: sum(
            primary_id_of("elements", category, str(i)) not in found[pure_type]
            for i in elements.object_ids(category)
        )
        for category, pure_type in REPLICATED.items()
    }
    duplicates = {
        pure_type: sum(n - 1 for n in ids.values() if n > 1) for pure_type, ids in found.items()
    }
    unlocked = sum(
        not pure.is_locked(pure_type, uuid)
        for pure_type in REPLICATED.values()
        for uuid in pure.objects(pure_type)
    )
    return Tally(missing, duplicates, unlocked)
