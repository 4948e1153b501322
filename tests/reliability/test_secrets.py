"""Canary secrets for every API and for MQTT appear nowhere crisync writes, says or sends.

The real daemon runs a whole life with them: replication from Elements and Unicat into
Pure through server errors, dead letters, operator commands and changes; the command
line; every API behind a gateway that redirects to another host; every API and the
broker refusing wrong secrets; the broker gone; a crash; configurations full of
mistakes. Then every log line, every command's output, the metrics, every MQTT topic and
payload, the state database's bytes (with its -wal and -shm files), every error message
and every request that reached the other host are searched for each secret, raw and as
it would look encoded in a URL, in base64 or in an HTTP Basic header.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
from aiohttp import web

from crisync.config.load import EX_CONFIG, SECRETS
from crisync.config.model import CommandsConfig, Config, DaemonConfig, MetricsConfig, MqttConfig
from crisync.daemon import EX_LOOP_FAILED
from crisync.handlers.pure.check import NO_CONTENT
from crisync.handlers.pure.mapping import primary_id_of
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.config import WritebackConfig
from crisync.listener.elements.sim import ElementsSimulator
from crisync.listener.unicat.sim import UnicatSimulator
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import free_port, serve
from crisync.state.migrations import MIGRATIONS
from tests.reliability.conftest import Scale
from tests.support.config_file import config_toml
from tests.support.daemon import daemon_log, start_daemon
from tests.support.mqtt import Received, broker_down_url, send_command, subscribed
from tests.support.redirect import Arrived, redirected_elsewhere
from tests.support.tls import password_file, password_listener
from tests.support.unicat import UNICAT_PROJECT, unicat_mappings, unicat_settings
from tests.support.wait import until

USER = "crisync"  # the Elements and the MQTT user
Secret = tuple[str, str]  # (section, key) as crisync.config.load.SECRETS names it
# Characters that URL-encoding changes, and enough of them that base64 does not hide them.
CANARIES: dict[Secret, str] = {
    ("elements", "password"): "Elements+Canary/3f9a=%41",
    ("pure", "api_key"): "Pure+Canary/71c2=%42",
    ("unicat", "api_key"): "Unicat+Canary/5d1e=%43",
    ("mqtt", "password"): "Mqtt+Canary/5e1b=%44",
}
# What crisync is given when an operator gets every secret wrong: canaries as well.
WRONG_CANARIES = {
    secret: value.replace("Canary", "WrongCanary") for secret, value in CANARIES.items()
}
# The secrets crisync reads from files in $CREDENTIALS_DIRECTORY, the others from variables.
FROM_FILES = {("elements", "password"), ("mqtt", "password")}


def encoded_forms(secret: str) -> dict[str, bytes]:
    """The secret as it could travel: raw, in a URL or form, in base64, in HTTP Basic auth."""
    return {
        "raw": secret.encode(),
        "url-encoded": quote(secret, safe="").encode(),
        "form-encoded": quote_plus(secret).encode(),
        "base64": base64.b64encode(secret.encode()),
        "basic-auth": base64.b64encode(f"{USER}:{secret}".encode()),
    }


@dataclass
class LeakSearch:
    """Looks for every canary in every form; counts what it looked at."""

    canaries: Mapping[str, str]  # what the canary is → its value
    scanned: Counter[str] = field(default_factory=Counter)
    leaks: list[str] = field(default_factory=list)

    def look(self, place: str, data: bytes | str, *, unit: str, count: int = 1) -> None:
        self.scanned[unit] += count
        self.leaks += self._found(place, data)

    def look_at_lines(self, place: str, text: str, *, unit: str) -> None:
        lines = text.splitlines()
        self.scanned[unit] += len(lines)
        if self._found(place, text):  # the whole text at once is fast; then name the lines
            for number, line in enumerate(lines, 1):
                self.leaks += self._found(f"{place}:{number}", line)

    def _found(self, place: str, data: bytes | str) -> list[str]:
        raw = data.encode() if isinstance(data, str) else data
        found = []
        for name, secret in self.canaries.items():
            for form, needle in encoded_forms(secret).items():
                if needle in raw:
                    at = raw.index(needle)
                    context = raw[max(0, at - 60) : at].decode(errors="replace")
                    found.append(f"{place}: the {name} ({form}) after …{context!r}")
        return found


def secrets_environment(values: Mapping[Secret, str], credentials: Path) -> dict[str, str]:
    """The secrets as systemd hands them over: some as files in a credentials directory."""
    credentials.mkdir()
    environment = {"CREDENTIALS_DIRECTORY": str(credentials)}
    for secret, value in values.items():
        variable, credential = SECRETS[secret]
        if secret in FROM_FILES:
            (credentials / credential).write_text(value + "\n")
        else:
            environment[variable] = value
    return environment


def log_entries(path: Path, start: int = 0) -> list[dict[str, Any]]:
    """The JSON log lines written since byte `start` (console lines are skipped)."""
    entries = []
    with path.open("rb") as log:
        log.seek(start)
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def event_names(entries: Iterable[dict[str, Any]]) -> set[str]:
    """Each entry's event, and an event several APIs share also as `event/api`."""
    names = {str(entry.get("event")) for entry in entries}
    return names | {f"{entry.get('event')}/{entry['api']}" for entry in entries if "api" in entry}


