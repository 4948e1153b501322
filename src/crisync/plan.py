"""`crisync plan`: what `crisync once` would do, object by object, with nothing written anywhere.

The plan runs the daemon's own pipeline once, on a copy of the state database, with targets
opened for planning (they read as they would and record their writes instead of sending
them) and sources that never write back; nothing is published. So the plan is what a
`once` started now does, and the state file, the targets and the sources are left as
they were: the copy is thrown away.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from crisync.config.model import Config
from crisync.daemon import http_session, resync_event, run_daemon
from crisync.handlers.base import HandlerResult, PlannedContent, Target
from crisync.handlers.targets import open_targets
from crisync.lifecycle import Lifecycle
from crisync.listener.base import Loop, Source, SourceContext, queue_resync
from crisync.listener.sources import open_sources
from crisync.outcome import OutcomeAction
from crisync.state import cursors, dead_letters, inbox
from crisync.state.inbox import ChangeEvent, InboxEvent
from crisync.state.store import Store
from crisync.telemetry import Telemetry

# What once would do, by the outcome it would publish.
PLANNED_ACTION: dict[OutcomeAction, str] = {
    "created": "create",
    "adopted": "adopt",
    "linked": "link",
    "updated": "update",
    "unchanged": "unchanged",
    "locked": "lock",
    "deleted": "delete",
    "skipped": "skip",
    "failed": "failing",
}
AMBIGUOUS = "ambiguous"  # a match rule found several candidates: the object would wait
WAITING = "waiting"  # still in the inbox at the end: an API out, or a reference not there


def planned_action(action: OutcomeAction, error_class: str | None = None) -> str:
    """An outcome's action in a plan's words; an ambiguous match is a failure of its own."""
    return AMBIGUOUS if error_class == "AmbiguousMatchError" else PLANNED_ACTION[action]


@dataclass(frozen=True)
class PlannedObject:
    source: str
    kind: str
    key: str
    action: str
    target_type: str | None = None
    target_uuid: str | None = None
    note: str | None = None  # the rule that found the content, why it fails, ...
    changes: dict[str, Any] = field(default_factory=dict)  # property → {target, crisync}
    payload: dict[str, Any] | None = None  # the source object as crisync read it
    content: PlannedContent | None = None  # the target's content now and after

    @property
    def object_key(self) -> str:
        return f"{self.source}/{self.kind}/{self.key}"

    def as_json(self) -> dict[str, Any]:
        document = asdict(self)
        document.pop("payload")
        document.pop("content")
        return {name: value for name, value in document.items() if value not in (None, {})}


@dataclass(frozen=True)
class Plan:
    objects: list[PlannedObject]
    # What kept the plan from being whole: a feed that failed, an API that stayed out.
    problems: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        return dict(sorted(Counter(planned.action for planned in self.objects).items()))

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "objects": [planned.as_json() for planned in self.objects],
            "problems": self.problems,
        }

    def render(self) -> str:
        lines = []
        for planned in self.objects:
            where = f" {planned.target_type} {planned.target_uuid}" if planned.target_uuid else ""
            note = f" ({planned.note})" if planned.note else ""
            lines.append(f"{planned.action:<9} {planned.object_key}{where}{note}")
            lines.extend(
                f"          {name}: {_short(change['target'])} -> {_short(change['crisync'])}"
                for name, change in planned.changes.items()
            )
        lines.extend(f"INCOMPLETE: {problem}" for problem in self.problems)
        summary = ", ".join(f"{count} {action}" for action, count in self.summary.items())
        lines.append(f"plan: {summary or 'nothing to do'}; nothing was written")
        return "\n".join(lines)


def render_object(planned: PlannedObject) -> str:
    """One object whole (`crisync show`): as read, as the target holds it, as it would be."""
    where = f" {planned.target_type} {planned.target_uuid}" if planned.target_uuid else ""
    note = f" ({planned.note})" if planned.note else ""
    parts = [f"{planned.object_key}: {planned.action}{where}{note}"]
    if planned.payload is not None:
        parts.append(f"As crisync read it from {planned.source}:\n{_indented(planned.payload)}")
    content = planned.content
    if content is not None:
        before = "  nothing yet" if content.before is None else _indented(content.before)
        after = "  deleted" if content.after is None else _indented(content.after)
        parts.append(f"In the target now:\n{before}")
        parts.append(f"As crisync would leave it:\n{after}")
        changes = content.changes()
        parts.append(
            "What changes:\n"
            + "\n".join(
                f"  {name}: {_short(change['target'])} -> {_short(change['crisync'])}"
                for name, change in changes.items()
            )
            if changes
            else "What changes: nothing"
        )
    return "\n\n".join(parts)


def _indented(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    return "\n".join("  " + line for line in text.splitlines())


def _short(value: Any, width: int = 70) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"


async def make_plan(
    config: Config,
    *,
    source: str | None = None,
    kind: str | None = None,
    key: str | None = None,
    telemetry: Telemetry | None = None,
) -> Plan:
    """What `once` would do now; limited to a source, a kind, or one object when given.
    `telemetry` counts what the planning run reads and does (for its progress).

    For one object, only it is fetched from its source and planned; otherwise every feed
    is read from the stored cursors, as `once` would, and the plan is filtered.
    """
    with _scratch_copy(config.state.path) as scratch:
        planning_config = config.model_copy(
            update={
                "state": config.state.model_copy(update={"path": scratch}),
                "mqtt": None,
                "metrics": None,
                "commands": None,
            }
        )
        recorder = _Recorder()
        fetched: ChangeEvent | None = None
        if source is not None and kind is not None and key is not None:
            fetched = await _queue_one(planning_config, source, kind, key)

        def sources(config: Config, context: SourceContext) -> list[Source]:
            planning = SourceContext(
                context.store,
                context.session,
                context.life,
                context.telemetry,
                context.topic_prefix,
                planning=True,
            )
            opened = open_sources(config, planning)
            return [_Silent(s) for s in opened] if fetched is not None else opened

        def targets(
            config: Config,
            *,
            store: Store,
            session: aiohttp.ClientSession,
            telemetry: Telemetry,
        ) -> dict[str, Target]:
            opened = open_targets(
                config, store=store, session=session, telemetry=telemetry, planning=True
            )
            return {name: recorder.watch(target) for name, target in opened.items()}

        run = await run_daemon(
            planning_config, once=True, telemetry=telemetry, sources=sources, targets=targets
        )
        planned = await recorder.objects(scratch)
        problems = [f"{api} was unavailable: its objects are waiting" for api in run.unavailable]
        problems += await _feed_problems(scratch)

    def wanted(item: PlannedObject) -> bool:
        return (
            (source is None or item.source == source)
            and (kind is None or item.kind == kind)
            and (key is None or item.key == key)
        )

    return Plan([item for item in planned if wanted(item)], problems)


async def _feed_problems(state: Path) -> list[str]:
    async with Store.open(state) as store, store.reading() as conn:
        feeds = await cursors.all_cursors(conn)
    return [f"feed {c.feed}: {c.last_error}" for c in feeds if c.last_error]


@contextlib.contextmanager
def _scratch_copy(state: Path) -> Iterator[Path]:
    """A consistent copy of the state database (a running daemon may be writing it)."""
    with tempfile.TemporaryDirectory(prefix="crisync-plan-") as directory:
        copy = Path(directory) / "state.db"
        if state.exists():
            # SQLite's online backup: a snapshot between transactions, read-only on the source.
            with (
                contextlib.closing(sqlite3.connect(f"{state.as_uri()}?mode=ro", uri=True)) as src,
                contextlib.closing(sqlite3.connect(copy)) as dst,
            ):
                src.backup(dst)
        yield copy


async def _queue_one(config: Config, source: str, kind: str, key: str) -> ChangeEvent:
    async with Store.open(config.state.path) as store, http_session() as session:
        context = SourceContext(store, session, Lifecycle(), Telemetry(), planning=True)
        event = await resync_event(open_sources(config, context), source, kind, key)
        await queue_resync(store, event)
    return event


class _Silent(Source):
    """A source without its feeds: a plan of one object reads only that object."""

    def __init__(self, inner: Source) -> None:
        self._inner = inner
        self.name = inner.name  # type: ignore[misc] # a wrapper answers to its source's name

    def kinds(self) -> frozenset[str]:
        return self._inner.kinds()

    def loops(self, *, once: bool) -> list[Loop]:
        return []

    async def resync(self, kind: str, key: str) -> ChangeEvent:
        return await self._inner.resync(kind, key)

    def routes(self) -> dict[tuple[str, str], Any]:
        return self._inner.routes()

    def after_create(
        self, event: InboxEvent, target_type: str, target_uuid: str
    ) -> tuple[ChangeEvent, ...]:
        return self._inner.after_create(event, target_type, target_uuid)


class _Recorder:
    """Remembers what each target's handler gave back, by object; its last answer counts."""

    def __init__(self) -> None:
        self._results: dict[tuple[str, str, str], tuple[InboxEvent, HandlerResult, Target]] = {}

    def watch(self, target: Target) -> Target:
        return _Recording(target, self)

    def record(self, event: InboxEvent, result: HandlerResult, target: Target) -> None:
        self._results[(event.source, event.kind, event.key)] = (event, result, target)

    async def objects(self, state: Path) -> list[PlannedObject]:
        async with Store.open(state) as store, store.reading() as conn:
            failed = await dead_letters.all_dead_letters(conn)
            waiting = await inbox.pending_objects(conn)
        planned: dict[tuple[str, str, str], PlannedObject] = {}
        for identity, (event, result, target) in self._results.items():
            content = None
            if result.target_type is not None and result.target_uuid is not None:
                content = target.planned(result.target_type, result.target_uuid)
            changed = content is not None and result.action in ("adopted", "updated")
            planned[identity] = PlannedObject(
                *identity,
                action=_planned_result(result, content),
                target_type=result.target_type,
                target_uuid=result.target_uuid,
                note=result.note,
                changes=content.changes() if content is not None and changed else {},
                payload=event.payload,
                content=content,
            )
        for letter in failed:
            planned[(letter.source, letter.kind, letter.key)] = PlannedObject(
                letter.source,
                letter.kind,
                letter.key,
                action=planned_action("failed", letter.error_class),
                note=letter.message,
            )
        for identity in waiting:
            planned.setdefault(identity, PlannedObject(*identity, action=WAITING))
        return [planned[identity] for identity in sorted(planned)]


