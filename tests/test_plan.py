"""`crisync plan` and `crisync show`: what `once` would do, with nothing written anywhere."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from crisync.config.model import Config
from crisync.daemon import run_daemon
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import Author, ElementsSimulator
from crisync.plan import make_plan, planned_action
from crisync.sim.broker import MosquittoBroker
from crisync.telemetry import Telemetry
from tests.support.daemon import daemon_log, daemon_output, start_daemon
from tests.support.mappings import with_mappings
from tests.support.mqtt import subscribed

WRITES = frozenset({"create", "update", "lock", "unlock", "delete"})


def pure_writes(pure_sim: PureSimulator) -> int:
    return sum(n for (_, op), n in pure_sim.request_counts.items() if op in WRITES)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def once_actions(
    config: Config, broker: MosquittoBroker, prefix: str, telemetry: Telemetry | None = None
) -> dict[str, str]:
    """What `once` did, object by object, as its outcomes say, in the plan's words."""
    async with subscribed(broker.port, f"{prefix}/outcomes/#") as received:
        await run_daemon(config, once=True, telemetry=telemetry)
        await received.wait_for(lambda r: len(r.outcomes()) > 0)
    return {
        f"{o['source']}/{o['kind']}/{o['key']}": planned_action(
            o["action"], (o.get("error") or {}).get("class")
        )
        for o in received.outcomes()
    }


async def test_a_plan_writes_nothing_and_once_then_does_what_it_said(
    config: Config,
    pure_sim: PureSimulator,
    elements_sim: ElementsSimulator,
    broker: MosquittoBroker,
    topic_prefix: str,
) -> None:
    plan = await make_plan(config)
    assert pure_writes(pure_sim) == 0
    assert {op for _, op in pure_sim.request_counts} <= {"get", "search", "list"}
    assert not config.state.path.exists()  # not even created
    users, publications = elements_sim.object_ids("user"), elements_sim.object_ids("publication")
    assert plan.summary == {"create": len(users) + len(publications)}

    done = await once_actions(config, broker, topic_prefix)
    assert done == {planned.object_key: planned.action for planned in plan.objects}


async def test_a_plan_over_a_state_in_use_shows_the_update_and_leaves_every_byte(
    config: Config,
    pure_sim: PureSimulator,
    elements_sim: ElementsSimulator,
    broker: MosquittoBroker,
    topic_prefix: str,
) -> None:
    await run_daemon(config, once=True)
    publication = elements_sim.object_ids("publication")[0]
    elements_sim.advance(120)  # past the feed's lookback: only the change is read again
    elements_sim.touch("publication", publication, title="On larger crystals")
    before, writes = digest(config.state.path), pure_writes(pure_sim)

    plan = await make_plan(config)
    assert digest(config.state.path) == before
    assert pure_writes(pure_sim) == writes
    (planned,) = [p for p in plan.objects if p.object_key == f"elements/publication/{publication}"]
    assert planned.action == "update"
    assert planned.changes["title"]["crisync"] == {"value": "On larger crystals"}
    assert planned.changes["title"]["target"] != planned.changes["title"]["crisync"]
    # The one write is a merge patch: what it leaves out stays as Pure holds it.
    assert set(planned.changes) == {"title"}

    done = await once_actions(config, broker, topic_prefix)
    assert done == {p.object_key: p.action for p in plan.objects}


def scoped(config: Config, kind: str, scope: list[dict[str, Any]]) -> Config:
    """The configuration with this scope on the Elements mapping of `kind`."""
    rules = config.mappings.sources["elements"][kind].model_dump(by_alias=True)
    return with_mappings(config, **{kind: {**rules, "scope": scope}})