def events_since(path: Path, start: int) -> set[str]:
    return event_names(log_entries(path, start))


def error_messages(
    entries: Iterable[dict[str, Any]], received: Received, failure_output: Iterable[str]
) -> list[str]:
    """What crisync said went wrong: log lines at warning and above, failed outcomes, feed
    errors, refused commands, what failed commands printed (problems, a traceback)."""
    messages = [
        json.dumps(entry)
        for entry in entries
        if entry.get("level") in ("warning", "error", "critical") or "exception" in entry
    ]
    for topic, payload, _ in received.messages:
        if "/status" in topic:
            continue
        document = json.loads(payload)
        if isinstance(document.get("error"), dict):
            messages.append(document["error"]["message"])
        if document.get("last_error"):
            messages.append(document["last_error"])
        if document.get("ok") is False:
            messages.append(document["message"])
    return [*messages, *failure_output]


@pytest.fixture
def elements_sim(scale: Scale) -> ElementsSimulator:
    return ElementsSimulator(
        objects=scale.objects // 4, seed=3, password=CANARIES["elements", "password"]
    )


@pytest.fixture
def pure_sim() -> PureSimulator:
    return PureSimulator(api_key=CANARIES["pure", "api_key"], seed=3)


@dataclass
class ResearchOutputWrites:
    """What Pure was asked to write to research outputs from the daemon's first start on:
    every update request by uuid, whatever the answer, and the creates it accepted."""

    updates: Counter[str] = field(default_factory=Counter)
    created: int = 0

    def counted(self, app: web.Application) -> web.Application:
        """The application, counting them."""

        async def count(request: web.Request, response: web.StreamResponse) -> None:
            if request.method != "PUT" or request.match_info.get("content_type") != (
                "research-outputs"
            ):
                return
            uuid = request.match_info.get("uuid")
            if uuid is not None:
                self.updates[uuid] += 1
            elif response.status == 201:
                self.created += 1

        app.on_response_prepare.append(count)
        return app


@pytest.fixture
def research_output_writes() -> ResearchOutputWrites:
    return ResearchOutputWrites()


@pytest.fixture
async def pure_url(
    pure_sim: PureSimulator, research_output_writes: ResearchOutputWrites
) -> AsyncIterator[str]:
    async with serve(research_output_writes.counted(pure_sim.app())) as origin:
        yield origin + "/ws/api"


def research_output_updates(
    writes: ResearchOutputWrites, pure: PureSimulator, touched: Counter[int]
) -> tuple[Counter[str], Counter[str], int]:
    """The updates of research outputs, the updates their Elements publications' own changes
    (`touched`: publication → touches) call for, by uuid; and the updates of the uuid no
    content has, which the rights check at a first start sends."""
    outputs = {
        identifier["value"]: uuid
        for uuid, output in pure.objects("research-outputs").items()
        for identifier in output.get("identifiers") or []
        if identifier["typeDiscriminator"] == "PrimaryId"
    }
    called_for = Counter(
        {
            outputs[primary_id_of("elements", "publication", str(publication))]: touches
            for publication, touches in touched.items()
        }
    )
    updates = Counter({uuid: n for uuid, n in writes.updates.items() if uuid != NO_CONTENT})
    return updates, called_for, writes.updates[NO_CONTENT]


