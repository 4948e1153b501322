"""deploy/: the systemd unit as systemd judges it, the example configuration, the wrapper."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tomllib
import types
import typing
from pathlib import Path

import pytest
from pydantic import SecretStr, TypeAdapter

from crisync.cli import main
from crisync.config.load import SECRETS
from crisync.config.model import Config, DaemonConfig
from crisync.daemon import EX_LOOP_FAILED, Lifecycle, run_daemon
from crisync.sim.broker import MosquittoBroker
from crisync.state import mapping
from crisync.state.store import Store
from tests.support.docs import table_rows
from tests.support.example import EXAMPLE, SHIPPED_OFF, config_tables, switched_on
from tests.support.mqtt import subscribed

DEPLOY = Path(__file__).parent.parent / "deploy"
UNIT = DEPLOY / "crisync.service"
ADMIN = DEPLOY / "crisync-admin"
INSTALLED_BINARY = "/opt/crisync/bin/crisync"
MAX_EXPOSURE = 2.0


def unit_settings(name: str) -> list[str]:
    return re.findall(rf"^{name}=(.*)$", UNIT.read_text(), flags=re.MULTILINE)


@pytest.fixture
def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return found


def test_the_unit_verifies_clean(systemd_analyze: str, tmp_path: Path) -> None:
    # verify insists that ExecStart= exists: point it at this checkout's own entry point.
    entry_point = Path(sys.executable).with_name("crisync")
    assert entry_point.exists(), "the project is not installed in this interpreter's venv"
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_BINARY} " in text
    (tmp_path / UNIT.name).write_text(text.replace(INSTALLED_BINARY, str(entry_point)))
    result = subprocess.run(
        [systemd_analyze, "verify", UNIT.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_unit_is_hardened(systemd_analyze: str) -> None:
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for crisync\.service: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


def test_the_unit_is_a_watched_notify_service_that_a_bad_configuration_does_not_restart() -> None:
    assert unit_settings("Type") == ["notify"]
    assert unit_settings("Restart") == ["on-failure"]
    assert unit_settings("RestartPreventExitStatus") == ["78"]
    assert int(unit_settings("WatchdogSec")[0]) > 0


def test_the_unit_restarts_the_exit_codes_the_operations_page_says_it_restarts() -> None:
    systemd_column = {int(row[0]): row[-1] for row in table_rows("code")}
    restarted = {code for code, cell in systemd_column.items() if cell.startswith("restarted")}
    prevented = {code for code, cell in systemd_column.items() if cell.startswith("not restarted")}
    assert EX_LOOP_FAILED in restarted
    assert prevented == {int(code) for code in unit_settings("RestartPreventExitStatus")}
    # Restart=on-failure (above) restarts every other failure, unless it counts as a success.
    assert restarted.isdisjoint(int(code) for code in unit_settings("SuccessExitStatus"))
    # The comment above RestartPreventExitStatus= names each code the page describes so.
    lines = UNIT.read_text().splitlines()
    setting = next(i for i, text in enumerate(lines) if text.startswith("RestartPreventExitStatus"))
    comment = []
    for line in reversed(lines[:setting]):
        if not line.startswith("#"):
            break
        comment.append(line)
    named = {int(code) for code in re.findall(r"\b\d+\b", " ".join(comment))}
    assert named == restarted | prevented


def test_the_shutdown_deadline_is_below_the_stop_timeout() -> None:
    stop_timeout = float(unit_settings("TimeoutStopSec")[0])
    example = tomllib.loads(EXAMPLE.read_text())["daemon"]["shutdown_timeout"]
    default = DaemonConfig().shutdown_timeout
    # Room after the deadline to close the database and publish `offline`.
    assert max(example, default) + 5 <= stop_timeout


def test_every_secret_is_a_credential_of_the_unit_and_of_the_admin_wrapper() -> None:
    wanted = {credential for _, credential in SECRETS.values()}
    loaded = {setting.split(":")[0] for setting in unit_settings("LoadCredential")}
    defaults = {setting.split(":")[0] for setting in unit_settings("SetCredential")}
    assert wanted <= loaded
    assert defaults == loaded  # a missing file must not fail the unit: crisync names it
    for setting in unit_settings("LoadCredential"):
        name, path = setting.split(":")
        assert path == f"/etc/crisync/credentials/{name}"
    listed = re.search(r"^for name in (.*); do$", ADMIN.read_text(), flags=re.MULTILINE)
    assert listed
    assert set(listed.group(1).split()) == loaded


@pytest.mark.parametrize("via", ["environment", "credentials"])
def test_check_config_accepts_the_example_as_shipped_with_the_elements_and_pure_secrets(
    via: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As shipped the example is an Elements site's: Unicat is off, its key not needed."""
    for variable, _ in SECRETS.values():
        monkeypatch.delenv(variable, raising=False)
    supplied = {key: names for key, names in SECRETS.items() if key[0] in ("elements", "pure")}
    placeholders = {credential: f"placeholder-{credential}" for _, credential in supplied.values()}
    if via == "environment":
        for variable, credential in supplied.values():
            monkeypatch.setenv(variable, placeholders[credential])
    else:  # as crisync.service hands them over
        for credential, value in placeholders.items():
            (tmp_path / credential).write_text(value + "\n")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))

    assert main(["check-config", "--config", str(EXAMPLE)]) == 0
    output = capsys.readouterr().out
    assert "configuration is valid" in output
    assert not any(value in output for value in placeholders.values())
    effective = json.loads(output.partition("\n")[2])
    assert (effective["unicat"], effective["metrics"], effective["commands"]) == (None, None, None)
    assert effective["elements"]["username"] == "api-user"


