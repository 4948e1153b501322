"""`crisync sim all`: a whole simulated site, and a configuration crisync runs on as it is."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from crisync.cli import EX_USAGE, main
from crisync.config.load import load_config
from crisync.config.model import MqttConfig
from crisync.daemon import run_daemon
from crisync.sim.all_simulators import (
    CONFIG_NAME,
    ENV_NAME,
    UNICAT_PROJECT,
    SiteOptions,
    serve_site,
)
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import free_port
from crisync.telemetry import Telemetry
from tests.support.cli import cli


@contextlib.asynccontextmanager
async def running_site(
    directory: Path, mqtt: MqttConfig, capsys: pytest.CaptureFixture[str], **limits: int
) -> AsyncIterator[str]:
    """`crisync sim all` on free ports, small; what it printed."""
    options = SiteOptions(
        directory,
        elements_port=0,
        pure_port=0,
        unicat_port=0,
        objects=12,
        records=6,
        mqtt=mqtt,
        **limits,
    )
    ready = asyncio.Event()
    serving = asyncio.create_task(serve_site(options, ready))
    try:
        await asyncio.wait_for(ready.wait(), timeout=20)
        yield capsys.readouterr().out
    finally:
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving


@pytest.fixture
async def site(
    tmp_path: Path, broker: MosquittoBroker, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[str]:
    async with running_site(tmp_path, MqttConfig(url=broker.url), capsys) as printed_out:
        yield printed_out


def printed(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found is not None, text
    return found[1]


async def once(config: Path) -> Telemetry:
    telemetry = Telemetry()
    await run_daemon(load_config(str(config)).config, once=True, telemetry=telemetry)
    return telemetry


async def test_the_site_s_configuration_works_as_written_and_a_change_by_hand_arrives(
    site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / CONFIG_NAME
    assert f"Configuration: {config}" in site
    secrets = tmp_path / ENV_NAME
    assert secrets.stat().st_mode & 0o077 == 0
    for line in secrets.read_text().splitlines():
        name, _, value = line.partition("=")
        monkeypatch.setenv(name, value)
    assert await cli("check-config", "--config", str(config)) == 0
    monkeypatch.setenv("CRISYNC_METRICS__PORT", str(free_port()))  # 9661 may be taken here

    first = await once(config)
    assert first.events_received["elements:publications"] > 0
    assert first.events_received[f"unicat:{UNICAT_PROJECT}"] > 0
    assert first.outcomes["created"] > 0

    elements = printed(r"Elements API simulator +(\S+)/secure-api", site)
    unicat = printed(r"Unicat API simulator +(\S+)", site)
    publication = printed(r"crisync sim change elements publication (\d+)", site)
    assert (
        await cli(
            "sim",
            "change",
            "elements",
            "publication",
            publication,
            "--title",
            "By hand",
            "--url",
            elements,
        )
        == 0
    )
    assert (
        await cli(
            "sim",
            "add",
            "unicat",
            "person",
            "--set",
            "firstname=Ada",
            "--set",
            "lastname=Lovelace",
            "--url",
            unicat,
        )
        == 0
    )
    second = await once(config)
    assert (second.outcomes["updated"], second.outcomes["created"]) == (1, 1)


def test_a_broker_url_that_is_not_one_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sim", "all", "--dir", str(tmp_path), "--mqtt", "http://localhost"]) == EX_USAGE
    assert "--mqtt http://localhost: " in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


async def test_a_throttled_site_answers_429_past_its_limits_and_its_configuration_paces_to_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}")  # the outbox keeps all
    async with running_site(
        tmp_path, nobody, capsys, pure_rate_limit=5, pure_hourly_quota=900
    ) as out:
        assert "throttled: 5 requests/s, hourly quota 900" in out
        pure_url = printed(r"Pure API simulator\s+(\S+)", out)
        for line in (tmp_path / ENV_NAME).read_text().splitlines():
            name, _, value = line.partition("=")
            monkeypatch.setenv(name, value)
        pure = load_config(str(tmp_path / CONFIG_NAME)).config.pure
        assert pure is not None
        assert (pure.rate_limit, pure.hourly_quota) == (5, 900)
        async with aiohttp.ClientSession() as session:
            statuses = [
                (
                    await session.get(f"{pure_url}/persons", headers={"api-key": "pure-secret"})
                ).status
                for _ in range(8)
            ]
        assert statuses.count(429) >= 1  # eight in a row, five allowed in a second


def test_a_limit_below_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["sim", "all", "--pure-rate-limit", "0"])
    assert exited.value.code == 2  # argparse's: the command line is wrong
    assert "at least 1" in capsys.readouterr().err
