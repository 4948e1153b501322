"""The `crisync` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
import uvloop

from crisync.config.load import EX_CONFIG, ConfigError, LoadedConfig, load_config
from crisync.config.model import MqttConfig
from crisync.errors import CrisyncError
from crisync.handlers.base import FirstWriteRefusedError, ForeignStateError, SourceRefusedError
from crisync.logs import configure_logging
from crisync.state.instance import StateInUseError, sole_user
from crisync.state.store import SchemaTooNewError, StateDiskFullError, StateUnavailableError

if TYPE_CHECKING:
    from crisync.daemon import RunSummary

EX_OK = 0
EX_SOFTWARE = 1
EX_USAGE = 64
EX_DATAERR = 65  # `crisync once` made dead letters: changes it gave up on for good
EX_NOINPUT = 66  # the object asked for does not exist
EX_UNAVAILABLE = 69  # an API refused or failed
EX_TEMPFAIL = 75

# The commands that write more than a row or two, and must not run beside each other: the
# daemon, and reconcile, which rebuilds the mapping. status, retry and resync only read or
# queue, briefly, and are meant to work beside a running daemon.
SOLE_USER_COMMANDS = frozenset({"run", "once", "reconcile"})


DESCRIPTION = (
    "crisync replicates the changes made in Symplectic Elements and Unicat into Elsevier "
    "Pure, and publishes the outcome of each to MQTT. `crisync run` is the daemon; the other "
    "commands check its configuration, show and repair its state, or try it on simulators."
)


class _HelpFormatter(argparse.HelpFormatter):
    """Each command's summary on the line of its name.

    argparse measures the commands' names at the indent of the COMMAND line, one indent
    left of where it prints them: the longest (check-config) would get a line of its own.
    """

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            printed_at = self._current_indent + self._indent_increment
            longest = max(map(len, action.choices))
            self._action_max_length = max(self._action_max_length, printed_at + longest)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crisync",
        description=DESCRIPTION,
        epilog="`crisync COMMAND --help` describes a command and its options.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"crisync {version('crisync')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(
        name: str, help_text: str, description: str | None = None
    ) -> argparse.ArgumentParser:
        """`help_text` is its line in `crisync --help`; `description` says more in its own."""
        command = commands.add_parser(name, help=help_text, description=description or help_text)
        command.add_argument(
            "--config",
            metavar="FILE",
            help="configuration file (default: $CRISYNC_CONFIG or /etc/crisync/crisync.toml)",
        )
        return command

    daemon_commands = [
        with_config("run", "run the daemon until SIGTERM"),
        with_config(
            "once",
            "poll every feed once, replicate, publish, exit",
            "poll every feed once, replicate what was found, publish, exit",
        ),
    ]
    for daemon_command in daemon_commands:
        daemon_command.add_argument(
            "--allow-empty-state",
            action="store_true",
            help="replicate even when the state database maps nothing and Pure already holds "
            "content crisync wrote, creating it a second time (`crisync reconcile` keeps it)",
        )
    check = with_config(
        "check-config",
        "validate the configuration (--online: ask every system too)",
        "validate the configuration, report every problem, exit 78 on error",
    )
    check.add_argument(
        "--online",
        action="store_true",
        help="also ask every configured API and the broker (exit 69 if one cannot be used, "
        "78 if it lacks what the configuration names)",
    )
    status = with_config("status", "print cursors, backlog, outbox depth and dead letters")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--all", action="store_true", help="every dead letter, not one line per distinct error"
    )
    retry = with_config(
        "retry",
        "put dead letters back in the inbox",
        "put dead letters back in the inbox (a running daemon takes them)",
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead letter")
    which.add_argument(
        "key",
        nargs="?",
        metavar="SOURCE/KIND/KEY",
        help="one object's dead letter, e.g. elements/publication/1042",
    )

    reconcile = with_config(
        "reconcile",
        "rebuild the mapping from the PrimaryIds in Pure",
        "rebuild the mapping from the PrimaryIds in Pure and report the differences",
    )
    reconcile.add_argument(
        "--check", action="store_true", help="only report; exit 1 when there are differences"
    )
    _replication_commands(with_config)

    demo = commands.add_parser(
        "demo", help="replicate simulated Elements data into a simulated Pure"
    )
    demo.add_argument("--objects", type=int, default=40, help="objects in the simulated Elements")
    demo.add_argument(
        "--follow", action="store_true", help="keep running with simulated changes until Ctrl-C"
    )
    demo.add_argument(
        "--mqtt",
        metavar="URL",
        help="the broker to publish to (default: localhost:1883, else a private mosquitto)",
    )
    demo.add_argument(
        "--metrics",
        type=int,
        metavar="PORT",
        help="serve /metrics and /healthz on 127.0.0.1:PORT while it replicates (for a "
        "Prometheus to scrape; default: off)",
    )

    _sim_commands(commands)
    return parser


def _sim_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = commands.add_parser(
        "sim",
        help="run API simulators on 127.0.0.1, change their world",
        description="run the Elements, Pure and Unicat API simulators on 127.0.0.1 (each "
        "alone, or all with a configuration for them), and change their world from outside",
    )
    simulators = sim.add_subparsers(dest="simulator", required=True, metavar="API")
    for name in ("elements", "pure"):
        one = simulators.add_parser(name, help=f"the {name.capitalize()} API simulator")
        one.add_argument("--port", type=int, required=True)
        one.add_argument(
            "--objects",
            type=int,
            default=50,
            help="seeded objects (for Pure: organisations, and the world --populate reads)",
        )
        one.add_argument("--seed", type=int, default=1)
        one.add_argument("--latency-ms", type=int, default=0)
        if name == "elements":
            _elements_sim_options(one)
        else:
            one.add_argument(
                "--populate",
                action="store_true",
                help="start as a site's Pure: HR persons, research outputs, ... of the "
                "Elements world the same --objects and --seed make",
            )
    unicat = simulators.add_parser("unicat", help="the Unicat API simulator")
    unicat.add_argument("--port", type=int, required=True)
    unicat.add_argument("--project", required=True, metavar="GID", help="the project gid (a UUID)")
    unicat.add_argument("--api-key", required=True, metavar="KEY", help="the key /auth accepts")
    unicat.add_argument("--records", type=int, default=50, help="seeded records")
    unicat.add_argument("--seed", type=int, default=1)
    unicat.add_argument("--latency-ms", type=int, default=0)
    _sim_all_options(simulators)
    _world_change_commands(simulators)


def _sim_all_options(simulators: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from crisync.sim.server import DEFAULT_PORTS

    every = simulators.add_parser(
        "all",
        help="Elements, a populated Pure, Unicat and a broker, with a configuration for them",
        description="start the Elements, Pure (populated as a site's Pure is) and Unicat "
        "simulators, with clocks that follow real time, and an MQTT broker (localhost:1883, "
        "else a private mosquitto); write a configuration for them and its secrets' "
        "environment file into --dir; run until Ctrl-C",
    )
    every.add_argument(
        "--dir",
        default="crisync-sim",
        metavar="DIR",
        help="where crisync.toml, crisync.env and the state database go (default: ./crisync-sim)",
    )
    for name, port in DEFAULT_PORTS.items():
        every.add_argument(
            f"--{name}-port", type=int, default=port, metavar="PORT", help=f"default: {port}"
        )
    every.add_argument("--objects", type=int, default=50, help="Elements users + publications")
    every.add_argument("--records", type=int, default=30, help="Unicat records")
    every.add_argument("--seed", type=int, default=1)
    every.add_argument("--mqtt", metavar="URL", help="the broker to publish to")
    every.add_argument(
        "--pure-rate-limit",
        type=_at_least_one,
        metavar="N",
        help="the Pure simulator answers 429 past N requests per second (the configuration "
        "written paces to it)",
    )
    every.add_argument(
        "--pure-hourly-quota",
        type=_at_least_one,
        metavar="N",
        help="the Pure simulator answers 429 past N requests in any rolling hour (the "
        "configuration written paces to it)",
    )


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, not {text!r}")
    return value


def _world_change_commands(
    simulators: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    verbs = {
        "change": "change an object (Elements: --title; Unicat: --set FIELD=VALUE)",
        "add": "add an object (Elements: of a category; Unicat: of a definition)",
        "delete": "delete an object",
    }
    for verb, help_text in verbs.items():
        example = "publication" if verb == "add" else "publication 42"
        command = simulators.add_parser(
            verb,
            help=f"{help_text} in a running simulator",
            description=f"{help_text} in a running Elements or Unicat simulator, e.g. "
            f"`crisync sim {verb} elements {example}`",
        )
        command.add_argument(
            "target", choices=("elements", "unicat"), metavar="SIMULATOR", help="elements, unicat"
        )
        command.add_argument(
            "kind",
            metavar="KIND",
            help="Elements: publication, user, ...; Unicat: record, or to add, person or "
            "publication",
        )
        if verb != "add":
            command.add_argument("key", metavar="KEY", help="the object's id (Unicat: its gid)")
        if verb != "delete":
            command.add_argument("--title", help="Elements: the new title")
            command.add_argument(
                "--set",
                action="append",
                default=[],
                metavar="FIELD=VALUE",
                dest="fields",
                help="Unicat: a field's value (repeatable)",
            )
        command.add_argument(
            "--url", metavar="ORIGIN", help="the simulator (default: where `sim all` serves it)"
        )


def _elements_sim_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--items", type=int, default=0, help="objects of each other category (grants, ...)"
    )
    command.add_argument(
        "--date-skew", type=float, default=0.0, help="seconds the HTTP Date runs ahead"
    )
    command.add_argument("--schema-version", default="5.5", help="e.g. 4.9: no affected-since")
    command.add_argument(
        "--https-namespace", action="store_true", help="answer in the https:// api namespace"
    )
    command.add_argument(
        "--fault-rate", type=float, default=0.0, help="share of requests failing with 409/500/504"
    )
    command.add_argument(
        "--read-only", action="store_true", help="the API account may not modify data (403)"
    )


def _replication_commands(with_config: Callable[..., argparse.ArgumentParser]) -> None:
    """The commands that read the sources and Pure for one object or all: resync, plan, show."""
    resync = with_config(
        "resync",
        "fetch objects again and queue them for replication",
        "fetch one object (SOURCE KIND KEY) from its source again and queue it for "
        "replication; --all [SOURCE [KIND]]: every mapped object, e.g. after a mapping "
        "changed (unchanged ones cost Pure nothing)",
    )
    resync.add_argument(
        "--all", action="store_true", help="every mapped object (of SOURCE, of KIND)"
    )
    resync.add_argument("source", nargs="?", metavar="SOURCE", help="e.g. elements")
    resync.add_argument("kind", nargs="?", metavar="KIND", help="e.g. publication, user")
    resync.add_argument("key", nargs="?", metavar="KEY", help="the object's id, e.g. 1042")

    plan = with_config(
        "plan",
        "what `once` would do, object by object; writes nothing",
        "read the sources from the stored cursors and Pure, and show what `crisync once` "
        "would do to each object: create, adopt, update (with the changes), unchanged, "
        "link, skip, ambiguous, failing. Nothing is written: not to Pure, not to the "
        "sources, not to the state database.",
    )
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument("source", nargs="?", metavar="SOURCE", help="only this source's objects")
    plan.add_argument("kind", nargs="?", metavar="KIND", help="only this kind")
    plan.add_argument("key", nargs="?", metavar="KEY", help="only this object (read alone)")
    show = with_config(
        "show",
        "one object: as read, as Pure holds it, as it would be",
        "fetch one object from its source and show it as crisync read it, what crisync "
        "would write to Pure, the Pure content it matches, and the difference; writes nothing",
    )
    show.add_argument("source", metavar="SOURCE", help="e.g. elements")
    show.add_argument("kind", metavar="KIND", help="e.g. publication")
    show.add_argument("key", metavar="KEY", help="e.g. 1042")


T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop: the daemon spends most of its CPU in the event loop's
    machinery (a request, a database round trip, an MQTT publish are each a few callbacks),
    and uvloop's C loop does that for about a tenth less CPU per object than asyncio's."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return EX_OK


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "sim":
        return _sim(args)
    if args.command == "demo":
        from crisync.demo import run_demo

        configure_logging("console", "warning")
        return run_event_loop(
            run_demo(
                objects=args.objects,
                follow=args.follow,
                mqtt_url=args.mqtt,
                metrics_port=args.metrics,
            )
        )

    try:
        # status and retry only read the state database: they run without the API secrets.
        loaded = load_config(args.config, needs_secrets=args.command not in ("status", "retry"))
    except ConfigError as exc:
        print("crisync: the configuration has problems:", file=sys.stderr)
        for problem in exc.problems:
            # A problem of several lines (e.g. a block of TOML to paste) stays under its dash.
            print("  - " + problem.replace("\n", "\n    "), file=sys.stderr)
        return EX_CONFIG
    if args.command == "check-config":
        return _check_config(loaded, online=args.online)
    configure_logging(loaded.config.daemon.log_format, loaded.config.daemon.log_level)
    return _with_state(args, loaded)


def _sim(args: argparse.Namespace) -> int:
    from crisync.sim.cli import ElementsSimOptions, run_simulator, run_unicat_simulator

    if args.simulator in ("change", "add", "delete"):
        from crisync.sim.control import WorldChange, run_world_change

        return run_world_change(
            WorldChange(
                args.simulator,
                args.target,
                args.kind,
                getattr(args, "key", None),
                title=getattr(args, "title", None),
                fields=tuple(getattr(args, "fields", ())),
                url=args.url,
            )
        )
    configure_logging("console")
    if args.simulator == "all":
        from pydantic import ValidationError

        from crisync.sim.all_simulators import SiteOptions, run_site

        try:
            mqtt = None if args.mqtt is None else MqttConfig(url=args.mqtt)
        except ValidationError as exc:
            print(f"crisync: --mqtt {args.mqtt}: {exc.errors()[0]['msg']}", file=sys.stderr)
            return EX_USAGE
        return run_site(
            SiteOptions(
                Path(args.dir).absolute(),
                elements_port=args.elements_port,
                pure_port=args.pure_port,
                unicat_port=args.unicat_port,
                objects=args.objects,
                records=args.records,
                seed=args.seed,
                mqtt=mqtt,
                pure_rate_limit=args.pure_rate_limit,
                pure_hourly_quota=args.pure_hourly_quota,
            )
        )
    if args.simulator == "unicat":
        return run_unicat_simulator(
            port=args.port,
            project=args.project,
            api_key=args.api_key,
            records=args.records,
            seed=args.seed,
            latency_ms=args.latency_ms,
        )
    elements = (
        ElementsSimOptions(
            items=args.items,
            date_skew=args.date_skew,
            schema_version=args.schema_version,
            https_namespace=args.https_namespace,
            fault_rate=args.fault_rate,
            read_only=args.read_only,
        )
        if args.simulator == "elements"
        else None
    )
    return run_simulator(
        args.simulator,
        port=args.port,
        objects=args.objects,
        seed=args.seed,
        latency_ms=args.latency_ms,
        elements=elements,
        populate=args.simulator == "pure" and args.populate,
    )


def _check_config(loaded: LoadedConfig, *, online: bool) -> int:
    """The configuration is valid: print what is in force, or, `online`, ask the systems."""
    print(f"{loaded.path}: configuration is valid")
    if not online:
        print(json.dumps(loaded.config.model_dump(mode="json"), indent=2))
        return EX_OK
    from crisync.preflight import check_online

    answers = run_event_loop(check_online(loaded.config))
    for answer in answers:
        print(f"  {'ok' if answer.ok else 'FAILED':<6} {answer.system}: {answer.message}")
    if any(answer.misconfigured for answer in answers):
        return EX_CONFIG
    return EX_OK if all(answer.ok for answer in answers) else EX_UNAVAILABLE


def _with_state(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    from crisync.metrics import MetricsUnavailableError

    log = structlog.get_logger("crisync")
    try:
        with (
            sole_user(loaded.config.state.path)
            if args.command in SOLE_USER_COMMANDS
            else contextlib.nullcontext()
        ):
            command = _state_commands(args, loaded).get(args.command)
            if command is not None:
                return run_event_loop(command)
            from crisync.daemon import run_daemon
            from crisync.progress import with_progress, work_line
            from crisync.telemetry import Telemetry

            telemetry = Telemetry()
            daemon = run_daemon(
                loaded.config,
                once=args.command == "once",
                allow_empty_state=args.allow_empty_state,
                telemetry=telemetry,
            )
            # `run` is for systemd; `once` is often run by hand, on a large backlog.
            summary = run_event_loop(
                with_progress(daemon, work_line(telemetry)) if args.command == "once" else daemon
            )
    except (SchemaTooNewError, FirstWriteRefusedError) as exc:
        _state_refused(exc, loaded)
        return EX_CONFIG
    except StateUnavailableError as exc:
        _state_unavailable(exc)
        return EX_TEMPFAIL
    except MetricsUnavailableError as exc:
        log.error("metrics.unavailable", error=str(exc))  # noqa: TRY400 - the reason is the message
        return EX_TEMPFAIL
    except Exception:
        # Anything else is a bug: say so with the traceback, and let systemd restart us.
        log.exception("crisync.crashed")
        return EX_SOFTWARE
    return _daemon_exit(summary, once=args.command == "once")


def _daemon_exit(summary: RunSummary, *, once: bool) -> int:
    """78 when a target refused the configuration, 69 when an API stayed out (its work
    waits), 65 when `once` made dead letters."""
    if summary.refused_configuration:
        return EX_CONFIG
    if summary.unavailable:
        return EX_UNAVAILABLE
    return EX_DATAERR if once and summary.dead_letters else EX_OK


def _state_refused(exc: SchemaTooNewError | FirstWriteRefusedError, loaded: LoadedConfig) -> None:
    """One line, no traceback: a known state of the database or the target, and the way on."""
    log = structlog.get_logger("crisync")
    if isinstance(exc, SchemaTooNewError):
        log.error("state.schema_too_new", error=str(exc))
    elif isinstance(exc, ForeignStateError):
        log.error("state.foreign_content", error=str(exc), path=str(loaded.config.state.path))
    elif isinstance(exc, SourceRefusedError):
        log.error("source.refused", error=str(exc))
    else:
        log.error("target.rights_missing", error=str(exc))


def _state_unavailable(exc: StateUnavailableError) -> None:
    """One line: the message names the cause and the way out; a traceback would bury it."""
    log = structlog.get_logger("crisync")
    if isinstance(exc, StateInUseError):
        log.error("state.in_use", error=str(exc), path=str(exc.path), pid=exc.holder)
    elif isinstance(exc, StateDiskFullError):
        log.error("state.disk_full", error=str(exc), path=str(exc.path))
    else:
        log.error("state.unavailable", error=str(exc), path=str(exc.path))


def _state_commands(
    args: argparse.Namespace, loaded: LoadedConfig
) -> dict[str, Coroutine[Any, Any, int]]:
    """The one-shot commands on the state database, ready to run (only one of them is)."""
    factories: dict[str, Callable[[], Coroutine[Any, Any, int]]] = {
        "status": lambda: _status(loaded, as_json=args.json, every_dead_letter=args.all),
        "retry": lambda: _retry(loaded, None if args.all else args.key),
        "reconcile": lambda: _reconcile(loaded, check=args.check),
        "resync": lambda: _resync(loaded, args),
        "plan": lambda: _plan(loaded, args),
        "show": lambda: _plan(loaded, args, show=True),
    }
    factory = factories.get(args.command)
    return {} if factory is None else {args.command: factory()}


async def _retry(loaded: LoadedConfig, object_key: str | None) -> int:
    from crisync.state import dead_letters
    from crisync.state.store import Store

    async with Store.open(loaded.config.state.path) as store, store.transaction() as conn:
        result = await dead_letters.requeue(conn, object_key)
    print(
        f"requeued {result.requeued} dead letter(s); "
        f"{result.superseded} dropped as superseded by a newer change"
    )
    if object_key is not None and result.requeued + result.superseded == 0:
        print(f"no dead letter for {object_key}", file=sys.stderr)
        return EX_USAGE
    return EX_OK


async def _reconcile(loaded: LoadedConfig, *, check: bool) -> int:
    from crisync.daemon import http_session
    from crisync.handlers.targets import open_targets
    from crisync.progress import with_progress, work_line
    from crisync.state.store import Store
    from crisync.telemetry import Telemetry

    config = loaded.config
    if not config.targets:
        print("crisync: no target is configured: nothing to reconcile with", file=sys.stderr)
        return EX_CONFIG
    consistent = True
    async with Store.open(config.state.path) as store, http_session() as session:
        telemetry = Telemetry()
        targets = open_targets(config, store=store, session=session, telemetry=telemetry)
        for target in targets.values():
            try:
                report = await with_progress(
                    target.reconcile(apply=not check), work_line(telemetry)
                )
            except CrisyncError as exc:
                print(f"crisync: reconcile stopped: {exc.info().message}", file=sys.stderr)
                return EX_UNAVAILABLE
            print(report.render())
            consistent = consistent and report.consistent
    return EX_SOFTWARE if check and not consistent else EX_OK


async def _resync(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from crisync.daemon import http_session
    from crisync.lifecycle import Lifecycle
    from crisync.listener.base import SourceContext
    from crisync.listener.sources import open_sources
    from crisync.progress import Tally, tally_line, with_progress
    from crisync.resync import resync_all, resync_one
    from crisync.state.store import Store
    from crisync.telemetry import Telemetry

    if args.all == (args.key is not None):
        print("crisync: resync SOURCE KIND KEY, or resync --all [SOURCE [KIND]]", file=sys.stderr)
        return EX_USAGE
    config = loaded.config
    async with Store.open(config.state.path) as store, http_session() as session:
        context = SourceContext(store, session, Lifecycle(), Telemetry())
        sources = open_sources(config, context)
        try:
            if args.all:
                fetched = Tally()
                every = resync_all(store, sources, args.source, args.kind, progress=fetched.update)
                print(await with_progress(every, tally_line("fetched", fetched)))
            else:
                print(await resync_one(store, sources, args.source, args.kind, args.key))
        except CrisyncError as exc:
            # The message names its API already.
            print(f"crisync: resync: {exc.message}", file=sys.stderr)
            if exc.status == 404:
                return EX_NOINPUT
            return EX_USAGE if exc.api == "crisync" else EX_UNAVAILABLE
    return EX_OK


async def _plan(loaded: LoadedConfig, args: argparse.Namespace, *, show: bool = False) -> int:
    from crisync.plan import make_plan, render_object
    from crisync.progress import with_progress, work_line
    from crisync.telemetry import Telemetry

    # The plan says what fails and what kept it from being whole; the log would repeat it.
    configure_logging(loaded.config.daemon.log_format, "critical")
    telemetry = Telemetry()
    planning = make_plan(
        loaded.config, source=args.source, kind=args.kind, key=args.key, telemetry=telemetry
    )
    try:
        plan = await with_progress(planning, work_line(telemetry))
    except CrisyncError as exc:
        print(f"crisync: plan: {exc.message}", file=sys.stderr)
        return EX_USAGE if exc.api == "crisync" else EX_UNAVAILABLE
    if show:
        print("\n\n".join(render_object(planned) for planned in plan.objects))
    elif args.json:
        print(json.dumps(plan.as_json(), indent=2, ensure_ascii=False))
    else:
        print(plan.render())
    return EX_UNAVAILABLE if plan.problems else EX_OK


async def _status(loaded: LoadedConfig, *, as_json: bool, every_dead_letter: bool) -> int:
    from crisync.state.store import Store
    from crisync.status import read_status, render_status

    if not loaded.config.state.path.exists():
        print(f"no state database at {loaded.config.state.path} yet")
        return EX_OK
    async with Store.open(loaded.config.state.path) as store:
        report = await read_status(store)
    if as_json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(render_status(report, every_dead_letter=every_dead_letter))
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