def test_check_config_accepts_the_example_made_unicat_only_as_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable, _ in SECRETS.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("CRISYNC_UNICAT_API_KEY", "placeholder-unicat")
    monkeypatch.setenv("CRISYNC_PURE_API_KEY", "placeholder-pure")
    text = switched_on("unicat", "mappings.unicat.record")
    # Deleted: [elements] with its write-back example, down to where Unicat's part begins.
    start = text.index("\n[elements]\n")
    end = text.rindex("\n\n", 0, text.index("\n[unicat]\n"))
    path = tmp_path / "crisync.toml"
    path.write_text(text[:start] + text[end:])
    assert main(["check-config", "--config", str(path)]) == 0
    effective = json.loads(capsys.readouterr().out.partition("\n")[2])
    assert effective["elements"] is None
    assert effective["unicat"]["url"] == "https://unicat.app"


def test_check_config_names_a_missing_secret_and_exits_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable, _ in SECRETS.values():
        monkeypatch.delenv(variable, raising=False)
    # The unit's default for a credential file that is missing: a lone newline.
    (tmp_path / "pure-api-key").write_text("placeholder")
    (tmp_path / "elements-password").write_text("\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert main(["check-config", "--config", str(EXAMPLE)]) == 78
    assert "elements.password: missing" in capsys.readouterr().err


def _is_secret(annotation: object) -> bool:
    if annotation is SecretStr:
        return True
    return isinstance(annotation, types.UnionType) and SecretStr in typing.get_args(annotation)


def test_the_example_documents_every_option_with_a_comment() -> None:
    """Every key of every table, set or commented out, each under a comment of its own."""
    documented: set[tuple[str, str]] = set()
    tables = config_tables(Config)
    section = ""
    previous = ""
    # The commented-out sections' options as they read once switched on.
    for line in switched_on(*SHIPPED_OFF).splitlines():
        if header := re.fullmatch(r"(?:# ?)?\[\[?([\w.]+)\]\]?", line):
            section = header.group(1)
            parent, _, name = section.rpartition(".")
            if parent in tables and previous.startswith("#"):
                documented.add((parent, name))  # a table-valued option, e.g. a mapping's static
            if (
                section not in tables
                and parent in tables
                and name not in tables[parent].model_fields
            ):
                section = parent  # one entry of a table of tables, e.g. writeback.publications
        # Keys of free-form tables (Pure properties in a mapping) are data, not options.
        elif (key := re.match(r"(?:# ?)?(\w+) = ", line)) and section in tables:
            assert previous.startswith("#"), f"[{section}] {key.group(1)} has no comment"
            documented.add((section, key.group(1)))
        previous = line
    expected = {
        (section, name)
        for section, model in tables.items()
        for name, field in model.model_fields.items()
        if f"{section}.{name}" not in tables
        and not _is_secret(field.annotation)
        # Mapping rules are data with a grammar of their own, documented in docs/mappings.md:
        # the [mappings.<source>.<kind>] tables, and what crisync derives from them.
        and not section.startswith("mappings.")
        and not (section == "mappings" and (name == "sources" or field.exclude))
    }
    assert expected - documented == set()


def test_the_example_shows_the_defaults() -> None:
    """A value in the example differs from the default only where there is no default."""
    tables = config_tables(Config)
    for section, values in tomllib.loads(switched_on(*SHIPPED_OFF)).items():
        for key, value in values.items():
            if section == "mappings" and key not in tables[section].model_fields:
                continue  # [mappings.<source>]: mapping rules, data rather than options
            field = tables[section].model_fields[key]
            if not field.is_required():
                shown = TypeAdapter(field.annotation).validate_python(value)
                assert shown == field.get_default(call_default_factory=True), f"[{section}] {key}"


async def test_sqlite3_backs_up_the_state_database_while_the_daemon_writes(
    tmp_path: Path, config: Config, broker: MosquittoBroker, topic_prefix: str
) -> None:
    """What docs/operations.md tells operators to do, against a running daemon."""
    sqlite3_cli = shutil.which("sqlite3")
    if sqlite3_cli is None:
        pytest.skip("the sqlite3 command is not installed (Debian: apt-get install sqlite3)")
    life = Lifecycle()
    backup = tmp_path / "state.backup.db"
    async with subscribed(broker.port, f"{topic_prefix}/outcomes/#") as received:
        daemon = asyncio.create_task(run_daemon(config, lifecycle=life))
        try:
            await received.wait_for(lambda r: len(r.outcomes()) >= 10)
            copying = await asyncio.create_subprocess_exec(
                sqlite3_cli, str(config.state.path), f".backup {backup}"
            )
            assert await copying.wait() == 0
        finally:
            life.stopping.set()
            await daemon
    async with Store.open(backup) as store, store.reading() as conn:
        async with conn.execute("PRAGMA integrity_check") as rows:
            assert [tuple(row) async for row in rows] == [("ok",)]
        assert await mapping.count(conn) >= 10
