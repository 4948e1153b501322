"""Everything at once: kill -9, a Pure storm, broker restarts, changes on every side.

`crisync run` (a child process, as an operator starts it) is killed at random moments while
Pure fails a share of its requests (a third of the failed writes only after Pure stored
them), mosquitto (with persistence) is stopped and started, Elements objects are created,
changed and deleted (a deleted user takes its authorships with it), users are related to
live publications, their authorships removed, hidden and shown again, Unicat records are
created and changed, and Elements write-back is on. Then the faults stop and the daemon runs
until everything has settled; two `crisync once` runs over the unchanged data follow.

The schedule of kills, changes and broker restarts, and the storm's draws, come from one
seed, printed with the figures (CRISYNC_CHAOS_SEED picks another). The kills land at real
moments, so a rerun meets the same schedule, not necessarily the same interleaving.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from crisync.config.model import Config, DaemonConfig, MqttConfig
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.mapping import primary_id_of
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.config import ElementsConfig, WritebackConfig
from crisync.listener.elements.sim import ElementsSimulator
from crisync.listener.unicat.sim import UnicatSimulator
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import serve
from crisync.state import cursors, dead_letters, inbox, outbox, sync_cursors
from crisync.state.store import Store
from tests.reliability.conftest import Scale
from tests.support.config_file import config_toml
from tests.support.convergence import not_written_back
from tests.support.daemon import TEST_SECRETS, daemon_log, start_daemon
from tests.support.mappings import users_created
from tests.support.mqtt import Received, subscribed
from tests.support.secrets import ELEMENTS_PASSWORD, PURE_API_KEY
from tests.support.unicat import (
    UNICAT_API_KEY,
    UNICAT_PROJECT,
    unicat_mapping_tables,
    unicat_settings,
)
from tests.support.wait import until

PREFIX = "chaos"
OUTCOMES = f"{PREFIX}/outcomes/#"
SESSION = "chaos-subscriber"  # the persistent subscriber's client id
SEED = int(os.environ.get("CRISYNC_CHAOS_SEED", "23"))
STORM_RATE = 0.15
STORM_STATUSES = (409, 500, 503, 504)
AFTER_WRITE_SHARE = 1 / 3  # of the failed writes, those Pure stored before failing
SCRIPTED_CREATES = 2  # the first creates: 504 after Pure stored them, besides the storm
LIFE_S = (0.4, 2.0)  # how long the daemon runs before a kill
CHANGE_EVERY_S = (0.1, 0.4)  # between two changes in the sources
CHANGES_WHILE_DOWN = 3  # changes made between a kill and the next start
BROKER_TOGGLE_SHARE = 0.4  # of the lives in which the broker stops, or starts when down
UNICAT_FEED = f"unicat:{UNICAT_PROJECT}"
WRITES = ("create", "update", "delete", "lock", "unlock")
# An outcome's instant has milliseconds; Unicat's clock has more.
INSTANT_PRECISION = timedelta(milliseconds=1)
ENVIRONMENT = {**TEST_SECRETS, "CRISYNC_UNICAT_API_KEY": UNICAT_API_KEY}

Key = tuple[str, str, str]  # (source, kind, key), as an outcome names its object


@dataclass
class Sources:
    """The sources, changed at random: what changed last, and when, by object."""

    rng: random.Random
    elements: ElementsSimulator
    unicat: UnicatSimulator
    last_change: dict[Key, datetime] = field(default_factory=dict)
    deleted: set[Key] = field(default_factory=set)
    made: Counter[str] = field(default_factory=Counter)  # changes made, by what they were
    # (publication, user) of each relationship removed: the likeliest to be made again.
    unrelated: list[tuple[int, int]] = field(default_factory=list)

    def change_something(self) -> None:
        roll = self.rng.random()
        if roll < 0.8:
            self._change_elements(roll / 0.8)
        else:
            self._change_unicat((roll - 0.8) / 0.2)

    def live(self) -> Iterator[Key]:
        for kind in ("user", "publication"):
            for i in self.elements.object_ids(kind):
                yield ("elements", kind, str(i))
        for definition in ("person", "publication"):
            for gid in self.unicat.record_gids(definition):
                yield ("unicat", definition, gid)

    def _change_elements(self, roll: float) -> None:
        self.elements.advance(1)
        at = self.elements.now
        publications = self.elements.object_ids("publication")
        users = self.elements.object_ids("user")
        if roll < 0.2:
            made, kind, key = "publication added", "publication", self.elements.add("publication")
        elif roll < 0.3:
            made, kind, key = "user added", "user", self.elements.add("user")
        elif roll < 0.5:
            made, kind, key = "publication changed", "publication", self.rng.choice(publications)
            self.elements.touch(kind, key)
        elif roll < 0.65:
            # Elements makes the publication affected: its change, though its record is not.
            kind, key = "publication", self.rng.choice(publications)
            made = self._change_relationships(key, users, (roll - 0.5) / 0.15)
        elif roll < 0.75:
            made, kind, key = "user changed", "user", self.rng.choice(users)
            self.elements.touch(kind, key)
        elif roll < 0.9 or len(users) < 10:  # publications need authors left
            made, kind, key = "publication deleted", "publication", self.rng.choice(publications)
            self.elements.delete(kind, key)
        else:
            made, kind, key = "user deleted", "user", self.rng.choice(users)
            self.elements.delete(kind, key)
        self.made[made] += 1
        self.last_change[("elements", kind, str(key))] = at
        if made.endswith("deleted"):
            self.deleted.add(("elements", kind, str(key)))

    def _change_relationships(self, publication: int, users: list[int], roll: float) -> str:
        """Relate a user to the publication (one whose relationship was removed, if any),
        remove one of its relationships, or hide or show a claimed one; what was made."""
        links = self.elements.links_of(publication)
        claimed = [link for link in links if not link[3]]
        if roll < 1 / 3 or not links:
            unlinked = set(users) - {user for _, user, _, _ in links}
            again = [u for p, u in self.unrelated if p == publication and u in unlinked]
            self.elements.relate(publication, self.rng.choice(again or sorted(unlinked)))
            return "relationship added"
        if roll < 2 / 3 or not claimed:
            link, user, _, _ = self.rng.choice(links)
            self.elements.unrelate(link)
            self.unrelated.append((publication, user))
            return "relationship removed"
        link, _, visible, _ = self.rng.choice(claimed)
        self.elements.set_visible(link, not visible)
        return "relationship hidden" if visible else "relationship shown"

    def relationship_changes(self) -> int:
        return sum(n for made, n in self.made.items() if made.startswith("relationship"))

    def _change_unicat(self, roll: float) -> None:
        definition = self.rng.choice(("person", "publication"))
        number = sum(self.made.values())
        if roll < 0.3:
            fields = {"firstname": "Ada", "lastname": f"Added {number}"}
            if definition == "publication":
                fields = {"title": f"Added in the chaos {number}", "year": "2026"}
            gid = self.unicat.add_record(definition, fields)
            self.made[f"unicat {definition} added"] += 1
        else:
            gid = self.rng.choice(self.unicat.record_gids(definition))
            changed = {"person": "lastname", "publication": "title"}[definition]
            self.unicat.update_record(gid, {changed: f"Changed in the chaos {number}"})
            self.made[f"unicat {definition} changed"] += 1
        updated_on = self.unicat.record(gid)["updated_on"]
        self.last_change[("unicat", definition, gid)] = datetime.fromtimestamp(updated_on, UTC)


def counting_statuses(app: web.Application, statuses: Counter[int]) -> web.Application:
    """The application, counting the statuses it answers."""

    async def count(_request: web.Request, response: web.StreamResponse) -> None:
        statuses[response.status] += 1

    app.on_response_prepare.append(count)
    return app


@dataclass
class FeedPositions:
    """Where each feed had read up to, at each sample: an Elements feed's high-water mark,
    Unicat's two stream cursors; and every move backwards between two samples."""

    state: Path
    last: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    samples: int = 0
    backwards: list[str] = field(default_factory=list)

    async def sample(self) -> None:
        async with Store.open(self.state) as store, store.reading() as conn:
            now: dict[str, tuple[Any, ...]] = {
                cursor.feed: (cursor.high_water,)
                for cursor in await cursors.all_cursors(conn)
                if cursor.high_water is not None
            }
            unicat = await sync_cursors.get(conn, UNICAT_FEED)
        now[UNICAT_FEED] = (unicat.cc_cursor, unicat.cursor)
        self.backwards += [
            f"{feed}: {before} → {now.get(feed)}"
            for feed, before in self.last.items()
            if feed not in now or any(b > a for b, a in zip(before, now[feed], strict=True))
        ]
        self.last = now
        self.samples += 1


