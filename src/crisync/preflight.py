"""`crisync check-config --online`: one authenticated request to every configured API and the
broker, each answer said in one line, before a daemon meets the problem on its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import aiomqtt

from crisync import credentials
from crisync.config.model import Config
from crisync.daemon import http_session
from crisync.errors import CredentialError, CrisyncError, MissingContentError, MissingRightsError
from crisync.handlers.targets import target_checks
from crisync.listener.sources import source_checks
from crisync.publisher.mqtt import check_broker
from crisync.telemetry import Telemetry


@dataclass(frozen=True)
class Answer:
    system: str
    ok: bool
    message: str
    # The API works, but the configuration names something it does not hold or may not do.
    misconfigured: bool = False


async def check_online(config: Config) -> list[Answer]:
    """Every system asked, whatever the others answered."""
    answers = []
    async with http_session() as session:
        telemetry = Telemetry()
        checks: dict[str, Callable[[], Awaitable[str]]] = {
            **source_checks(config, session, telemetry),
            **target_checks(config, session, telemetry),
        }
        if config.mqtt is not None:
            checks["mqtt"] = partial(check_broker, config.mqtt)
        for system, check in checks.items():
            answers.append(await _ask(system, check))
    return answers


async def _ask(system: str, check: Callable[[], Awaitable[str]]) -> Answer:
    try:
        return Answer(system, ok=True, message=await check())
    except (MissingContentError, MissingRightsError) as exc:
        return Answer(system, ok=False, message=exc.message, misconfigured=True)
    except CredentialError as exc:
        return Answer(system, ok=False, message=credentials.refusal(exc))
    except CrisyncError as exc:
        return Answer(system, ok=False, message=exc.message)
    except (aiomqtt.MqttError, OSError) as exc:  # the broker, or its TLS files
        return Answer(system, ok=False, message=f"cannot connect: {exc}")
