"""The mapping engine: from a source object to the Pure content that represents it.

What an object becomes is configuration (crisync.mapping.rules): the engine applies its
mapping's property rules in order, writes the custom-defined fields it names, and adds the
PrimaryId identifier whose idSource is the one Pure's own synchronisation would use.
References to other content are resolved through `References`: content crisync
replicated (the mapping table) and external persons (one per identifier, or per name in a
context).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from crisync.errors import PermanentError, RetriableError
from crisync.handlers.pure.types import CLASS_REQUIRES, PURE_TYPES
from crisync.mapping.compare import PERSON_ID_SCHEMES, normalised
from crisync.mapping.expressions import first_value, normalise_key, parse_expression
from crisync.mapping.rules import (
    CustomFieldRule,
    MappingsConfig,
    MatchRule,
    ObjectMapping,
    PersonsRule,
    PropertyRule,
    RelationshipsRule,
)
from crisync.state.inbox import InboxEvent

log = structlog.get_logger("crisync.handlers.mapping")

PAYLOAD_HASH_BYTES = 16


@dataclass(frozen=True)
class MatchProbe:
    """A match rule with the source object's value for it, normalised."""

    rule: MatchRule
    value: str

    def describe(self) -> str:
        return f"{self.rule.where} = {self.value}"