@dataclass
class RestartedBroker:
    """The broker, stopped and started, and the persistent subscriber: one recording per
    connection of its session, each begun once the broker is back."""

    broker: MosquittoBroker
    stack: AsyncExitStack
    recordings: list[Received] = field(default_factory=list)
    up: bool = True
    restarts: int = 0

    async def subscribe(self) -> None:
        self.recordings.append(
            await self.stack.enter_async_context(
                subscribed(self.broker.port, OUTCOMES, session=SESSION)
            )
        )

    async def toggle(self) -> None:
        if self.up:
            self.broker.stop()
        else:
            self.broker.start()
            self.restarts += 1
            await self.subscribe()
        self.up = not self.up

    def outcomes(self) -> list[dict[str, Any]]:
        return [outcome for received in self.recordings for outcome in received.outcomes()]


def pure_ids(pure: PureSimulator) -> dict[str, list[tuple[str, str]]]:
    """PrimaryId → the (Pure type, uuid) of every object carrying it."""
    found: dict[str, list[tuple[str, str]]] = {}
    for pure_type in ("persons", "research-outputs", "external-persons"):
        for uuid, obj in pure.objects(pure_type).items():
            for identifier in obj.get("identifiers") or []:
                if identifier.get("typeDiscriminator") == "PrimaryId":
                    found.setdefault(identifier["value"], []).append((pure_type, uuid))
    return found


