from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from crisync.logs import configure_logging
from tests.support.docs import PAGES, first_column, prose

ROOT = Path(__file__).parent.parent
EVENT_NAME = re.compile(r"[a-z_]+(\.[a-z_]+)+")
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
# `crisync.toml`, `state.db`: names in the pages that look like events but are files
FILE_NAME = re.compile(r"\.(toml|db|py|json|ya?ml|md|service|conf|lock)$")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    handlers, level = logging.getLogger().handlers[:], logging.getLogger().level
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers
    logging.getLogger().setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_event_its_context_and_library_lines_alike(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json")
    structlog.get_logger("crisync.handlers").bind(key="1042", attempt=2).info(
        "object.replicated", target_uuid="6a1d"
    )
    logging.getLogger("mqtt").warning("There are %d pending publish calls.", 3)
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["event"] == "object.replicated"
    assert (first["key"], first["attempt"], first["target_uuid"]) == ("1042", 2, "6a1d")
    assert (first["level"], first["logger"]) == ("info", "crisync.handlers")
    assert first["timestamp"].endswith("Z")
    assert (second["event"], second["level"]) == ("There are 3 pending publish calls.", "warning")


@pytest.mark.usefixtures("restore_logging")
def test_a_terminal_gets_readable_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console")
    structlog.get_logger("crisync").info("daemon.started", mode="run")
    line = capsys.readouterr().err
    assert "daemon.started" in line
    assert "mode=run" in line  # no colour codes: capsys is no terminal
    assert not line.startswith("{")


def _log_calls(tree: ast.AST) -> Iterator[tuple[ast.Call, ast.expr]]:
    """Every call of a logger method in a module, with the argument that names the event."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LOG_METHODS
        ):
            event = node.args[1:2] if node.func.attr == "log" else node.args[:1]
            yield from ((node, arg) for arg in event)


def _called(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def event_names() -> set[str]:
    """Every literal event name the code logs, directly or through a helper that takes the
    event's name as a parameter and logs it (e.g. `FeedLoop.read_to_the_end`)."""
    trees = []
    for path in (ROOT / "src" / "crisync").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        if "structlog" in source:  # the others log nothing (and the simulators parse slowly)
            trees.append(ast.parse(source))
    helpers: dict[str, int] = {}  # a helper's name → where its event name goes
    for tree in trees:
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                params = [a.arg for a in function.args.args if a.arg not in ("self", "cls")]
                for _, arg in _log_calls(function):
                    if isinstance(arg, ast.Name) and arg.id in params:
                        helpers[function.name] = params.index(arg.id)
    names = set()
    for tree in trees:
        literals = [arg for _, arg in _log_calls(tree)]
        for call in ast.walk(tree):
            if (
                isinstance(call, ast.Call)
                and (where := helpers.get(_called(call) or "")) is not None
            ):
                literals.extend(call.args[where : where + 1])
        names.update(
            arg.value
            for arg in literals
            if isinstance(arg, ast.Constant)
            and isinstance(arg.value, str)
            and EVENT_NAME.fullmatch(arg.value)
        )
    return names


def test_the_tables_of_log_events_list_every_event_the_code_logs_and_no_other() -> None:
    names = event_names()
    assert {"object.replicated", "elements.sweep_done", "unicat.poll_done"} <= names
    listed = first_column("event")
    assert (sorted(names - listed), sorted(listed - names)) == ([], [])


def test_every_event_the_pages_name_is_one_the_code_logs() -> None:
    names = event_names()
    namespaces = {name.partition(".")[0] for name in names}
    named = {
        (page.name, mention)
        for page in PAGES
        if page.name != "architecture.md"  # the code's map names code: `credentials.refused`
        for mention in re.findall(r"`([a-z_]+\.[a-z_.]+)`", prose(page))
        if mention.partition(".")[0] in namespaces
        and EVENT_NAME.fullmatch(mention)
        and not FILE_NAME.search(mention)
    }
    assert sorted((page, mention) for page, mention in named if mention not in names) == []
