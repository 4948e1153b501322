"""What the Unicat tests share: the project, the mapping rules, a listener to poll with."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from crisync.config.model import UnicatConfig, UnicatMapping
from crisync.listener.unicat import UnicatListener
from crisync.listener.unicat_client import UnicatClient
from crisync.state.store import Store
from crisync.telemetry import Telemetry

UNICAT_PROJECT = "3f6c1a9e-8b2d-4e57-9c1a-6d0b2e4f8a13"
UNICAT_API_KEY = "unicat-canary-5d1e"
RESEARCH_OUTPUT_TYPE = "/dk/atira/pure/researchoutput/researchoutputtypes/othercontribution/other"


def record_mappings(organization: str) -> list[UnicatMapping]:
    """Persons to persons; publications to research outputs with what Pure requires."""
    research_output: dict[str, Any] = {
        "typeDiscriminator": "OtherContribution",
        "type": {"uri": RESEARCH_OUTPUT_TYPE},
        "category": {"uri": "/dk/atira/pure/researchoutput/category/research"},
        "language": {"uri": "/dk/atira/pure/core/languages/en_GB"},
        "contributors": [],
        "managingOrganization": {"systemName": "Organization", "uuid": organization},
        "publicationStatuses": [
            {"publicationStatus": {"uri": "/dk/atira/pure/researchoutput/status/published"}}
        ],
    }
    return [
        UnicatMapping(
            definition="person",
            pure_type="persons",
            id_source="synchronisedUnifiedPerson",
            fields={"firstname": "name.firstName", "lastname": "name.lastName"},
        ),
        UnicatMapping(
            definition="publication",
            pure_type="research-outputs",
            id_source="synchronisedResearchOutput",
            fields={"title": "title.value"},
            static=research_output,
        ),
    ]


def unicat_settings(url: str, organization: str, **changes: Any) -> UnicatConfig:
    settings: dict[str, Any] = {
        "url": url,
        "project": UNICAT_PROJECT,
        "api_key": UNICAT_API_KEY,
        "mappings": record_mappings(organization),
        "poll_interval": 0.5,
        "job_stall_after": 60,
    }
    return UnicatConfig(**{**settings, **changes})


def listener_for(
    session: aiohttp.ClientSession,
    settings: UnicatConfig,
    store: Store,
    *,
    topic_prefix: str | None = "crisync",
    telemetry: Telemetry | None = None,
) -> UnicatListener:
    telemetry = telemetry or Telemetry()
    return UnicatListener(
        settings,
        UnicatClient(session, settings, telemetry=telemetry),
        store,
        work_ready=asyncio.Event(),
        outbox_ready=asyncio.Event(),
        stopping=asyncio.Event(),
        telemetry=telemetry,
        topic_prefix=topic_prefix,
    )