def latest_content(sources: Sources) -> dict[Key, tuple[str, Any]]:
    """The value Pure must hold for each object whose content is checked: (its path, value)."""
    wanted: dict[Key, tuple[str, Any]] = {
        ("elements", "publication", str(i)): ("title.value", sources.elements.title_of(i))
        for i in sources.elements.object_ids("publication")
    }
    for definition, (field_name, path) in {
        "person": ("lastname", "name.lastName"),
        "publication": ("title", "title.value"),
    }.items():
        for gid in sources.unicat.record_gids(definition):
            record = sources.unicat.record(gid)
            value = next(iter(record["fields"].values()))[field_name]
            wanted[("unicat", definition, gid)] = (path, value)
    return wanted


def value_at(obj: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part) or {}
    return obj


def unsettled(sources: Sources, pure: PureSimulator, outcomes: list[dict[str, Any]]) -> list[str]:
    """What keeps the replication from being done and right; empty once it is."""
    problems = []
    in_pure = pure_ids(pure)
    objects = {t: pure.objects(t) for t in ("persons", "research-outputs")}
    problems += [
        f"{pid} is in Pure {len(found)} times" for pid, found in in_pure.items() if len(found) > 1
    ]
    live = list(sources.live())
    for source, kind, key in live:
        found = in_pure.get(primary_id_of(source, kind, key), [])
        if not found:
            problems.append(f"{source}:{kind}:{key} is not in Pure")
        elif not pure.is_locked(*found[0]):
            problems.append(f"{source}:{kind}:{key} is not locked")
    for source, kind, key in sources.deleted:
        found = in_pure.get(primary_id_of(source, kind, key), [])
        if found and pure.is_locked(*found[0]):
            problems.append(f"deleted {source}:{kind}:{key} is still locked")
    for (source, kind, key), (path, value) in latest_content(sources).items():
        found = in_pure.get(primary_id_of(source, kind, key), [])
        held = value_at(objects[found[0][0]][found[0][1]], path) if found else None
        if found and held != value:
            problems.append(f"{source}:{kind}:{key} has {held!r} in Pure, not {value!r}")
    problems += unclaimed_contributors(sources.elements, in_pure, objects["research-outputs"])
    problems += missing_final_outcomes(sources, live, outcomes)
    left = not_written_back(sources.elements, pure)
    if left:
        problems.append(f"{left} publications not written back")
    return problems


