"""From a source object to the Pure content that represents it.

This first mapping is fixed: an Elements publication becomes a research output,
an Elements user a person. Each carries a PrimaryId identifier whose idSource is
the one Pure's own synchronisation would use for that content type.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from crisync.config.model import PureConfig, UnicatConfig
from crisync.errors import PermanentError
from crisync.handlers.unicat_mapping import unicat_target
from crisync.state.inbox import InboxEvent

RESEARCH_OUTPUT_TYPE = "/dk/atira/pure/researchoutput/researchoutputtypes/othercontribution/other"
RESEARCH_OUTPUT_CATEGORY = "/dk/atira/pure/researchoutput/category/research"
PUBLISHED = "/dk/atira/pure/researchoutput/status/published"
LANGUAGES = {
    "en": "/dk/atira/pure/core/languages/en_GB",
    "de": "/dk/atira/pure/core/languages/de_DE",
    "fr": "/dk/atira/pure/core/languages/fr_FR",
    "nl": "/dk/atira/pure/core/languages/nl_NL",
}
UNDEFINED_LANGUAGE = "/dk/atira/pure/core/languages/und"


@dataclass(frozen=True)
class PureTarget:
    pure_type: str  # the API's path segment, e.g. research-outputs
    id_source: str
    primary_id: str
    body: dict[str, Any]  # the properties crisync owns, identifiers included

    @property
    def payload_hash(self) -> str:
        canonical = json.dumps(self.body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def primary_identifier(id_source: str, value: str) -> dict[str, str]:
    return {"typeDiscriminator": "PrimaryId", "idSource": id_source, "value": value}


def to_pure(
    event: InboxEvent, config: PureConfig, unicat: UnicatConfig | None = None
) -> PureTarget:
    primary_id = f"{event.source}:{event.kind}:{event.key}"
    if (event.source, event.kind) == ("elements", "publication"):
        id_source = "synchronisedResearchOutput"
        body = _research_output(event.payload, config)
        pure_type = "research-outputs"
    elif (event.source, event.kind) == ("elements", "user"):
        id_source = "synchronisedUnifiedPerson"
        body = _person(event.payload)
        pure_type = "persons"
    elif (event.source, event.kind) == ("unicat", "record") and unicat is not None:
        mapped = unicat_target(event.payload, unicat.mappings)
        pure_type, id_source, body = mapped.pure_type, mapped.id_source, mapped.body
    else:
        raise PermanentError(f"no Pure mapping for {event.source} {event.kind}", api="crisync")
    body["identifiers"] = [primary_identifier(id_source, primary_id)]
    return PureTarget(pure_type, id_source, primary_id, body)


def _research_output(payload: dict[str, Any], config: PureConfig) -> dict[str, Any]:
    fields = payload.get("fields") or {}
    title = fields.get("title")
    if not title:
        raise PermanentError(f"publication {payload.get('id')} has no title", api="crisync")
    status: dict[str, Any] = {"publicationStatus": {"uri": PUBLISHED}}
    date = fields.get("publication-date") or {}
    if "year" in date:
        status["publicationDate"] = {k: date[k] for k in ("year", "month", "day") if k in date}
    return {
        "typeDiscriminator": "OtherContribution",
        "title": {"value": title},
        "type": {"uri": RESEARCH_OUTPUT_TYPE},
        "category": {"uri": RESEARCH_OUTPUT_CATEGORY},
        "language": {"uri": LANGUAGES.get(fields.get("language") or "", UNDEFINED_LANGUAGE)},
        # Contributors are linked once persons are replicated (see the references issue).
        "contributors": [],
        "managingOrganization": {
            "systemName": "Organization",
            "uuid": config.managing_organization,
        },
        "publicationStatuses": [status],
    }


def _person(payload: dict[str, Any]) -> dict[str, Any]:
    fields = payload.get("fields") or {}
    last_name = fields.get("last-name")
    if not last_name:
        raise PermanentError(f"user {payload.get('id')} has no last name", api="crisync")
    name = {"lastName": last_name}
    if fields.get("first-name"):
        name["firstName"] = fields["first-name"]
    return {"name": name}
