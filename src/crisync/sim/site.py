"""A Pure that already holds what a real one holds when crisync first meets it.

Built from an Elements simulator's world, as the other systems of a real site would have
filled Pure before crisync arrived:

- HR's synchronisation: organisations (the faculties users belong to, under a university)
  and a person for every Elements user with a proprietary-id, carrying that HR employee id
  as a PrimaryId of idSource ``synchronisedUnifiedPerson``;
- Scopus imports and manual entry: research outputs for most publications
  that have a DOI or a Scopus record, with the DOI in a ``DoiElectronicVersion`` (written
  as Pure's users write it, not always as Elements does) and the Scopus id as a PrimaryId;
- what real data has besides: one DOI on two research outputs (a duplicate import),
  namesakes, and persons and research outputs that Elements knows nothing of.

Everything goes in through `PureSimulator.seed`, so it is valid against the contract, and
the same Elements world and seed always make the same site.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from crisync.handlers.pure.sim import EDITOR, PureSimulator
from crisync.listener.elements.sim import (
    ElementsSimulator,
    PublicationSnapshot,
    UserSnapshot,
)
from crisync.sim.journals import JOURNALS

HR_SYNC = "hr-sync"  # createdBy of what HR's synchronisation made
SCOPUS_IMPORT = "scopus-import"  # createdBy of what a Scopus import made
HR_ID_SOURCE = "synchronisedUnifiedPerson"
SCOPUS_ID_SOURCE = "Scopus"
OUTPUT_SHARE = 0.9  # of the publications with a DOI or Scopus record, those already in Pure

_NAMESAKES_SHOWN = 5  # in a large world most names are shared
_UNIVERSITY = "Simulated University"
_ORGANISATION_TYPES = "/dk/atira/pure/organisation/organisationtypes/organisation"
_OUTPUT_TYPES = "/dk/atira/pure/researchoutput/researchoutputtypes"
_AUTHOR = "/dk/atira/pure/researchoutput/roles/contributor/author"
_PUBLISHED = "/dk/atira/pure/researchoutput/status/published"
_LANGUAGES = {
    "en": "/dk/atira/pure/core/languages/en_GB",
    "de": "/dk/atira/pure/core/languages/de_DE",
    "fr": "/dk/atira/pure/core/languages/fr_FR",
}
_UNDETERMINED = "/dk/atira/pure/core/languages/und"
# Elements publication type → the research output class and type a Scopus import makes.
_CLASSES = {
    "journal-article": ("ContributionToJournal", "contributiontojournal/article"),
    "conference": ("ContributionToConference", "contributiontoconference/paper"),
    "book": ("BookAnthology", "bookanthology/book"),
    "chapter": ("ContributionToBookAnthology", "contributiontobookanthology/chapter"),
}
_OTHER = ("OtherContribution", "othercontribution/other")
# HR persons Elements does not know (staff who never publish), and manual entries.
_OTHER_STAFF = (("Grace", "Hopper"), ("Alan", "Turing"), ("Emmy", "Noether"))
_MANUAL_TITLES = (
    "Annual report of the research office",
    "Minutes of the ethics committee",
    "A dataset of campus energy use",
)


@dataclass(frozen=True)
class Namesakes:
    """Pure persons of one name: matching an author by name alone is ambiguous."""

    first_name: str
    last_name: str
    hr_ids: tuple[str, ...]  # their PrimaryIds, one per Pure person
    elements_user_ids: tuple[int, ...]  # the Elements users of that name


@dataclass
class SiteSummary:
    """What `populate_site` seeded."""

    counts: Counter[str] = field(default_factory=Counter)  # by content type (URL segment)
    persons: dict[int, str] = field(default_factory=dict)  # Elements user id → person uuid
    outputs: dict[int, str] = field(default_factory=dict)  # Elements publication id → uuid
    with_scopus_id: int = 0  # research outputs carrying a publication's Scopus id
    shared_doi: str = ""  # bare, lower case; on two research outputs
    shared_doi_publication: int | None = None  # the Elements publication that has it
    shared_doi_outputs: tuple[str, ...] = ()
    namesakes: tuple[Namesakes, ...] = ()

    def lines(self) -> list[str]:
        """The summary in words, for the simulator's banner and the demo."""
        counts = ", ".join(f"{count} {name}" for name, count in sorted(self.counts.items()))
        lines = [
            f"  seeded: {counts}",
            f"  {len(self.persons)} persons from HR are Elements users (PrimaryId "
            f"{HR_ID_SOURCE} = proprietary-id); "
            f"{self.counts['persons'] - len(self.persons)} are not",
            f"  {len(self.outputs)} research outputs carry an Elements publication's DOI or "
            f"Scopus id ({self.with_scopus_id} the Scopus id)",
        ]
        if self.shared_doi_publication is not None:
            lines.append(
                f"  DOI {self.shared_doi} (Elements publication {self.shared_doi_publication}) "
                f"is on {len(self.shared_doi_outputs)} research outputs"
            )
        lines.extend(
            f"  namesakes: {n.first_name} {n.last_name} (HR ids {', '.join(n.hr_ids)}; "
            f"Elements users {', '.join(map(str, n.elements_user_ids)) or 'none'})"
            for n in self.namesakes[:_NAMESAKES_SHOWN]
        )
        if len(self.namesakes) > _NAMESAKES_SHOWN:
            lines.append(f"  ... and {len(self.namesakes) - _NAMESAKES_SHOWN} more namesakes")
        return lines