@pytest.fixture
def unicat_sim(scale: Scale) -> UnicatSimulator:
    return UnicatSimulator(
        project=UNICAT_PROJECT,
        api_key=CANARIES["unicat", "api_key"],
        records=scale.objects // 20,
        seed=3,
        page_size=10,
    )


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, int]]:
    """An anonymous listener for the test, and one for crisync that wants the MQTT canary."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    port = free_port()
    passwords = password_file(workdir / "passwords", USER, CANARIES["mqtt", "password"])
    running = MosquittoBroker(workdir, more_listeners=password_listener(port, passwords))
    running.start()
    yield running, port
    running.stop()


@dataclass
class Life:
    """What the phases of the test share."""

    config_path: Path
    state: Path
    prefix: str
    broker: MosquittoBroker
    received: Received
    right: dict[str, str]  # the environment with the right secrets
    wrong: dict[str, str]  # ... and with every secret wrong
    failure_output: list[str] = field(default_factory=list)  # stderr of commands that failed
    http_answers: list[tuple[str, str]] = field(default_factory=list)  # (URL, body): metrics
    state_snapshots: list[tuple[str, bytes]] = field(default_factory=list)
    arrived_elsewhere: list[Arrived] = field(default_factory=list)  # at a host not configured
    touched: Counter[int] = field(default_factory=Counter)  # publication → changes in Elements
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return daemon_log(self.config_path)

    def touch(self, elements: ElementsSimulator, publications: Iterable[int]) -> None:
        """Change the publications in Elements, each once, and count it."""
        for publication in publications:
            elements.touch("publication", publication)
            self.touched[publication] += 1

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    async def start(self, environment: Mapping[str, str]) -> asyncio.subprocess.Process:
        daemon = await start_daemon(self.config_path, environment=environment)
        self.processes.append(daemon)
        return daemon

    async def kill_leftovers(self) -> None:
        """A phase that failed left its daemon running: it must not outlive the simulators."""
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def command(
        self, name: str, *arguments: str, environment: Mapping[str, str], config: str = ""
    ) -> tuple[int, str]:
        """Run a command to its end with a configuration file, and so a log, of its own
        (`config`, else the daemon's): its exit status and what it printed on stderr."""
        path = self.config_path.with_name(f"{name}.toml")
        path.write_text(config or self.config_path.read_text())
        process = await start_daemon(path, *arguments, environment=environment)
        self.processes.append(process)
        async with asyncio.timeout(60):
            status = await process.wait()
        stderr = daemon_log(path).read_text(errors="replace")
        if status != 0:
            self.failure_output.extend(stderr.splitlines())
        return status, stderr

    def snapshot_state(self, when: str) -> None:
        """The state database's files as they are now, -wal and -shm included."""
        for path in state_files(self.state):
            self.state_snapshots.append((f"{path.name} {when}", path.read_bytes()))


def state_files(state: Path) -> list[Path]:
    files = (state, state.with_name(f"{state.name}-wal"), state.with_name(f"{state.name}-shm"))
    return [path for path in files if path.exists()]


async def stop(daemon: asyncio.subprocess.Process) -> int:
    daemon.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        return await daemon.wait()


def outcome_keys(outcomes: Iterable[dict[str, Any]], *actions: str) -> set[tuple[str, str, str]]:
    return {(o["source"], o["kind"], o["key"]) for o in outcomes if o["action"] in actions}


def replicated_keys(entries: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (entry["source"], entry["kind"], entry["key"])
        for entry in entries
        if entry.get("event") == "object.replicated"
    }


async def replication(
    life: Life,
    elements: ElementsSimulator,
    pure: PureSimulator,
    unicat: UnicatSimulator,
    session: aiohttp.ClientSession,
    metrics_port: int,
) -> None:
    """Everything replicated through server errors, dead letters, commands and changes."""
    expected = {("elements", "user", str(i)) for i in elements.object_ids("user")}
    expected |= {("elements", "publication", str(i)) for i in elements.object_ids("publication")}
    expected |= {
        ("unicat", definition, gid)
        for definition in ("person", "publication")
        for gid in unicat.record_gids(definition)
    }
    pure.fail_next(500, 3)
    pure.fail_next(503, 2)
    pure.fail_next(400, 2, content_type="research-outputs", operation="create")  # two dead letters
    # On the feeds' requests: the start checks' own are not retried, the feeds meet a fault next.
    elements.fail_next(500, "server fault", path="/relationships")
    elements.fail_next(504, "database timeout", path="/relationships")
    unicat.fail_next(500, endpoint="sync/get")
    unicat.fail_next(502, endpoint="records/get")
    unicat.fail_next(401, endpoint="sync/get")  # the JWT refused: a new /auth with the key
    unicat.reject_next_job("the schema is locked by another user")
    unicat.save_as_new([unicat.definition_gid("person")])
    unicat.save_as_new([unicat.definition_gid("publication")])
    start = life.log_size()
    daemon = await life.start(life.right)

    def dead_lettered(received: Received) -> bool:
        failed = outcome_keys(received.outcomes(), "failed")
        return len({key for key in failed if key[1] != "jobs"}) >= 2

    await life.received.wait_for(dead_lettered, within=60)
    await send_command(life.broker.port, f"{life.prefix}/cmd/retry", {"all": True})
    await until(lambda: "metrics.listening" in events_since(life.log, start))
    for path in ("/metrics", "/healthz"):
        url = f"http://127.0.0.1:{metrics_port}{path}"
        async with session.get(url) as response:
            life.http_answers.append((url, await response.text()))

    def replicated(received: Received) -> bool:
        return expected <= outcome_keys(received.outcomes(), "created")

    await life.received.wait_for(replicated, within=60 + len(expected) / 10)

    # Once the faults are spent: a resync, one that Elements refuses, and changes to what
    # is in Pure now, an update on each side and a deletion.
    resyncs = [
        {
            "source": "elements",
            "kind": "publication",
            "key": str(elements.object_ids("publication")[0]),
        },
        {"source": "elements", "kind": "grant", "key": "no-such-grant"},
    ]
    for body in resyncs:
        await send_command(life.broker.port, f"{life.prefix}/cmd/resync", body)
    elements.advance(1)
    touched = elements.object_ids("publication")[1:4]
    life.touch(elements, touched)
    deleted = elements.object_ids("publication")[-1]
    elements.delete("publication", deleted)
    person = unicat.record_gids("person")[0]
    unicat.update_record(person, {"lastname": "Verbeek"})
    updated = {("elements", "publication", str(p)) for p in touched}
    updated.add(("unicat", "person", person))

    def changed(received: Received) -> bool:
        outcomes = received.outcomes()
        return (
            updated <= outcome_keys(outcomes, "updated")
            and ("elements", "publication", str(deleted)) in outcome_keys(outcomes, "deleted")
            and len(received.documents(f"{life.prefix}/cmd/result")) == 1 + len(resyncs)
        )

    await life.received.wait_for(changed, within=30)
    life.snapshot_state("while running")
    assert await stop(daemon) == 0, life.log.read_text()[-3000:]
    results = life.received.documents(f"{life.prefix}/cmd/result")
    assert [(r["command"], r["ok"]) for r in results] == [
        ("retry", True),
        ("resync", True),
        ("resync", False),
    ], results


async def command_line(life: Life, publication: int) -> None:
    """The commands an operator runs between two runs of the daemon, all at once."""
    commands = {
        "status": ("status",),
        "status-json": ("status", "--json"),
        "check-config": ("check-config",),
        "retry-all": ("retry", "--all"),
        "reconcile-check": ("reconcile", "--check"),
        # Queued for the next run: work for a Pure behind a gateway that redirects.
        "resync": ("resync", "elements", "publication", str(publication)),
    }
    results = await asyncio.gather(
        *(
            life.command(name, *arguments, environment=life.right)
            for name, arguments in commands.items()
        )
    )
    assert [status for status, _ in results] == [0] * len(commands), results


async def redirected(life: Life) -> None:
    """Every API behind a gateway that redirects to another host, which records what
    reaches it (secrets must not)."""
    async with redirected_elsewhere() as (gateway, arrived):
        moved = {
            "CRISYNC_ELEMENTS__URL": f"{gateway}/secure-api/v5.5",
            "CRISYNC_UNICAT__URL": gateway,
            "CRISYNC_PURE__URL": f"{gateway}/ws/api",
        }
        start = life.log_size()
        daemon = await life.start({**life.right, **moved})
        failures = {"feed.failed/elements", "feed.failed/unicat", "object.failed"}
        await until(lambda: failures <= events_since(life.log, start), within=30, step=0.2)
        assert await stop(daemon) == 0
    life.arrived_elsewhere += arrived


async def refused(life: Life) -> None:
    """Every secret wrong: each API and the broker refuse, crisync says so and waits."""
    # Work for Pure: the dead letter that the redirect left.
    status, _ = await life.command("retry-redirected", "retry", "--all", environment=life.right)
    assert status == 0
    start = life.log_size()
    daemon = await life.start(life.wrong)
    refusals = {
        "credentials.rejected/elements",
        "credentials.rejected/unicat",
        "credentials.rejected/pure",
        "mqtt.connect_refused",
    }
    await until(lambda: refusals <= events_since(life.log, start), within=30, step=0.2)
    assert await stop(daemon) == 0


async def broker_down(life: Life, elements: ElementsSimulator) -> set[tuple[str, str, str]]:
    """The right secrets, the broker gone, Elements refusing access for a moment.

    Returns the changes replicated meanwhile, whose outcomes wait in the outbox.
    """
    elements.fail_next(403, "unauthorised access", count=3)
    elements.advance(1)
    touched = elements.object_ids("publication")[4:7]
    life.touch(elements, touched)
    changes = {("elements", "publication", str(p)) for p in touched}
    start = life.log_size()

    def replicated_while_down() -> bool:
        entries = log_entries(life.log, start)
        events = event_names(entries)
        return {"credentials.rejected/elements", "mqtt.disconnected"} <= events and changes <= (
            replicated_keys(entries)
        )

    with broker_down_url() as nowhere:
        daemon = await life.start({**life.right, "CRISYNC_MQTT__URL": nowhere})
        await until(replicated_while_down, within=30, step=0.2)
        assert await stop(daemon) == 0
    assert "mqtt.unreachable_at_shutdown" in events_since(life.log, start)
    return changes


async def outbox_drained_then_killed(life: Life, changes: set[tuple[str, str, str]]) -> None:
    """The broker back: what waited is published; then kill -9, which leaves the -wal file."""
    mark = len(life.received.messages)
    daemon = await life.start(life.right)

    def published(received: Received) -> bool:
        since = [json.loads(p) for t, p, _ in received.messages[mark:] if "/outcomes/" in t]
        return changes <= outcome_keys(since, "updated")

    await life.received.wait_for(published, within=30)
    daemon.kill()
    await daemon.wait()
    status = f"{life.prefix}/status"
    await life.received.wait_for(lambda r: r.on_topic(status)[-1][1] == b"offline")


async def crashed(life: Life, tmp_path: Path) -> None:
    """A state database that claims the latest schema but has none of its tables: a loop
    fails, told in one line of a console log."""
    hollow = tmp_path / "hollow.db"
    with contextlib.closing(sqlite3.connect(hollow)) as conn, conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (len(MIGRATIONS),))
    breaking = {"CRISYNC_STATE__PATH": str(hollow), "CRISYNC_DAEMON__LOG_FORMAT": "console"}
    status, stderr = await life.command("crash", "run", environment={**life.right, **breaking})
    assert status == EX_LOOP_FAILED, stderr
    assert "daemon.loop_failed" in stderr
    assert "no such table" in stderr


