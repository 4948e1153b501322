"""The Pure content types crisync can write, with what Pure's own synchronisation calls them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PureType:
    system_name: str  # systemName in references to content of this type
    id_source: str  # the PrimaryId idSource Pure's own synchronisation uses for it


# By API path segment. The idSources are the table in "Pure API: Synchronization
# workaround"; equipment and activities have no endpoint in the 2023-08 API contract,
# newer Pure API versions add them.
PURE_TYPES: dict[str, PureType] = {
    "activities": PureType("Activity", "synchronisedActivity"),
    "applications": PureType("Application", "synchronisedUnifiedApplication"),
    "awards": PureType("Award", "synchronisedUnifiedAward"),
    "equipment": PureType("Equipment", "synchronisedUnifiedEquipment"),
    "events": PureType("Event", "synchronisedEvent"),
    "external-organizations": PureType(
        "ExternalOrganization", "synchronisedUnifiedExternalOrganisation"
    ),
    "external-persons": PureType("ExternalPerson", "synchronisedUnifiedExternalPerson"),
    "journals": PureType("Journal", "synchronisedJournal"),
    "organizations": PureType("Organization", "synchronisedUnifiedOrganisation"),
    "persons": PureType("Person", "synchronisedUnifiedPerson"),
    "projects": PureType("Project", "synchronisedUnifiedProject"),
    "publishers": PureType("Publisher", "synchronisedPublisher"),
    "research-outputs": PureType("ResearchOutput", "synchronisedResearchOutput"),
    "users": PureType("User", "synchronisedUnifiedUser"),
}

# Properties crisync manages itself: a mapping rule may not set them. (A rule may give
# identifiers: crisync adds its PrimaryId to them.)
RESERVED_PROPERTIES = frozenset({"customDefinedFields", "uuid", "version", "pureId", "systemName"})

# What a research output's class requires beyond every research output's properties
# (from the contract; tests/handlers/pure/test_types.py keeps it so), and what to do
# about each when a mapping cannot give it.
CLASS_REQUIRES: dict[str, tuple[str, ...]] = {
    "ContributionToBookAnthology": ("hostPublicationTitle",),
    "ContributionToJournal": ("journalAssociation",),
    "ContributionToPeriodical": ("journalAssociation",),
}