def populate_site(
    pure: PureSimulator, elements: ElementsSimulator, *, seed: int = 1
) -> SiteSummary:
    """Seed `pure` with the content a real site holds for the world `elements` serves."""
    return _Site(pure, random.Random(f"site-{seed}")).populate(  # noqa: S311 - test data
        elements.users(), elements.publications()
    )


class _Site:
    def __init__(self, pure: PureSimulator, rng: random.Random) -> None:
        self._pure = pure
        self._rng = rng
        self._summary = SiteSummary()
        self._faculties: dict[str, dict[str, str]] = {}  # name → reference
        self._university: dict[str, str] = {}
        self._journals: dict[str, dict[str, str]] = {}
        self._hr_ids: defaultdict[tuple[str, str], list[str]] = defaultdict(list)  # by name

    def populate(
        self, users: list[UserSnapshot], publications: list[PublicationSnapshot]
    ) -> SiteSummary:
        self._organisations(sorted({u.faculty for u in users if u.faculty is not None}))
        # Pure's journal list holds every journal the world names.
        self._journals = {
            issn: {"systemName": "Journal", "uuid": uuid}
            for issn, uuid in self._pure.journal_uuids.items()
        }
        for user in users:
            if user.proprietary_id is not None:
                self._summary.persons[user.id] = self._person(
                    user.first_name, user.last_name, user.proprietary_id, user.email, user.faculty
                )
        self._staff_elements_does_not_know(users)
        named = {u.id: u for u in users if u.id in self._summary.persons}
        for publication in publications:
            identified = publication.doi is not None or publication.scopus_id is not None
            if identified and self._rng.random() < OUTPUT_SHARE:
                uuid = self._output(publication, named)
                self._summary.outputs[publication.id] = uuid
        self._duplicate_import(publications, named)
        self._manual_entries()
        users_by_name: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
        for user in users:
            users_by_name[(user.first_name, user.last_name)].append(user.id)
        self._summary.namesakes = tuple(
            Namesakes(
                first_name=first,
                last_name=last,
                hr_ids=tuple(hr_ids),
                elements_user_ids=tuple(users_by_name[(first, last)]),
            )
            for (first, last), hr_ids in sorted(self._hr_ids.items())
            if len(hr_ids) > 1
        )
        return self._summary

    def _seed(self, content_type: str, body: dict[str, Any], by: str) -> dict[str, Any]:
        self._summary.counts[content_type] += 1
        return self._pure.seed(content_type, body, by=by)

    def _organisations(self, faculties: list[str]) -> None:
        self._university = self._organisation(_UNIVERSITY, "university", None)
        for name in faculties:
            self._faculties[name] = self._organisation(
                f"Faculty of {name}", "faculty", self._university
            )

    def _organisation(self, name: str, kind: str, parent: dict[str, str] | None) -> dict[str, str]:
        body: dict[str, Any] = {
            "name": {"en_GB": name},
            "type": {"uri": f"{_ORGANISATION_TYPES}/{kind}"},
            "lifecycle": {"startDate": "1990-01-01"},
        }
        if parent is not None:
            body["parents"] = [parent]
        return _reference("Organization", self._seed("organizations", body, HR_SYNC))

    def _person(
        self, first: str, last: str, hr_id: str, email: str | None, faculty: str | None
    ) -> str:
        association: dict[str, Any] = {
            "typeDiscriminator": "StaffOrganizationAssociation",
            "organization": self._faculties.get(faculty or "", self._university),
            "period": {"startDate": f"{self._rng.randint(1995, 2022)}-09-01"},
            "primaryAssociation": True,
            "affiliationId": hr_id,
        }
        if email is not None:
            association["emails"] = [
                {"type": {"uri": "/dk/atira/pure/person/personemailtypes/email"}, "value": email}
            ]
        body = {
            "name": {"firstName": first, "lastName": last},
            "identifiers": [_primary_id(HR_ID_SOURCE, hr_id)],
            "staffOrganizationAssociations": [association],
        }
        self._hr_ids[(first, last)].append(hr_id)
        return str(self._seed("persons", body, HR_SYNC)["uuid"])

    def _staff_elements_does_not_know(self, users: list[UserSnapshot]) -> None:
        """HR persons absent from Elements; one bears an HR person's name, not their id."""
        # HR ids of Elements users have seven digits and start with 00: these never clash.
        hr_ids = iter(range(1_000_001, 1_000_001 + len(_OTHER_STAFF) + 1))
        for first, last in _OTHER_STAFF:
            self._person(first, last, str(next(hr_ids)), None, None)
        in_hr = [u for u in users if u.proprietary_id is not None]
        if in_hr:
            namesake = self._rng.choice(in_hr)
            self._person(namesake.first_name, namesake.last_name, str(next(hr_ids)), None, None)

    def _output(self, publication: PublicationSnapshot, named: dict[int, UserSnapshot]) -> str:
        """The research output a Scopus import (or an editor, without Scopus) made of it."""
        body = self._output_body(
            publication.title, publication.type_name, publication.year, publication.journal
        )
        body["language"] = {"uri": _LANGUAGES.get(publication.language or "", _UNDETERMINED)}
        authors = [named[i] for i in publication.author_ids if i in named]
        body["contributors"] = [
            {
                "typeDiscriminator": "InternalContributorAssociation",
                "name": {"firstName": author.first_name, "lastName": author.last_name},
                "person": {"systemName": "Person", "uuid": self._summary.persons[author.id]},
                "role": {"uri": _AUTHOR},
            }
            for author in authors
        ]
        if authors and authors[0].faculty in self._faculties:
            body["managingOrganization"] = self._faculties[str(authors[0].faculty)]
        if publication.doi is not None:
            body["electronicVersions"] = [_doi_version(self._written(publication.doi))]
        by = EDITOR
        if publication.scopus_id is not None:
            scopus = publication.scopus_id.removeprefix("2-s2.0-")
            body["identifiers"] = [_primary_id(SCOPUS_ID_SOURCE, scopus)]
            self._summary.with_scopus_id += 1
            by = SCOPUS_IMPORT
        return str(self._seed("research-outputs", body, by)["uuid"])

    def _output_body(
        self,
        title: str,
        type_name: str,
        year: int | None,
        journal: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """A research output's required properties, with what its class requires besides."""
        discriminator, output_type = _CLASSES.get(type_name, _OTHER)
        date = {"year": year if year is not None else self._rng.randint(1998, 2024)}
        body: dict[str, Any] = {
            "typeDiscriminator": discriminator,
            "title": {"value": title},
            "type": {"uri": f"{_OUTPUT_TYPES}/{output_type}"},
            "category": {"uri": "/dk/atira/pure/researchoutput/category/research"},
            "language": {"uri": _UNDETERMINED},
            "contributors": [],
            "managingOrganization": self._university,
            "publicationStatuses": [
                {"publicationStatus": {"uri": _PUBLISHED}, "publicationDate": date}
            ],
        }
        if discriminator == "ContributionToJournal":
            # Elements' journal for the article: Pure holds every journal the world names.
            _, issn = journal or JOURNALS[0]
            body["journalAssociation"] = {"journal": self._journals[issn]}
        elif discriminator == "ContributionToBookAnthology":
            body["hostPublicationTitle"] = {"value": "Handbook of research methods"}
        return body

    def _written(self, doi: str) -> str:
        """A bare DOI as Pure's users enter it: mostly bare, sometimes a link or upper case."""
        return self._rng.choices((doi, doi.upper(), f"https://doi.org/{doi}"), (6, 1, 3))[0]

    def _duplicate_import(
        self, publications: list[PublicationSnapshot], named: dict[int, UserSnapshot]
    ) -> None:
        """One DOI on two research outputs: an editor entered again what Scopus imported.

        A publication without a Scopus id is preferred, so its DOI alone identifies it.
        """
        in_pure = [p for p in publications if p.doi is not None and p.id in self._summary.outputs]
        if not in_pure:
            return
        bare = [p for p in in_pure if p.scopus_id is None]
        chosen = self._rng.choice(bare or in_pure)
        duplicate = self._output(dataclasses.replace(chosen, scopus_id=None), named)
        self._summary.shared_doi = str(chosen.doi)
        self._summary.shared_doi_publication = chosen.id
        self._summary.shared_doi_outputs = (self._summary.outputs[chosen.id], duplicate)

    def _manual_entries(self) -> None:
        """Research outputs only Pure has, one with a DOI of its own."""
        for number, title in enumerate(_MANUAL_TITLES):
            body = self._output_body(title, "other", 2020 + number)
            if number == 0:
                body["electronicVersions"] = [_doi_version(f"10.5281/zenodo.{7_000_000 + number}")]
            self._seed("research-outputs", body, EDITOR)


def _reference(system_name: str, stored: dict[str, Any]) -> dict[str, str]:
    return {"systemName": system_name, "uuid": str(stored["uuid"])}


def _primary_id(source: str, value: str) -> dict[str, str]:
    return {"typeDiscriminator": "PrimaryId", "idSource": source, "value": value}


def _doi_version(doi: str) -> dict[str, str]:
    return {"typeDiscriminator": "DoiElectronicVersion", "doi": doi}