async def misconfigured(life: Life, tmp_path: Path, pure_url: str) -> None:
    """Secrets where they do not belong, and a file TOML cannot read: exit 78, and why."""
    in_the_file = f"""
[elements]
url = "not a URL"
username = "{USER}"
password = {json.dumps(CANARIES["elements", "password"])}
[unicat]
project = "{UNICAT_PROJECT}"
api_key = {json.dumps(CANARIES["unicat", "api_key"])}
mappings = []
[pure]
url = "{pure_url}"
managing_organization = "none"
api_key = {json.dumps(CANARIES["pure", "api_key"])}
[mqtt]
password = {json.dumps(CANARIES["mqtt", "password"])}
"""
    unreadable = tmp_path / "unreadable-credentials"
    (unreadable / "pure-api-key").mkdir(parents=True)
    misplaced = {
        # Secrets given as settings, and pasted into settings that refuse them as values.
        "CRISYNC_PURE__API_KEY": CANARIES["pure", "api_key"],
        "CRISYNC_MQTT__PASSWORD": CANARIES["mqtt", "password"],
        "CRISYNC_ELEMENTS__POLL_INTERVAL": CANARIES["elements", "password"],
        "CRISYNC_UNICAT__PROJECT": CANARIES["unicat", "api_key"],
        "CRISYNC_MQTT__URL": CANARIES["mqtt", "password"],
        "CREDENTIALS_DIRECTORY": str(unreadable),
    }
    not_toml = f"[pure]\napi_key = {CANARIES['pure', 'api_key']}\n"
    (misplaced_status, problems), (not_toml_status, toml_error) = await asyncio.gather(
        life.command(
            "secrets-in-the-file", "check-config", environment=misplaced, config=in_the_file
        ),
        life.command("not-toml", "check-config", environment={}, config=not_toml),
    )
    assert misplaced_status == EX_CONFIG
    assert problems.count("\n  - ") >= 10, problems
    assert not_toml_status == EX_CONFIG
    assert "not valid TOML" in toml_error


