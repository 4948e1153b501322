"""The Source contract: a source defined here, plugged into the daemon, reaches Pure and MQTT
through the mapping engine, the dispatcher and the publisher, none of them edited for it."""

from __future__ import annotations

from datetime import UTC, datetime

from crisync.config.model import Config
from crisync.daemon import run_daemon
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.base import Loop, Source, SourceContext
from crisync.mapping.rules import MappingsConfig
from crisync.sim.broker import MosquittoBroker
from crisync.state import inbox
from crisync.state.inbox import ChangeEvent
from crisync.state.store import utc_now
from tests.support.mqtt import subscribed

CHANGED_AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class StaffRegister(Source):
    """A third source: a staff register whose one feed page holds one person."""

    name = "register"

    def __init__(self, context: SourceContext) -> None:
        self._context = context

    def kinds(self) -> frozenset[str]:
        return frozenset({"person"})

    def loops(self, *, once: bool) -> list[Loop]:
        async def read_the_page() -> None:
            change = ChangeEvent(
                "register:staff",
                self.name,
                "person",
                "s-0042",
                "upsert",
                CHANGED_AT,
                {"surname": "Hopper", "given": "Grace"},
            )
            # As every listener does: into the inbox, never straight to a handler.
            async with self._context.store.transaction() as conn:
                await inbox.add_events(conn, [change], utc_now())
            self._context.life.work_ready.set()

        return [Loop("listener-register", beat_deadline=60, run=read_the_page)]


async def test_a_third_source_plugs_into_the_daemon_and_reaches_pure_and_mqtt(
    config: Config, pure_sim: PureSimulator, broker: MosquittoBroker, topic_prefix: str
) -> None:
    mappings = MappingsConfig.model_validate(
        {
            "builtin": False,
            "register": {
                "person": {
                    "pure_type": "persons",
                    "properties": {
                        "name.firstName": {"from": "given"},
                        "name.lastName": {"from": "surname", "required": True},
                    },
                }
            },
        }
    )
    only_the_register = config.model_copy(update={"elements": None, "mappings": mappings})

    def sources(_config: Config, context: SourceContext) -> list[Source]:
        return [StaffRegister(context)]

    async with subscribed(broker.port, f"{topic_prefix}/#") as received:
        await run_daemon(only_the_register, once=True, sources=sources)
        await received.wait_for(lambda r: len(r.outcomes()) >= 1)

    [(uuid, person)] = pure_sim.objects("persons").items()
    assert person["name"] == {"firstName": "Grace", "lastName": "Hopper"}
    assert {
        "typeDiscriminator": "PrimaryId",
        "idSource": "synchronisedUnifiedPerson",
        "value": "register:person:s-0042",
    } in person["identifiers"]
    assert pure_sim.is_locked("persons", uuid)
    [outcome] = received.outcomes()
    assert (outcome["source"], outcome["kind"], outcome["key"], outcome["action"]) == (
        "register",
        "person",
        "s-0042",
        "created",
    )
    assert outcome["pure"] == {"type": "persons", "uuid": uuid}
    topic = f"{topic_prefix}/outcomes/register/person/s-0042"
    assert [topic for topic, _, _ in received.on_topic(topic)] == [topic]