def unclaimed_contributors(
    elements: ElementsSimulator,
    in_pure: dict[str, list[tuple[str, str]]],
    outputs: dict[str, dict[str, Any]],
) -> list[str]:
    """Publications with an internal contributor whose user has no visible, claimed
    authorship of it (any more)."""
    primary_ids = {uuid: pid for pid, found in in_pure.items() for _, uuid in found}
    problems = []
    for publication in elements.object_ids("publication"):
        found = in_pure.get(primary_id_of("elements", "publication", str(publication)))
        if not found:
            continue
        claimed = {
            primary_id_of("elements", "user", str(user))
            for _, user, visible, suggested in elements.links_of(publication)
            if visible and not suggested
        }
        internal = {
            primary_ids.get(contributor["person"]["uuid"])
            for contributor in outputs[found[0][1]].get("contributors") or []
            if "person" in contributor
        }
        if not internal <= claimed:
            problems.append(
                f"elements:publication:{publication} has internal contributors without a "
                f"visible, claimed authorship: {sorted(map(str, internal - claimed))}"
            )
    return problems


def missing_final_outcomes(
    sources: Sources, live: list[Key], outcomes: list[dict[str, Any]]
) -> list[str]:
    """Objects whose last change has no outcome yet: `deleted` for a deleted one."""
    latest: dict[Key, tuple[datetime, str]] = {}
    for outcome in outcomes:
        if outcome["action"] == "failed":
            continue
        key = (outcome["source"], outcome["kind"], outcome["key"])
        changed_at = datetime.fromisoformat(outcome["source_changed_at"])
        if key not in latest or changed_at >= latest[key][0]:
            latest[key] = (changed_at, outcome["action"])
    missing = []
    for key in [*live, *sources.deleted]:
        arrived = latest.get(key)
        wanted = sources.last_change.get(key)
        if arrived is None:
            missing.append(f"{':'.join(key)}: no outcome")
        elif wanted is not None and arrived[0] < wanted - INSTANT_PRECISION:
            missing.append(f"{':'.join(key)}: no outcome of its change at {wanted.isoformat()}")
        elif (key in sources.deleted) != (arrived[1] == "deleted"):
            missing.append(f"{':'.join(key)}: the last outcome is {arrived[1]}")
    return missing


async def stopped(daemon: asyncio.subprocess.Process) -> int:
    daemon.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        return await daemon.wait()


def chaos_config(
    tmp_path: Path,
    elements_origin: str,
    unicat_origin: str,
    pure_origin: str,
    pure: PureSimulator,
    broker: MosquittoBroker,
) -> Config:
    organization = pure.organization_uuids[0]
    return Config(
        state={"path": tmp_path / "state.db"},
        daemon=DaemonConfig(shutdown_timeout=10),
        elements=ElementsConfig(
            url=f"{elements_origin}/secure-api/v5.5",
            username="crisync",
            password=ELEMENTS_PASSWORD,
            poll_interval=0.5,
            request_gap=0,
            writeback={"publications": WritebackConfig(source="manual", field="notes")},
        ),
        unicat=unicat_settings(unicat_origin),
        pure=PureConfig(
            url=f"{pure_origin}/ws/api",
            api_key=PURE_API_KEY,
            managing_organization=organization,
            concurrency=8,
        ),
        mqtt=MqttConfig(url=broker.url, topic_prefix=PREFIX, client_id=f"daemon-{PREFIX}"),
        mappings=users_created(unicat_mapping_tables(organization)),
    )