@dataclass(frozen=True)
class PureContent:
    pure_type: str  # the API's path segment, e.g. research-outputs
    id_source: str
    primary_id: str
    body: dict[str, Any]  # the properties crisync owns, identifiers included
    # Top-level properties the mapping owns: an update overwrites them, and clears those
    # the body lacks. Identifiers, electronic versions and customDefinedFields are merged
    # entry by entry (replicate.merge_owned).
    owned: frozenset[str] = frozenset()
    match_key: str | None = None  # how people lists elsewhere recognise this object
    reference_key: tuple[str, ...] = ()  # expressions into the body giving the match key
    # How to find content Pure holds already, in order; only those the object has values for.
    probes: tuple[MatchProbe, ...] = ()
    create: bool = True  # False: only found content is taken over
    link_only: bool = False  # found and referred to, never written nor locked
    paths: tuple[str, ...] = ()  # the mapping's property paths, dotted, in the body

    def match_key_in(self, content: Mapping[str, Any]) -> str | None:
        """The match key of Pure content: this body, or content found in Pure."""
        return match_key_at(self.reference_key, content)

    @property
    def payload_hash(self) -> bytes:
        """The first 16 bytes of the body's SHA-256 digest: as sure a sign of a change as the
        whole digest, in a quarter of the room its hex took in every mapping row."""
        canonical = json.dumps(self.body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()[:PAYLOAD_HASH_BYTES]


@dataclass(frozen=True)
class ContentRef:
    system_name: str
    uuid: str

    def as_json(self) -> dict[str, str]:
        return {"systemName": self.system_name, "uuid": self.uuid}


# The target's name: in the mapping rows it writes and in the mappings that name it.
PURE = "pure"
# What a persons rule makes of a person, unless it says otherwise: a research output's
# contributor association with a Pure person, or with an external person.
INTERNAL_ASSOCIATION = "InternalContributorAssociation"
EXTERNAL_ASSOCIATION = "ExternalContributorAssociation"


@dataclass(frozen=True)
class ReplicatedPerson:
    """A person's replicated content and the match key people lists recognise it by."""

    ref: ContentRef
    match_key: str | None


def name_key_of(name: Mapping[str, Any]) -> str:
    return normalise_key([name.get("lastName") or "", name.get("firstName") or ""])


@dataclass(frozen=True)
class ExternalIdentity:
    """Who an external person is: an author identifier the record gives (an ORCID iD, a
    Scopus author id), else a name in a context."""

    name_key: str
    identifier: tuple[str, str] | None = None  # (scheme, normalised value)
    context: str | None = None  # normalised; None: the name alone

    @property
    def key(self) -> str:
        """What crisync remembers the person by (state/external_persons, its PrimaryId)."""
        if self.identifier is not None:
            return author_id_key(*self.identifier)
        if self.context is not None:
            return f"in:{self.context}|{self.name_key}"
        return self.name_key


def author_id_key(scheme: str, value: str) -> str:
    """An author identifier as one text: `orcid:0000000218250097`."""
    return f"{scheme}:{value}"


class ReferenceNotReplicatedError(RetriableError):
    """The object refers to content that is not in Pure yet: it waits and is tried again."""


class References(Protocol):
    """What the engine asks about content other than the object it maps."""

    async def content(self, source: str, kind: str, key: str) -> ContentRef | None:
        """The Pure content a source object was replicated to, if it was."""

    async def persons(self, source: str, kind: str, match_key: str) -> list[ContentRef]:
        """The replicated objects of a kind whose reference_key gives this match key."""

    async def related_persons(
        self, source: str, kind: str, keys: list[str]
    ) -> dict[str, ReplicatedPerson]:
        """Of these source objects, those replicated as persons, with their match keys."""

    async def still_to_replicate(self, source: str, kind: str, keys: list[str]) -> set[str]:
        """Of these source objects, those whose replication has not reached its outcome:
        an event of theirs waits (pending, being retried or handled, or dead until retried)."""

    async def external_person(
        self, name: Mapping[str, str], identity: ExternalIdentity
    ) -> ContentRef:
        """The external person of this identity, found or created in Pure."""

    async def find(
        self,
        content_type: str,
        probes: Iterable[MatchProbe],
        *,
        create: Mapping[str, Any] | None = None,
    ) -> ContentRef | None:
        """The one piece of content of the type the first probe with hits finds, if any;
        AmbiguousMatchError when it finds several. With `create`, what none finds is created
        from that body, once."""


def id_source_of(rules: ObjectMapping) -> str:
    """The mapping's idSource, else the one Pure's own synchronisation uses for the type."""
    return rules.id_source or PURE_TYPES[rules.type].id_source


def primary_id_of(source: str, kind: str, key: str) -> str:
    return f"{source}:{kind}:{key}"


def parse_primary_id(value: str) -> tuple[str, str, str] | None:
    """(source, kind, key) of a PrimaryId value crisync wrote, else None."""
    parts = value.split(":", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


def primary_identifier(id_source: str, value: str) -> dict[str, str]:
    return {"typeDiscriminator": "PrimaryId", "idSource": id_source, "value": value}


def mapping_for(event: InboxEvent, mappings: MappingsConfig) -> ObjectMapping:
    rules = mappings.for_kind(event.source, event.kind)
    if rules is None:
        raise PermanentError(f"no Pure mapping for {event.source} {event.kind}", api="crisync")
    return rules


def match_key_of(rules: ObjectMapping, body: Mapping[str, Any]) -> str | None:
    """The object's match key, from its Pure body; None when a part is missing."""
    return match_key_at(rules.reference_key, body)


def match_key_at(reference_key: Iterable[str], body: Mapping[str, Any]) -> str | None:
    expressions = list(reference_key)
    if not expressions:
        return None
    parts = [parse_expression(text).evaluate(body) for text in expressions]
    return None if any(part is None for part in parts) else normalise_key(parts)


async def to_pure(
    event: InboxEvent,
    mappings: MappingsConfig,
    references: References,
    *,
    managing_organization: str,
) -> PureContent:
    primary_id = primary_id_of(event.source, event.kind, event.key)
    rules = mapping_for(event, mappings)
    builder = _Builder(event, mappings, references, managing_organization)
    body = await builder.body(rules.properties)
    if rules.custom_fields:
        body["customDefinedFields"] = {
            name: builder.custom_field(name, rule) for name, rule in rules.custom_fields.items()
        }
    missing = [
        name
        for name in CLASS_REQUIRES.get(body.get("typeDiscriminator", ""), ())
        if name not in body
    ]
    if missing:
        raise builder.invalid(
            f"a {body['typeDiscriminator']} needs {', '.join(missing)}, which the mapping gave "
            "no value (for a journal: is the journal in Pure, by its ISSN or title?)"
        )
    id_source = id_source_of(rules)
    # The mapping's own identifiers (a Scopus id, say), then crisync's PrimaryId.
    body["identifiers"] = [*body.get("identifiers", []), primary_identifier(id_source, primary_id)]
    return PureContent(
        rules.type,
        id_source,
        primary_id,
        body,
        rules.owned_properties,
        match_key_of(rules, body),
        tuple(rules.reference_key),
        probes_of(rules.match, event.payload),
        create=rules.create,
        link_only=rules.link_only,
        paths=tuple(rules.properties),
    )


def probes_of(rules: Iterable[MatchRule], payload: Mapping[str, Any]) -> tuple[MatchProbe, ...]:
    """The match rules the source object has a value for, with that value."""
    probes = []
    for rule in rules:
        value = normalised(rule.compare, first_value(rule.from_, payload))
        if value is not None:
            probes.append(MatchProbe(rule, value))
    return tuple(probes)


class _Builder:
    """Evaluates one event's rules."""

    def __init__(
        self,
        event: InboxEvent,
        mappings: MappingsConfig,
        references: References,
        managing_organization: str,
    ) -> None:
        self._event = event
        self._payload = event.payload
        self._mappings = mappings
        self._references = references
        self._managing_organization = managing_organization

    def invalid(self, message: str) -> PermanentError:
        event = self._event
        return PermanentError(f"{event.source} {event.kind} {event.key}: {message}", api="crisync")

    async def body(self, properties: Mapping[str, PropertyRule]) -> dict[str, Any]:
        """The properties' values at their paths."""
        body: dict[str, Any] = {}
        for path, rule in properties.items():
            value = await self.value(path, rule)
            if value is not None:
                _set_path(body, path, value)
        return body

    async def value(self, path: str, rule: PropertyRule) -> Any:
        kind = rule.kind
        value: Any
        if kind == "value":
            value = copy.deepcopy(rule.value)
        elif kind == "source":
            value = self._source_value(rule.from_, rule.lookup, rule.default)
            if value is not None and rule.as_ is not None:
                value = _filled(rule.as_, value)
        elif kind == "reference":
            value = await self._reference(path, rule)
        elif kind == "entries":
            listed = [await self.value(path, entry) for entry in rule.entries]
            value = [entry for entry in listed if entry is not None] or None
        elif kind == "find":
            assert rule.find is not None  # the kind says so; narrows the type
            probes = probes_of(rule.match, self._payload)
            creating = None
            if rule.create is not None and probes:
                creating = await self.body(rule.create)
            found = await self._references.find(rule.find, probes, create=creating)
            value = None if found is None else found.as_json()
        else:
            assert rule.persons is not None  # the kind says so; narrows the type
            value = await self._persons(rule.persons)
        if value is None and rule.required:
            raise self.invalid(f"no value for {path} (from {', '.join(rule.from_) or '-'})")
        return value

    def _source_value(self, expressions: list[str], lookup: str | None, default: Any) -> Any:
        value = first_value(expressions, self._payload)
        if lookup is not None and value is not None:
            value = self._mappings.look_up(lookup, value)
        return copy.deepcopy(default) if value is None else value

    async def _reference(self, path: str, rule: PropertyRule) -> Any:
        found = first_value(rule.from_, self._payload) if rule.reference else None
        keys = found if isinstance(found, list) else [] if found is None else [found]
        refs = []
        for key in keys:
            assert rule.reference is not None  # keys come only with the kind
            if isinstance(key, dict | list):
                raise self.invalid(f"{path}: {key!r} is not a key")
            ref = await self._references.content(self._event.source, rule.reference, str(key))
            if ref is None:
                raise ReferenceNotReplicatedError(
                    f"{self._event.source} {self._event.kind} {self._event.key}: {path} refers "
                    f"to {self._event.source} {rule.reference} {key}, not in Pure yet",
                    api="crisync",
                )
            refs.append(ref.as_json())
        if not refs and rule.fallback == "managing-organization":
            refs.append(ContentRef("Organization", self._managing_organization).as_json())
        if not refs:
            return None
        return refs if rule.many else refs[0]

    async def _persons(self, rule: PersonsRule) -> list[dict[str, Any]]:
        entries = self._person_entries(rule)
        if rule.relationships is not None:
            linked = await self._related_persons(rule, rule.relationships, entries)
        else:
            linked = {}
            for index, (entry, _) in enumerate(entries):
                person = await self._replicated_person(rule, entry)
                if person is not None:
                    linked[index] = person
        associations = []
        for index, (entry, name) in enumerate(entries):
            association = {"typeDiscriminator": rule.internal or INTERNAL_ASSOCIATION, "name": name}
            association["role"] = {"uri": rule.role}
            person = linked.get(index)
            if person is not None:
                association["person"] = person.as_json()
            elif rule.external is not None:
                identity = self._external_identity(rule, entry, name)
                external = await self._references.external_person(name, identity)
                association["typeDiscriminator"] = rule.external or EXTERNAL_ASSOCIATION
                association["externalPerson"] = external.as_json()
            else:
                continue
            associations.append(association)
        return associations

    def _person_entries(self, rule: PersonsRule) -> list[tuple[Mapping[str, Any], dict[str, str]]]:
        """The people list's entries that name somebody, each with its Pure name."""
        found = first_value(rule.from_, self._payload)
        items = [found] if isinstance(found, dict) else found if isinstance(found, list) else []
        entries = []
        for entry in items:
            last = first_value(rule.last_name, entry) if isinstance(entry, dict) else None
            if last is None:
                continue  # nobody to name
            first = first_value(rule.first_name, entry)
            name = {"lastName": str(last)}
            if first is not None:
                name = {"firstName": str(first), **name}
            entries.append((entry, name))
        return entries

    def _external_identity(
        self, rule: PersonsRule, entry: Mapping[str, Any], name: Mapping[str, str]
    ) -> ExternalIdentity:
        identifier = next(
            (
                (scheme, value)
                for scheme, expressions in rule.identifier.items()
                if (
                    value := normalised(
                        PERSON_ID_SCHEMES[scheme].comparison, first_value(expressions, entry)
                    )
                )
                is not None
            ),
            None,
        )
        context = [parse_expression(text).evaluate(self._payload) for text in rule.context]
        return ExternalIdentity(
            name_key_of(name),
            identifier,
            normalise_key(context) if context and None not in context else None,
        )

    async def _related_persons(
        self,
        rule: PersonsRule,
        relationships: RelationshipsRule,
        entries: list[tuple[Mapping[str, Any], dict[str, str]]],
    ) -> dict[int, ContentRef]:
        """Entry index → the person of a related object it names; a name links nobody else.

        Each related person takes the first entry whose match parts equal its own; those
        left take the first entry that agrees (same first part, the others one a prefix of
        the other: "J" and "JL"), so a record's shorter initials still link. Entries of one
        name alike are told apart by nothing but their order: the related persons take them
        in it, the rest are external.
        """
        event = self._event
        keys = self._related_keys(rule.kind, relationships)
        replicated = await self._references.related_persons(event.source, rule.kind, keys)
        absent = [key for key in keys if key not in replicated]
        if absent:
            await self._wait_for_related(rule.kind, absent)
            # Read again: a person whose event was completed between the two reads is in
            # the mapping now (its row and the event's completion are one transaction).
            replicated |= await self._references.related_persons(event.source, rule.kind, absent)
        people: list[tuple[str, ContentRef, list[str]]] = []
        for key in keys:
            found = replicated.get(key)
            if found is None or found.match_key is None:
                # Handled without a Pure person (no HR person to link, out of scope,
                # deleted), or one with no match key: its entry names an external person.
                log.debug(
                    "mapping.related_person_not_replicated",
                    source=event.source,
                    kind=event.kind,
                    key=event.key,
                    person=key,
                )
                continue
            people.append((key, found.ref, found.match_key.split("|")))
        parts = [self._match_parts(rule, entry) for entry, _ in entries]
        linked: dict[int, ContentRef] = {}
        for exact in (True, False):
            unmatched = []
            for key, ref, own in people:
                index = next(
                    (
                        i
                        for i, theirs in enumerate(parts)
                        if i not in linked and theirs is not None and _agree(own, theirs, exact)
                    ),
                    None,
                )
                if index is None:
                    unmatched.append((key, ref, own))
                else:
                    linked[index] = ref
            people = unmatched
        for key, _, own in people:
            log.warning(
                "mapping.related_person_unnamed",
                source=event.source,
                kind=event.kind,
                key=event.key,
                person=key,
                match_key="|".join(own),
            )
        return linked

    async def _wait_for_related(self, kind: str, absent: list[str]) -> None:
        """ReferenceNotReplicatedError when a related object without a person is still to be
        replicated: its person may yet come, and an external author now would stay one until
        the object changes again. One handled without a person is no reason to wait."""
        event = self._event
        coming = await self._references.still_to_replicate(event.source, kind, absent)
        if coming:
            raise ReferenceNotReplicatedError(
                f"{event.source} {event.kind} {event.key}: related {event.source} {kind} "
                f"{', '.join(key for key in absent if key in coming)} not replicated yet",
                api="crisync",
            )

    def _related_keys(self, kind: str, relationships: RelationshipsRule) -> list[str]:
        """The keys of the related objects of `kind` the rule admits, in their order."""
        found = first_value(relationships.from_, self._payload)
        if found is None and not any(_holds(text, self._payload) for text in relationships.from_):
            raise self.invalid(
                f"no relationships in {', '.join(relationships.from_)}: the source must read "
                "them (Elements: [elements] relationships) for persons.relationships"
            )
        keys: list[str] = []
        for item in found if isinstance(found, list) else []:
            if (
                isinstance(item, dict)
                and item.get("category") == kind
                and item.get("type") in relationships.types
                and (item.get("visible") is True or not relationships.visible_only)
                and (item.get("claimed") is True or not relationships.claimed_only)
                and item.get("id") is not None
                and str(item["id"]) not in keys
            ):
                keys.append(str(item["id"]))
        return keys

    @staticmethod
    def _match_parts(rule: PersonsRule, entry: Mapping[str, Any]) -> list[str] | None:
        parts = [parse_expression(text).evaluate(entry) for text in rule.match]
        return None if any(part is None for part in parts) else normalise_key(parts).split("|")

    async def _replicated_person(
        self, rule: PersonsRule, entry: Mapping[str, Any]
    ) -> ContentRef | None:
        source = self._event.source
        if rule.key:
            key = first_value(rule.key, entry)
            if key is None:
                return None
            ref = await self._references.content(source, rule.kind, str(key))
            if ref is None:
                raise ReferenceNotReplicatedError(
                    f"{source} {self._event.kind} {self._event.key}: person {source} "
                    f"{rule.kind} {key} is not in Pure yet",
                    api="crisync",
                )
            return ref
        if not rule.match:
            return None
        parts = self._match_parts(rule, entry)
        if parts is None:
            return None
        match_key = "|".join(parts)
        found = await self._references.persons(source, rule.kind, match_key)
        if len(found) > 1:
            # Two people share the identifying values: linking either could be wrong. Debug:
            # a common name gives this for every publication of its authors.
            log.debug(
                "mapping.ambiguous_person",
                source=source,
                kind=self._event.kind,
                key=self._event.key,
                match_key=match_key,
                candidates=len(found),
            )
        return found[0] if len(found) == 1 else None

    def custom_field(self, name: str, rule: CustomFieldRule) -> dict[str, Any]:
        """The field with its value, or without one, which clears it in Pure."""
        raw = self._source_value(rule.from_, rule.lookup, rule.default)
        field: dict[str, Any] = {"typeDiscriminator": rule.type}
        if raw is None:
            return field
        value = _coerce_custom(rule.type, raw)
        if value is None:
            raise self.invalid(f"custom-defined field {name}: {raw!r} is no {rule.type}")
        field["value"] = value
        return field


def _filled(template: Any, value: Any) -> Any:
    """The template with every string "$" replaced by the value."""
    if template == "$":
        return value
    if isinstance(template, dict):
        return {name: _filled(item, value) for name, item in template.items()}
    if isinstance(template, list):
        return [_filled(item, value) for item in template]
    return template


def _holds(expression: str, document: Any) -> bool:
    """Whether the document has the expression's path at all, empty or not."""
    value = document
    for segment in parse_expression(expression).path:
        if not isinstance(value, dict) or segment not in value:
            return False
        value = value[segment]
    return True


def _agree(own: list[str], theirs: list[str], exact: bool) -> bool:
    """Whether a person's match parts and an entry's name the same person."""
    if exact or len(own) != len(theirs):
        return own == theirs
    if own[0] != theirs[0]:
        return False
    for mine, its in zip(own[1:], theirs[1:], strict=True):
        shorter, longer = sorted((mine.replace(" ", ""), its.replace(" ", "")), key=len)
        if not longer.startswith(shorter):
            return False
    return True


def _coerce_custom(field_type: str, value: Any) -> Any:
    if field_type == "Classification":
        return {"uri": value} if isinstance(value, str) else None
    filter_name = {"Boolean": "boolean", "Date": "date", "Decimal": "number", "String": "string"}
    return parse_expression(f"v|{filter_name[field_type]}").evaluate({"v": value})


def _set_path(body: dict[str, Any], path: str, value: Any) -> None:
    """Put a value at a dotted path, making the objects and lists on the way."""
    segments = path.split(".")
    container: Any = body
    for segment, following in itertools.pairwise(segments):
        fresh: Any = [] if following.isdigit() else {}
        container = _child(container, segment, fresh, path)
    last = segments[-1]
    if isinstance(container, list):
        _pad(container, last, path)[int(last)] = value
    else:
        container[last] = value


def _child(container: Any, segment: str, fresh: Any, path: str) -> Any:
    if isinstance(container, list):
        items = _pad(container, segment, path)
        index = int(segment)
        if not isinstance(items[index], dict | list):
            items[index] = fresh
        return items[index]
    existing = container.get(segment)
    if not isinstance(existing, dict | list):
        container[segment] = existing = fresh
    return existing


def _pad(items: list[Any], segment: str, path: str) -> list[Any]:
    if not segment.isdigit():
        raise PermanentError(f"property path {path}: {segment!r} indexes a list", api="crisync")
    while len(items) <= int(segment):
        items.append(None)
    return items