def _planned_result(result: HandlerResult, content: PlannedContent | None) -> str:
    """A handler's result in a plan's words. Every delete policy ends in the outcome
    `deleted`; the plan says what the policy writes, so content that would only be unlocked
    (the default policy, and for content crisync adopted) is not announced as deleted."""
    writes = content.writes if content is not None else ()
    if result.action == "deleted" and "unlock" in writes and "delete" not in writes:
        return "unlock"
    return PLANNED_ACTION[result.action]


class _Recording(Target):
    """A target whose every result the recorder sees."""

    def __init__(self, inner: Target, recorder: _Recorder) -> None:
        self._inner = inner
        self._recorder = recorder
        self.name = inner.name  # type: ignore[misc] # a wrapper answers to its target's name

    @property
    def workers(self) -> int:
        return self._inner.workers

    @property
    def max_attempts(self) -> int:
        return self._inner.max_attempts

    @property
    def park_duration(self) -> float:
        return self._inner.park_duration

    async def handle(self, event: InboxEvent) -> HandlerResult:
        result = await self._inner.handle(event)
        self._recorder.record(event, result, self._inner)
        return result

    async def foreign_state(self) -> str | None:
        # A plan on a lost state database says what once would: it refuses.
        return await self._inner.foreign_state()

    async def reconcile(self, *, apply: bool) -> Any:
        return await self._inner.reconcile(apply=apply)