async def killed_lives(
    kills: int,
    config_path: Path,
    *,
    sources: Sources,
    pure: PureSimulator,
    broker: RestartedBroker,
    positions: FeedPositions,
) -> None:
    """Start the daemon and kill -9 it, `kills` times, the sources changing all along (also
    while it is down); the broker stops in some lives and starts again in a later one.
    After each kill the feeds' positions are sampled."""
    rng = sources.rng
    for life in range(kills):
        requests = pure.request_counts.total()
        daemon = await start_daemon(config_path, environment=ENVIRONMENT)
        try:
            if life % 2:
                # Every other life is timed from the daemon's first request to Pure, so that
                # on a slow machine too kills land in the middle of replications; the others
                # from the start, so that some land in the start-up.
                await until(lambda before=requests: pure.request_counts.total() > before, within=30)
            end = time.monotonic() + rng.uniform(*LIFE_S)
            # The second life stops the broker and the third starts it, whatever the draws.
            toggle = life in (1, 2) or rng.random() < BROKER_TOGGLE_SHARE
            toggle_at = rng.uniform(time.monotonic(), end) if toggle else None
            while (now := time.monotonic()) < end:
                if toggle_at is not None and now >= toggle_at:
                    toggle_at = None
                    await broker.toggle()
                sources.change_something()
                await asyncio.sleep(min(rng.uniform(*CHANGE_EVERY_S), end - now))
            # Running all along: an exit of its own would be a crash, not a kill.
            assert daemon.returncode is None, daemon_log(config_path).read_text()[-1500:]
        finally:
            if daemon.returncode is None:
                daemon.kill()
            await daemon.wait()
        await positions.sample()
        for _ in range(CHANGES_WHILE_DOWN):
            sources.change_something()
    if not broker.up:
        await broker.toggle()


async def run_until_settled(
    config_path: Path,
    state: Path,
    sources: Sources,
    pure: PureSimulator,
    broker: RestartedBroker,
    within: float,
    report: Callable[[str], None],
) -> float:
    """`crisync run` until nothing is unsettled and it has caught up, then stopped; how long
    that took."""
    started = time.monotonic()
    last_change = max(at for key, at in sources.last_change.items() if key[0] == "elements")
    # The simulator's clock stands still between changes, and its Date has whole seconds:
    # moved on, a sweep that starts now reports a time after the last change.
    sources.elements.advance(1)
    daemon = await start_daemon(config_path, environment=ENVIRONMENT)

    async def settled() -> bool:
        return not unsettled(sources, pure, broker.outcomes()) and await caught_up(
            state, last_change
        )

    try:
        # Looked at every second, not at every outcome: the check reads all of Pure.
        await until(settled, within, step=1)
    except TimeoutError:
        left = unsettled(sources, pure, broker.outcomes())
        report(
            f"seed={SEED}: not settled after {time.monotonic() - started:.0f}s: "
            f"{len(left)} problems, the first {left[:10]}; "
            f"log tail: {daemon_log(config_path).read_text()[-1500:]}"
        )
        raise
    finally:
        status = await stopped(daemon)
    assert status == 0, daemon_log(config_path).read_text()[-1500:]
    return time.monotonic() - started


async def caught_up(state: Path, last_change: datetime) -> bool:
    """Every Elements feed began a sweep after the last change, and nothing waits to be done.

    Each changed object's own outcome is not enough: a deleted author affects publications
    nobody changed, and their update must be in before the unchanged runs count writes.
    """
    async with Store.open(state) as store, store.reading() as conn:
        feeds = await cursors.all_cursors(conn)
        pending = await inbox.pending_count(conn)
        queued = await outbox.depth(conn)
    swept = all(c.high_water is not None and c.high_water > last_change for c in feeds)
    return swept and pending == 0 and queued == 0


async def unchanged_runs(
    config_path: Path, pure: PureSimulator, elements: ElementsSimulator
) -> tuple[Counter[str], int]:
    """Two `crisync once` runs over unchanged data: the Pure writes ("type operation") and
    the write-backs to Elements they made."""
    before, patches = Counter(pure.request_counts), len(elements.patches)
    for _ in range(2):
        once = await start_daemon(config_path, "once", environment=ENVIRONMENT)
        try:
            async with asyncio.timeout(60):
                status = await once.wait()
        finally:
            if once.returncode is None:
                once.kill()
                await once.wait()
        assert status == 0, daemon_log(config_path).read_text()[-1500:]
    made = pure.request_counts - before
    writes = Counter({f"{t} {op}": n for (t, op), n in made.items() if op in WRITES})
    return writes, len(elements.patches) - patches


