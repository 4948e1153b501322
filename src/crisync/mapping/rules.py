"""Mappings: what each kind of source object becomes in a target, declared as configuration.

A mapping names the target and its content type, the PrimaryId idSource, what happens on a
deletion, and rules that build the target's properties from the source payload. Each
target ships built-in mappings beside its code; a mapping file named in ``[mappings]
file`` and the ``[mappings]`` section itself are layered over them: a mapping of the same
source and kind replaces the earlier one whole, a lookup table gets its entries added or
overridden. Source values are named by expressions (`crisync.mapping.expressions`).
"""

from __future__ import annotations

import copy
import functools
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_validator,
)

from crisync.mapping.compare import PERSON_ID_SCHEMES, Comparison
from crisync.mapping.expressions import expression_list

DeletePolicy = Literal["unlock", "delete", "ignore"]
CustomFieldType = Literal["Boolean", "Classification", "Date", "Decimal", "String"]
# The only fallback a reference knows: the organisation the target names as managing.
Fallback = Literal["managing-organization"]


class Rules(BaseModel):
    """Unknown keys are errors; `from` is a Python keyword, so it is an alias."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )


class RelationshipsRule(Rules):
    """Which of the payload's relationships say that a related object is one of the people.

    The payload's `relationships` (listener/elements/relationships.py) name the related
    objects; those of the rule's `kind`, one of `types`, visible and claimed unless said
    otherwise, are the people the list may link to.
    """

    from_: list[str] = Field(["relationships"], alias="from")
    types: list[str] = Field(["publication-user-authorship"], min_length=1)
    visible_only: bool = True
    claimed_only: bool = True

    _expressions = field_validator("from_", mode="before")(expression_list)


class PersonsRule(Rules):
    """A list of people in the payload → associations with the target's persons or external ones.

    A person is recognised as replicated content by `key` (expressions giving the source
    key of the person's own object: when it is not replicated yet, the object waits), by
    `relationships` (the payload's relationships name the related objects; `match` pairs
    them with the entries, among the related objects only), or by `match` alone (the entry
    compared with the `reference_key` of every `kind` object: a name decides). An entry
    nothing links is an external person: one per author identifier where the entry has one
    (`identifier`: scheme → expressions, the first scheme with a value deciding; a list is
    the ORCID iD's expressions), else per name and `context` (expressions into the object,
    e.g. ["id"]: one external person per name per object; none: one per name).
    """

    from_: list[str] = Field(alias="from", min_length=1)
    role: str = Field(description="classification URI of the person's role")
    kind: str = Field("user", description="the kind whose mapped persons are linked")
    key: list[str] = []
    match: list[str] = []
    relationships: RelationshipsRule | None = None
    identifier: dict[str, list[str]] = Field(
        {"orcid": ["identifiers.orcid"]},
        description="author identifier scheme → expressions giving an entry's identifier",
    )
    context: list[str] = []
    last_name: list[str] = ["last-name"]
    first_name: list[str] = ["first-names", "first-name", "initials"]
    internal: str = Field(
        "", description="typeDiscriminator for linked persons; empty: the target's"
    )
    external: str | None = Field(
        "",
        description="typeDiscriminator for external persons; empty: the target's; none: left out",
    )

    _expressions = field_validator(
        "from_", "key", "match", "context", "last_name", "first_name", mode="before"
    )(expression_list)

    @field_validator("identifier", mode="before")
    @classmethod
    def _schemes(cls, value: Any) -> Any:
        # The form before schemes had names: expressions giving an ORCID iD.
        schemes = {"orcid": value} if isinstance(value, str | list) else value
        if not isinstance(schemes, dict):
            return schemes  # reported by validation
        unknown = sorted(set(schemes) - set(PERSON_ID_SCHEMES))
        if unknown:
            raise ValueError(
                f"unknown identifier scheme {', '.join(unknown)}: "
                f"one of {', '.join(PERSON_ID_SCHEMES)}"
            )
        return {scheme: expression_list(found) for scheme, found in schemes.items()}

    @model_validator(mode="after")
    def _one_way_to_recognise(self) -> PersonsRule:
        if self.key and (self.match or self.relationships):
            raise ValueError("recognise persons by `key`, or by `match` (with relationships)")
        if self.relationships and not self.match:
            raise ValueError("relationships need `match` to pair related objects with entries")
        return self


class MatchRule(Rules):
    """One way to find the content a source object already has in the target, before creating.

    `from` gives the value in the source object; `identifier` (an identifier's source or
    type in the target, e.g. the idSource of a Pure PrimaryId) or `property` (a dotted path
    into the target's content; lists on the way are searched entry by entry) says where the
    target holds it; `compare` says how both sides are normalised before they are compared.
    """

    from_: list[str] = Field(alias="from", min_length=1)
    identifier: str | None = None
    path: str | None = Field(None, alias="property")
    compare: Comparison = "exact"

    _expressions = field_validator("from_", mode="before")(expression_list)

    @model_validator(mode="after")
    def _one_place(self) -> MatchRule:
        if (self.identifier is None) == (self.path is None):
            raise ValueError("a match rule names one of identifier or property")
        if self.path is not None and not all(self.path.split(".")):
            raise ValueError(f"{self.path!r}: a property path is dot-separated names")
        return self

    @property
    def where(self) -> str:
        """Where the target holds the value, as people read it."""
        return f"identifier {self.identifier}" if self.identifier else f"{self.path}"


class PropertyRule(Rules):
    """How one property of the target's body (a dotted path into it) gets its value.

    Exactly one of: `value` (a constant); `from` (source expressions, optionally through a
    `lookup` table, with a `default`, put `as` a template); a reference: `reference` (the
    kind whose mapping names the target's content) with `from` (giving the referred object's
    key), and/or a
    `fallback` for when the source names none; `persons` (a people list, see PersonsRule);
    `find` (content of that type the target holds already, found by `match` rules: the
    journal of an article by its ISSN, say; several found: the object waits).
    """

    value: JsonValue = None
    from_: list[str] = Field(default_factory=list, alias="from")
    lookup: str | None = None
    default: JsonValue = None
    # A template the value is put into: every string "$" in it becomes the value; nothing
    # is written when there is no value (a DOI electronic version only with a DOI).
    as_: JsonValue = Field(None, alias="as")
    required: bool = False
    reference: str | None = None
    many: bool = False
    fallback: Fallback | None = None
    persons: PersonsRule | None = None
    # Content the target holds already (a journal): its type there, found by `match`; with
    # `create`, what to create (property rules, as a mapping's) when nothing is found.
    find: str | None = None
    match: list[MatchRule] = []
    create: dict[str, PropertyRule] | None = None
    # A list of entries, each from its own source value (`from` and `as`): those with a
    # value, in order (a Scopus id and a Web of Science id as two identifiers).
    entries: list[PropertyRule] = []

    _expressions = field_validator("from_", mode="before")(expression_list)

    @property
    def kind(self) -> Literal["value", "source", "reference", "persons", "find", "entries"]:
        if self.persons is not None:
            return "persons"
        if self.entries:
            return "entries"
        if self.find is not None:
            return "find"
        if self.reference is not None or self.fallback is not None:
            return "reference"
        if self.value is not None:
            return "value"
        return "source"

    @model_validator(mode="after")
    def _one_kind(self) -> PropertyRule:
        kinds = [
            self.value is not None,
            self.reference is not None or self.fallback is not None,
            self.persons is not None,
            self.find is not None,
            bool(self.entries),
            bool(self.from_) and self.reference is None and self.fallback is None,
        ]
        if sum(kinds) != 1:
            raise ValueError(
                "give exactly one of value, from, reference or fallback, persons, find, entries"
            )
        if any(entry.kind != "source" for entry in self.entries):
            raise ValueError("each of entries takes its value from the source: from (and as)")
        if self.create is not None and self.find is None:
            raise ValueError("create goes with find")
        if (self.find is None) == bool(self.match):
            if self.find is not None:
                raise ValueError("find names the rules that find the content: match")
            raise ValueError("match goes with find")
        if (
            self.lookup is not None or self.default is not None or self.as_ is not None
        ) and self.kind != "source":
            raise ValueError("lookup, default and as go with from")
        if self.many and self.kind != "reference":
            raise ValueError("many goes with reference or fallback")
        if self.kind == "reference" and bool(self.reference) != bool(self.from_):
            raise ValueError("a reference names the kind it refers to and, in from, the key")
        return self


class CustomFieldRule(Rules):
    """A custom-defined field: written with its typeDiscriminator, cleared when empty."""

    type: CustomFieldType
    from_: list[str] = Field(alias="from", min_length=1)
    lookup: str | None = None
    default: JsonValue = None

    _expressions = field_validator("from_", mode="before")(expression_list)


class ScopeRule(Rules):
    """A condition a source object meets to be replicated; a mapping's conditions all hold.

    `from` gives the value (with filters, e.g. ``fields.is-current-staff|boolean``); then
    `equals` a value, is `in` or `not_in` a list (a list value: any of its entries, compared
    without case), is `present` (or not), or is a date on or `after` / `before` one. `where`
    first keeps of a list only the entries whose fields equal its values (the visible,
    claimed authorships among a publication's relationships).
    """

    from_: list[str] = Field(alias="from", min_length=1)
    where: dict[str, JsonValue] | None = None
    equals: JsonValue = None
    in_: list[JsonValue] | None = Field(None, alias="in")
    not_in: list[JsonValue] | None = None
    present: bool | None = None
    after: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    before: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$")

    _expressions = field_validator("from_", mode="before")(expression_list)

    @model_validator(mode="after")
    def _a_condition(self) -> ScopeRule:
        given = [self.equals, self.in_, self.not_in, self.present, self.after, self.before]
        if all(condition is None for condition in given):
            raise ValueError("a scope rule needs equals, in, not_in, present, after or before")
        return self


class MappingChecker(Protocol):
    """A target's section class: what it can write."""

    def mapping_problems(self, rules: ObjectMapping) -> list[str]: ...


class ObjectMapping(Rules):
    """What one kind of source object becomes in a target.

    ``<target>_type = "..."`` names both at once (``pure_type = "persons"``): the target
    whose content it is, and the content type there.
    """

    target: str = Field(min_length=1, description="the target that holds the content, e.g. pure")
    type: str = Field(min_length=1, description="the target's content type, e.g. persons")
    id_source: str = ""  # empty: the target's own default for the type
    on_delete: DeletePolicy = "unlock"
    # Expressions into the target's body that identify the object to `persons` rules elsewhere.
    reference_key: list[str] = []
    properties: dict[str, PropertyRule] = {}
    custom_fields: dict[str, CustomFieldRule] = {}
    # Existing content is looked for by these rules, in order, before anything is created.
    match: list[MatchRule] = []
    # What is replicated: an object that fails one condition is not (and leaves if it was).
    scope: list[ScopeRule] = []
    # False: only content a match rule finds is taken over; nothing is created.
    create: bool = True

    _expressions = field_validator("reference_key", mode="before")(expression_list)

    @model_validator(mode="before")
    @classmethod
    def _target_and_type(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        named = [key for key in data if key.endswith("_type") and key != "type"]
        if len(named) > 1 or (named and ("target" in data or "type" in data)):
            raise ValueError('name the target and type once: e.g. pure_type = "persons"')
        if named:
            data = dict(data)
            data["target"] = named[0].removesuffix("_type")
            data["type"] = data.pop(named[0])
        return data

    @field_validator("properties")
    @classmethod
    def _paths(cls, value: dict[str, PropertyRule]) -> dict[str, PropertyRule]:
        for path in value:
            if not all(path.split(".")):
                raise ValueError(f"{path!r}: a property path is dot-separated names")
        return value

    @model_validator(mode="after")
    def _fits_its_target(self, info: ValidationInfo) -> ObjectMapping:
        """Checked when validated with the targets as context (`crisync.config.load`)."""
        targets: Mapping[str, MappingChecker] | None = (info.context or {}).get("targets")
        if targets is None:
            return self
        target = targets.get(self.target)
        if target is None:
            raise ValueError(f"no target is named {self.target!r}; known: {sorted(targets)}")
        problems = target.mapping_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _finds_what_it_does_not_create(self) -> ObjectMapping:
        if not self.create and not self.match:
            raise ValueError("create = false needs match rules: nothing could be found")
        return self

    @property
    def link_only(self) -> bool:
        """Found and referred to, never written: no creating, no owned properties."""
        return not self.create and not self.properties and not self.custom_fields

    @property
    def owned_properties(self) -> frozenset[str]:
        """The top-level properties this mapping writes; people's edits to others stay."""
        return frozenset(path.split(".")[0] for path in self.properties)


class MappingsConfig(Rules):
    """The mappings in force: built-ins, then the mapping file, then the [mappings] section.

    Every table of [mappings] but ``file``, ``builtin`` and ``lookups`` is a source's:
    ``[mappings.<source>.<kind>]``.
    """

    file: Path | None = None
    builtin: bool = True
    lookups: dict[str, dict[str, JsonValue]] = {}
    sources: dict[str, dict[str, ObjectMapping]] = {}
    # (source, kind) of the mappings the file or the section declare, built-ins aside.
    declared: frozenset[tuple[str, str]] = Field(frozenset(), exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _layered(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "sources" in data:
            return data  # already layered (a copy of a validated model)
        layers: list[Mapping[str, Any]] = []
        if data.get("builtin", True):
            layers.extend(builtin_mappings())
        declared = []
        if data.get("file"):
            declared.append(read_mapping_file(Path(data["file"])))
        declared.append({k: v for k, v in data.items() if k not in ("file", "builtin")})
        merged = layer_mappings([*layers, *declared])
        merged["declared"] = frozenset(
            (source, kind)
            for layer in declared
            for source, kinds in layer.items()
            if source != "lookups" and isinstance(kinds, dict)
            for kind in kinds
        )
        return {**{k: data[k] for k in ("file", "builtin") if k in data}, **merged}

    @model_validator(mode="after")
    def _consistent(self) -> MappingsConfig:
        problems = []
        for source, kind, rules in self.all():
            where = f"{source}.{kind}"
            lookups = [(n, r.lookup) for n, r in rules.properties.items()]
            lookups += [(f"custom_fields.{n}", r.lookup) for n, r in rules.custom_fields.items()]
            problems += [
                f"{where}.{name}: no lookup table {table!r}"
                for name, table in lookups
                if table is not None and table not in self.lookups
            ]
            for name, rule in rules.properties.items():
                target = rule.reference or (rule.persons.kind if rule.persons else None)
                referred = self.for_kind(source, target) if target else None
                if target is not None and referred is None:
                    problems.append(f"{where}.{name}: no mapping for {source} {target}")
                matching = rule.persons.match if rule.persons else []
                if (
                    referred is not None
                    and matching
                    and (len(referred.reference_key) != len(matching))
                ):
                    problems.append(
                        f"{where}.{name}: match has {len(matching)} parts, "
                        f"{source}.{target} reference_key has {len(referred.reference_key)}"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def all(self) -> list[tuple[str, str, ObjectMapping]]:
        return [
            (source, kind, rules)
            for source, kinds in sorted(self.sources.items())
            for kind, rules in kinds.items()
        ]

    def referred(self) -> dict[tuple[str, str], frozenset[str]]:
        """(source, kind) -> the other kinds of that source its references and persons name."""
        return {
            (source, kind): frozenset(
                target
                for rule in rules.properties.values()
                if (target := rule.reference or (rule.persons.kind if rule.persons else None))
                and target != kind
            )
            for source, kind, rules in self.all()
        }

    def for_kind(self, source: str, kind: str) -> ObjectMapping | None:
        return self.sources.get(source, {}).get(kind)

    def look_up(self, table: str, value: Any) -> JsonValue:
        """The table's entry for a source value, compared without case; None when absent."""
        if isinstance(value, dict | list) or value is None:
            return None
        return self.lookups.get(table, {}).get(str(value).strip().casefold())


def layer_mappings(layers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Later layers win: a mapping is replaced whole, a lookup table entry by entry."""
    merged: dict[str, Any] = {"lookups": {}, "sources": {}}
    for layer in layers:
        for key, value in layer.items():
            if key == "lookups" and isinstance(value, dict):
                for table, entries in value.items():
                    if not isinstance(entries, dict):
                        merged["lookups"][table] = entries  # reported by validation
                        continue
                    target = merged["lookups"].setdefault(table, {})
                    target.update({str(k).strip().casefold(): v for k, v in entries.items()})
            elif key == "lookups":
                merged["lookups"] = value  # reported by validation
            elif isinstance(value, dict):
                merged["sources"].setdefault(key, {}).update(copy.deepcopy(value))
            else:
                merged["sources"][key] = value  # reported by validation
    return merged


# The built-in mappings each target ships beside its code: (package, file).
BUILTIN_MAPPINGS = (("crisync.handlers.pure", "default_mappings.toml"),)


@functools.cache
def _builtin_text(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text("utf-8")


def builtin_mappings() -> list[dict[str, Any]]:
    return [tomllib.loads(_builtin_text(package, name)) for package, name in BUILTIN_MAPPINGS]


def read_mapping_file(path: Path) -> dict[str, Any]:
    """A mapping file: the [mappings] tables (lookups, then one table per source) at its top."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read mapping file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"mapping file {path} is not valid TOML: {exc}") from None
    misplaced = sorted(key for key in ("file", "builtin") if key in raw)
    if misplaced:
        raise ValueError(f"mapping file {path}: {misplaced} belong in the [mappings] section")
    return raw