def search_everything(life: Life, directory: Path) -> LeakSearch:
    """Every log, output, metrics answer, MQTT message, state file and error message."""
    search = LeakSearch(
        {f"{section}.{key}": value for (section, key), value in CANARIES.items()}
        | {f"wrong {section}.{key}": value for (section, key), value in WRONG_CANARIES.items()}
    )
    entries = []
    for log in sorted(directory.glob("*.log")):
        search.look_at_lines(log.name, log.read_text(errors="replace"), unit="log lines")
        entries += log_entries(log)
    for output in sorted(directory.glob("*.out")):
        search.look_at_lines(output.name, output.read_text(), unit="command output lines")
    for url, body in life.http_answers:
        search.look_at_lines(url, body, unit="metrics lines")
    for topic, payload, _ in life.received.messages:
        search.look(f"MQTT {topic}", topic.encode() + b" " + payload, unit="MQTT messages")
    for request in life.arrived_elsewhere:
        headers = "".join(f"{name}: {value}\n" for name, value in request.headers.items())
        search.look(
            f"{request.method} {request.path} at another host",
            headers.encode() + request.body,
            unit="requests to another host",
        )
    for path in state_files(life.state):
        life.state_snapshots.append((f"{path.name} at the end", path.read_bytes()))
    for name, data in life.state_snapshots:
        search.look(name, data, unit="state database bytes", count=len(data))
    errors = error_messages(entries, life.received, life.failure_output)
    for number, message in enumerate(errors, 1):
        search.look(f"error message {number}", message, unit="error messages")
    return search


