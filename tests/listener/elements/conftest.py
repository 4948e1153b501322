"""Elements listener fixtures: retries without waiting, a simulator on a whole second."""

from __future__ import annotations

import pytest

from crisync.listener.elements.sim import ElementsSimulator
from tests.support.elements import START
from tests.support.secrets import ELEMENTS_PASSWORD


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """Retries without waiting; records the Retry-After floor each retry was given."""
    floors: list[float | None] = []

    def instant(*_args: object, floor: float | None = None, **_kwargs: object) -> float:
        floors.append(floor)
        return 0.0

    monkeypatch.setattr("crisync.backoff.full_jitter", instant)
    return floors


@pytest.fixture
def elements_sim() -> ElementsSimulator:
    """The shared simulator, started on a whole second so Date and stamps line up."""
    return ElementsSimulator(objects=30, seed=7, password=ELEMENTS_PASSWORD, start=START)
