"""End to end: the Unicat simulator → the daemon → the Pure simulator → a real MQTT subscriber."""

from __future__ import annotations

import json
from typing import Any

from crisync.config.model import Config
from crisync.daemon import run_daemon
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.unicat.sim import UnicatSimulator
from crisync.sim.broker import MosquittoBroker
from crisync.telemetry import Telemetry
from tests.support.mqtt import Received, subscribed


def pure_writes(pure_sim: PureSimulator) -> int:
    return sum(
        n
        for (_, operation), n in pure_sim.request_counts.items()
        if operation in ("create", "update", "lock", "unlock", "delete")
    )


def primary_ids(pure_sim: PureSimulator, pure_type: str) -> dict[str, dict[str, Any]]:
    """Pure objects of a type by the value of their PrimaryId identifier."""
    return {
        identifier["value"]: obj
        for obj in pure_sim.objects(pure_type).values()
        for identifier in obj.get("identifiers") or []
        if identifier["typeDiscriminator"] == "PrimaryId"
    }


def on(received: Received, topic: str) -> list[dict[str, Any]]:
    return [json.loads(payload) for t, payload, _ in received.messages if t == topic]


async def test_unicat_records_reach_pure_and_outcomes_and_jobs_reach_mqtt(
    unicat_config: Config,
    unicat_sim: UnicatSimulator,
    pure_sim: PureSimulator,
    broker: MosquittoBroker,
    topic_prefix: str,
) -> None:
    persons = unicat_sim.record_gids("person")
    publications = unicat_sim.record_gids("publication")
    unicat_sim.reject_next_job("the schema is locked by another user")
    rejected = unicat_sim.save_as_new([unicat_sim.definition_gid("person")])
    saved = unicat_sim.save_as_new([unicat_sim.definition_gid("publication")])
    telemetry = Telemetry()

    async with subscribed(broker.port, f"{topic_prefix}/#") as received:
        await run_daemon(unicat_config, once=True, telemetry=telemetry)
        await received.wait_for(
            lambda r: (
                len(r.outcomes()) >= len(persons) + len(publications) + 1
                and any(p["status"] == "done" for p in on(r, f"{topic_prefix}/jobs/{saved}"))
            )
        )

    stored_persons = primary_ids(pure_sim, "persons")
    assert set(stored_persons) == {f"unicat:person:{gid}" for gid in persons}
    for gid in persons:
        fields = unicat_sim.record(gid)["fields"]["en"]
        assert stored_persons[f"unicat:person:{gid}"]["name"] == {
            "firstName": fields["firstname"],
            "lastName": fields["lastname"],
        }
    stored_outputs = primary_ids(pure_sim, "research-outputs")
    assert {value: obj["title"]["value"] for value, obj in stored_outputs.items()} == {
        f"unicat:publication:{gid}": unicat_sim.record(gid)["fields"]["en"]["title"]
        for gid in publications
    }
    assert all(
        pure_sim.is_locked(pure_type, uuid)
        for pure_type in ("persons", "research-outputs")
        for uuid in pure_sim.objects(pure_type)
    )

    records = [o for o in received.outcomes() if o["kind"] != "jobs"]
    assert {(o["source"], o["kind"], o["key"], o["action"]) for o in records} == {
        ("unicat", kind, gid, "created")
        for kind, gids in (("person", persons), ("publication", publications))
        for gid in gids
    }
    [failure] = [o for o in received.outcomes() if o["kind"] == "jobs"]
    assert (failure["key"], failure["action"]) == (rejected, "failed")
    assert "locked by another user" in failure["error"]["message"]
    assert on(received, f"{topic_prefix}/jobs/{rejected}")[-1]["status"] == "rejected"
    # A retained status replaced before it was published is skipped: the last one counts.
    statuses = [p["status"] for p in on(received, f"{topic_prefix}/jobs/{saved}")]
    assert statuses[-1] == "done"
    assert statuses in (
        ["done"],
        ["queued", "done"],
        ["queued", "processing", "done"],
        ["processing", "done"],
    )
    assert telemetry.requests[("unicat", "POST", "200")] > 0
    assert telemetry.outcomes == {"created": len(persons) + len(publications)}
    assert telemetry.stalled() == []

    # A change in Unicat updates Pure; nothing else is written.
    changed = persons[0]
    unicat_sim.update_record(changed, {"lastname": "Verbeek"})
    writes = pure_writes(pure_sim)
    updates = pure_sim.request_counts[("persons", "update")]  # the first run's rights check
    await run_daemon(unicat_config, once=True)
    assert primary_ids(pure_sim, "persons")[f"unicat:person:{changed}"]["name"]["lastName"] == (
        "Verbeek"
    )
    assert pure_sim.request_counts[("persons", "update")] == updates + 1
    assert pure_writes(pure_sim) == writes + 1

    # Unicat refuses the cursors (1006): the feed reads everything again, Pure sees no write.
    unicat_sim.fail_next(1006, endpoint="sync/get")
    writes = pure_writes(pure_sim)
    await run_daemon(unicat_config, once=True)
    assert pure_writes(pure_sim) == writes
    assert len(pure_sim.objects("persons")) == len(persons)
    assert len(pure_sim.objects("research-outputs")) == len(publications)