async def test_no_secret_appears_in_logs_messages_state_or_errors(
    tmp_path: Path,
    config: Config,
    elements_sim: ElementsSimulator,
    pure_sim: PureSimulator,
    unicat_sim: UnicatSimulator,
    unicat_url: str,
    password_broker: tuple[MosquittoBroker, int],
    topic_prefix: str,
    session: aiohttp.ClientSession,
    research_output_writes: ResearchOutputWrites,
    scale: Scale,
    report: Callable[[str], None],
) -> None:
    broker, crisync_port = password_broker
    metrics_port = free_port()
    assert config.elements is not None
    assert config.pure is not None
    settings = config.model_copy(
        update={
            "daemon": DaemonConfig(shutdown_timeout=10, log_level="debug"),
            # With write-back: the Pure uuid goes back to Elements, with its credentials.
            "elements": config.elements.model_copy(
                update={
                    "park_duration": 1.0,
                    "writeback": {"publications": WritebackConfig(source="manual", field="notes")},
                }
            ),
            "unicat": unicat_settings(unicat_url),
            "mappings": unicat_mappings(pure_sim.organization_uuids[0]),
            "pure": config.pure.model_copy(update={"concurrency": 8}),
            "mqtt": MqttConfig(
                url=f"mqtt://127.0.0.1:{crisync_port}",
                username=USER,
                topic_prefix=topic_prefix,
                client_id=f"crisync-{topic_prefix}",
            ),
            "metrics": MetricsConfig(port=metrics_port),
            "commands": CommandsConfig(),
        }
    )
    config_path = tmp_path / "crisync.toml"
    config_path.write_text(config_toml(settings))

    async with subscribed(broker.port, "#") as received:
        life = Life(
            config_path,
            settings.state.path,
            topic_prefix,
            broker,
            received,
            right=secrets_environment(CANARIES, tmp_path / "credentials"),
            wrong=secrets_environment(WRONG_CANARIES, tmp_path / "wrong-credentials"),
        )
        try:
            await replication(life, elements_sim, pure_sim, unicat_sim, session, metrics_port)
            await command_line(life, elements_sim.object_ids("publication")[0])
            await redirected(life)
            await refused(life)
            changes = await broker_down(life, elements_sim)
            await outbox_drained_then_killed(life, changes)
            await asyncio.gather(
                crashed(life, tmp_path), misconfigured(life, tmp_path, config.pure.url)
            )
        finally:
            await life.kill_leftovers()

    search = search_everything(life, tmp_path)
    # With write-back on, what a write-back changed in Elements comes back through the feed:
    # crisync must recognise it, so that Pure's only updates are the sources' own changes.
    updates, called_for, rights_checks = research_output_updates(
        research_output_writes, pure_sim, life.touched
    )
    beyond = sum((updates - called_for).values())
    created = research_output_writes.created
    report(
        f"elements_objects={len(elements_sim.object_ids('user'))}+"
        f"{len(elements_sim.object_ids('publication'))} "
        f"unicat_records={len(unicat_sim.record_gids())} "
        f"canaries={len(search.canaries)}x{len(encoded_forms(''))} forms; scanned: "
        + ", ".join(f"{unit}={count}" for unit, count in sorted(search.scanned.items()))
        + f"; requests_to_another_host={len(life.arrived_elsewhere)} leaks={len(search.leaks)}"
        + f"; research outputs created={created}, written back={len(elements_sim.patches)}, "
        f"updated={updates.total()} (publications changed in Elements: {len(life.touched)}), "
        f"rights-check updates={rights_checks}; Pure updates per created publication beyond "
        f"the source's own changes={beyond}/{created}={beyond / max(created, 1):.3f}"
    )
    # Each failure path ran, so the search covered what it says.
    logged = event_names(log_entries(life.log))
    assert {
        "object.replicated",
        "object.failed",
        "pure.retry",
        "feed.request_retry/elements",
        "unicat.reauthenticating",
        "unicat.job_rejected",
        "command.done",
        "credentials.rejected/elements",
        "credentials.rejected/unicat",
        "credentials.rejected/pure",
        "mqtt.connect_refused",
        "mqtt.disconnected",
    } <= logged
    assert any("-wal" in name for name, _ in life.state_snapshots)
    assert all(search.scanned[unit] > 0 for unit in ("MQTT messages", "error messages"))
    assert not search.leaks, "\n".join(search.leaks)
    # Every update is one a publication's change in Elements called for, and each such change
    # made one: the figure is 0.
    assert created > 0
    assert updates == called_for, f"{updates=} {called_for=}"
