"""`crisync sim change|add|delete`: what it says when the world cannot change as asked."""

from __future__ import annotations

import pytest

from crisync.cli import EX_NOINPUT, EX_UNAVAILABLE, EX_USAGE
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.server import free_port, serve
from tests.support.cli import cli


async def test_a_change_that_cannot_be_made_says_why_with_its_exit_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert await cli("sim", "change", "elements", "publication", "1", "--url", nowhere) == (
        EX_UNAVAILABLE
    )
    assert f"no elements simulator answers at {nowhere} (" in capsys.readouterr().err
    assert await cli("sim", "change", "elements", "publication", "1", "--set", "a=b") == EX_USAGE
    assert "--set is for Unicat records" in capsys.readouterr().err

    sim = ElementsSimulator(objects=4)
    async with serve(sim.app()) as origin:
        assert await cli("sim", "delete", "elements", "publication", "1", "--url", origin) == (
            EX_NOINPUT
        )
        assert "no publication 1" in capsys.readouterr().err
        assert await cli("sim", "add", "elements", "publication", "--url", origin) == 0
    added = sim.object_ids("publication")[-1]
    assert capsys.readouterr().out.startswith(f"added elements publication {added}: ")
