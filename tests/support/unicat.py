"""What the Unicat tests share: the project, its mappings, a listener to poll with."""

from __future__ import annotations

from typing import Any

import aiohttp

from crisync.lifecycle import Lifecycle
from crisync.listener.base import SourceContext
from crisync.listener.unicat.client import UnicatClient
from crisync.listener.unicat.config import UnicatConfig
from crisync.listener.unicat.feed import UnicatListener
from crisync.mapping.rules import MappingsConfig
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.support.mappings import users_created

UNICAT_PROJECT = "3f6c1a9e-8b2d-4e57-9c1a-6d0b2e4f8a13"
UNICAT_API_KEY = "unicat-canary-5d1e"
RESEARCH_OUTPUT_TYPE = "/dk/atira/pure/researchoutput/researchoutputtypes/othercontribution/other"
# The definitions of the simulated project's records crisync reads, each a kind of its own.
DEFINITIONS = ["person", "publication"]


def unicat_mappings(organization: str) -> MappingsConfig:
    """Persons to persons; publications to research outputs with what Pure requires (and
    Elements users created as persons, as in the other tests)."""
    return users_created(unicat_mapping_tables(organization))


def unicat_mapping_tables(organization: str) -> dict[str, Any]:
    """The tables of `unicat_mappings`, as [mappings] holds them."""
    return {
        "unicat": {
            "person": {
                "pure_type": "persons",
                "properties": {
                    "name.firstName": {"from": "fields.firstname"},
                    "name.lastName": {"from": "fields.lastname"},
                },
            },
            "publication": {
                "pure_type": "research-outputs",
                "properties": {
                    "typeDiscriminator": {"value": "OtherContribution"},
                    "type.uri": {"value": RESEARCH_OUTPUT_TYPE},
                    "category.uri": {"value": "/dk/atira/pure/researchoutput/category/research"},
                    "language.uri": {"value": "/dk/atira/pure/core/languages/en_GB"},
                    "contributors": {"value": []},
                    "managingOrganization": {
                        "value": {"systemName": "Organization", "uuid": organization}
                    },
                    "publicationStatuses": {
                        "value": [
                            {
                                "publicationStatus": {
                                    "uri": "/dk/atira/pure/researchoutput/status/published"
                                }
                            }
                        ]
                    },
                    "title.value": {"from": "fields.title"},
                },
            },
        }
    }


def unicat_settings(url: str, **changes: object) -> UnicatConfig:
    settings: dict[str, object] = {
        "url": url,
        "project": UNICAT_PROJECT,
        "api_key": UNICAT_API_KEY,
        "definitions": DEFINITIONS,
        "poll_interval": 0.5,
        "job_stall_after": 60,
    }
    return UnicatConfig.model_validate({**settings, **changes})


def listener_for(
    session: aiohttp.ClientSession,
    settings: UnicatConfig,
    store: Store,
    *,
    topic_prefix: str | None = "crisync",
    telemetry: Telemetry | None = None,
    life: Lifecycle | None = None,
) -> UnicatListener:
    telemetry = telemetry or Telemetry()
    context = SourceContext(store, session, life or Lifecycle(), telemetry, topic_prefix)
    return UnicatListener(settings, UnicatClient(session, settings, telemetry=telemetry), context)