async def test_everything_at_once_converges_exactly_once_and_then_writes_nothing(
    tmp_path: Path,
    persistent_broker: MosquittoBroker,
    scale: Scale,
    report: Callable[[str], None],
) -> None:
    broker = persistent_broker
    rng = random.Random(SEED)
    elements = ElementsSimulator(objects=scale.objects // 4, seed=SEED, password=ELEMENTS_PASSWORD)
    unicat = UnicatSimulator(
        project=UNICAT_PROJECT,
        api_key=UNICAT_API_KEY,
        records=scale.objects // 20,
        seed=SEED,
        page_size=10,
    )
    # A little latency spreads the kills over every stage of an object's replication.
    pure = PureSimulator(api_key=PURE_API_KEY, seed=SEED, latency_ms=3)
    pure.storm(STORM_RATE, statuses=STORM_STATUSES, after_write_share=AFTER_WRITE_SHARE, seed=SEED)
    # However few writes a short run fails after storing them, these creates are some.
    pure.fail_next(504, SCRIPTED_CREATES, operation="create", after_write=True)
    sources = Sources(rng, elements, unicat)
    statuses: dict[str, Counter[int]] = {api: Counter() for api in ("elements", "unicat", "pure")}
    config_path = tmp_path / "crisync.toml"
    async with AsyncExitStack() as running:
        origins = {
            api: await running.enter_async_context(
                serve(counting_statuses(sim.app(), statuses[api]))
            )
            for api, sim in (("elements", elements), ("unicat", unicat), ("pure", pure))
        }
        config = chaos_config(
            tmp_path, origins["elements"], origins["unicat"], origins["pure"], pure, broker
        )
        config_path.write_text(config_toml(config))
        restarted = RestartedBroker(broker, running)
        await restarted.subscribe()
        positions = FeedPositions(config.state.path)
        await killed_lives(
            scale.kills,
            config_path,
            sources=sources,
            pure=pure,
            broker=restarted,
            positions=positions,
        )

        # The faults stop; the daemon runs until everything has settled.
        pure.storm(0)
        requests = pure.request_counts.total()
        settled_in = await run_until_settled(
            config_path,
            config.state.path,
            sources,
            pure,
            restarted,
            60 + scale.objects / 10,
            report,
        )
        await positions.sample()
        writes_after, patches_after = await unchanged_runs(config_path, pure, elements)
        outcomes = restarted.outcomes()

    async with Store.open(config.state.path) as store, store.reading() as conn:
        letters = await dead_letters.all_dead_letters(conn)
    injected = sum(pure.storm_failures.values())
    after_write = sum(n for kind, n in pure.storm_failures.items() if kind.endswith("after write"))
    refused = {api: by_status[400] for api, by_status in statuses.items()}
    failed = [o for o in outcomes if o["action"] == "failed"]
    repeats = sum(n - 1 for n in Counter(o["id"] for o in outcomes).values())
    report(
        f"seed={SEED} objects={scale.objects // 4}+{scale.objects // 20} (Elements+Unicat) "
        f"kills={scale.kills} broker_restarts={restarted.restarts} "
        f"changes={sum(sources.made.values())} {dict(sorted(sources.made.items()))} "
        f"relationship_changes={sources.relationship_changes()} "
        f"pure_requests_in_the_storm={requests} injected={injected} ({injected / requests:.0%}; "
        f"{after_write} after the write; {SCRIPTED_CREATES} creates scripted so) "
        f"contract_violations(400)={refused} "
        f"outcomes={len(outcomes)} repeats={repeats} "
        f"failed_outcomes={[(o['kind'], o['key'], o['error']) for o in failed]} "
        f"dead_letters={len(letters)} cursor_samples={positions.samples} "
        f"backwards={len(positions.backwards)} settled_in={settled_in:.1f}s "
        f"once_twice: pure_writes={dict(writes_after)} writebacks={patches_after}"
    )
    assert unsettled(sources, pure, outcomes) == []
    assert positions.backwards == []
    assert refused == {"elements": 0, "unicat": 0, "pure": 0}
    assert failed == []
    assert letters == []
    assert writes_after == Counter()
    assert patches_after == 0
    # The faults happened: the storm blew on real work, at its rate (within four standard
    # deviations of a binomial draw), and the broker restarted.
    assert requests >= 50
    assert (
        abs(injected - STORM_RATE * requests)
        <= 4 * (requests * STORM_RATE * (1 - STORM_RATE)) ** 0.5
    )
    assert restarted.restarts >= 1
    assert sources.relationship_changes() >= 1