async def test_a_plan_skips_a_user_out_of_scope_saying_why(
    config: Config, elements_sim: ElementsSimulator
) -> None:
    former = elements_sim.add_user("Charles", "Babbage", current_staff=False)
    current = elements_sim.add_user("Ada", "Lovelace")
    staff_only = [{"from": "fields.is-current-staff|boolean", "equals": True}]

    plan = await make_plan(scoped(config, "user", staff_only))
    planned = {p.key: p for p in plan.objects if p.kind == "user"}
    assert planned[str(former)].action == "skip"
    assert (planned[str(former)].note or "").startswith("out of scope:")
    assert planned[str(current)].action == "create"


async def test_a_plan_unlocks_a_publication_that_left_scope_as_its_policy_says(
    config: Config, pure_sim: PureSimulator, elements_sim: ElementsSimulator
) -> None:
    author = elements_sim.add_user("Ada", "Lovelace")
    paper = elements_sim.add_publication("Notes on the engine", [Author("Lovelace", "A")])
    claim = elements_sim.relate(paper, author)
    authorship = {"type": "publication-user-authorship", "visible": True, "claimed": True}
    claimed = scoped(
        config,
        "publication",
        [{"from": "relationships", "where": authorship, "present": True}],
    )
    await run_daemon(claimed, once=True)
    elements_sim.advance(120)  # past the feed's lookback: only the change is read again
    elements_sim.unrelate(claim)  # its only claimant: the publication leaves scope

    plan = await make_plan(claimed)
    (planned,) = [p for p in plan.objects if p.object_key == f"elements/publication/{paper}"]
    # The mapping's policy is unlock (the default): the plan says so, not "delete".
    assert claimed.mappings.sources["elements"]["publication"].on_delete == "unlock"
    assert planned.action == "unlock"
    assert (planned.note or "").startswith("left the mapping's scope:")
    assert planned.target_uuid is not None
    assert f"unlock    elements/publication/{paper} research-outputs" in plan.render()
    assert pure_sim.is_locked("research-outputs", planned.target_uuid)  # the plan wrote nothing

    await run_daemon(claimed, once=True)
    assert not pure_sim.is_locked("research-outputs", planned.target_uuid)
    assert planned.target_uuid in pure_sim.objects("research-outputs")  # unlocked, not deleted


async def command_output(config_path: Path, *arguments: str) -> str:
    """A command run as an operator runs it, in a process of its own; what it printed."""
    process = await start_daemon(config_path, *arguments)
    assert await process.wait() == 0, daemon_log(config_path).read_text()
    return daemon_output(config_path).read_text()


async def test_plan_json_gives_a_summary_and_every_object(
    config_path: Path, pure_sim: PureSimulator
) -> None:
    document = json.loads(await command_output(config_path, "plan", "--json"))
    assert set(document) == {"summary", "objects", "problems"}
    assert document["problems"] == []
    assert sum(document["summary"].values()) == len(document["objects"])
    assert {o["action"] for o in document["objects"]} == {"create"}
    assert pure_writes(pure_sim) == 0


async def test_a_plan_of_one_kind_lists_only_its_objects(
    config_path: Path, pure_sim: PureSimulator, elements_sim: ElementsSimulator
) -> None:
    document = json.loads(await command_output(config_path, "plan", "--json", "elements", "user"))
    users = elements_sim.object_ids("user")
    assert {(o["source"], o["kind"]) for o in document["objects"]} == {("elements", "user")}
    assert sorted(int(o["key"]) for o in document["objects"]) == sorted(users)
    assert document["summary"] == {"create": len(users)}
    assert pure_writes(pure_sim) == 0


async def test_show_prints_the_object_as_read_and_as_it_would_be_written(
    config_path: Path, pure_sim: PureSimulator, elements_sim: ElementsSimulator
) -> None:
    publication = elements_sim.object_ids("publication")[0]
    title = elements_sim.title_of(publication)
    out = await command_output(config_path, "show", "elements", "publication", str(publication))
    assert out.startswith(f"elements/publication/{publication}: create research-outputs new-")
    assert "As crisync read it from elements:" in out
    assert "In the target now:\n  nothing yet" in out
    assert out.count(title) >= 2  # as read, and as it would be written
    assert pure_writes(pure_sim) == 0
