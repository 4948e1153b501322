"""Mappings: which Pure content each kind of source object becomes, declared as configuration.

A mapping names the Pure type, the PrimaryId idSource, what happens on a deletion, and
rules that build the Pure properties from the source payload. Built-in defaults ship
with crisync (``default_mappings.toml`` beside this module); a mapping file named in
``[mappings] file`` and the ``[mappings]`` section itself are layered over them: a mapping
of the same source and kind replaces the earlier one whole, a lookup table gets its
entries added or overridden.

Source values are named by *expressions*: a dotted path into the payload (``fields.title``,
``fields.authors.0.last-name``) followed by optional filters (``fields.first-name|initials``).
A list of expressions takes the first that yields a value.
"""

from __future__ import annotations

import copy
import functools
import re
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

DeletePolicy = Literal["unlock", "delete", "ignore"]
CustomFieldType = Literal["Boolean", "Classification", "Date", "Decimal", "String"]
# The only fallback a reference knows: the organisation named in [pure] managing_organization.
Fallback = Literal["managing-organization"]


@dataclass(frozen=True)
class PureType:
    system_name: str  # systemName in references to content of this type
    id_source: str  # the PrimaryId idSource Pure's own synchronisation uses for it


# The content types crisync can write, by API path segment. The idSources are the table in
# "Pure API: Synchronization workaround"; equipment and activities have no endpoint in the
# 2023-08 API contract, newer Pure API versions add them.
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

# Properties crisync manages itself: a rule may not set them.
RESERVED_PROPERTIES = frozenset(
    {"identifiers", "customDefinedFields", "uuid", "version", "pureId", "systemName"}
)


# -- expressions ---------------------------------------------------------------------------


def _initials(value: Any) -> Any:
    if not isinstance(value, str):
        return None
    return "".join(part[0] for part in re.split(r"[\s\-.]+", value) if part).upper() or None


def _date(value: Any) -> Any:
    """An ISO date from an Elements date ({year, month, day}; a missing part is the first)."""
    if isinstance(value, dict):
        year = value.get("year")
        if not isinstance(year, int):
            return None
        month, day = value.get("month") or 1, value.get("day") or 1
        return f"{year:04d}-{month:02d}-{day:02d}"
    if isinstance(value, str) and re.match(r"\d{4}-\d{2}-\d{2}", value):
        return value[:10]
    return None


def _year(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("year") if isinstance(value.get("year"), int) else None
    if isinstance(value, str) and re.match(r"\d{4}", value):
        return int(value[:4])
    return None


def _string(value: Any) -> Any:
    return None if isinstance(value, dict | list) or value is None else str(value)


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    text = str(value).strip().casefold()
    return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else None


FILTERS: dict[str, Callable[[Any], Any]] = {
    "initials": _initials,
    "date": _date,
    "year": _year,
    "string": _string,
    "number": _number,
    "boolean": _boolean,
    "first": _first,
}


@dataclass(frozen=True)
class Expression:
    path: tuple[str, ...]
    filters: tuple[Callable[[Any], Any], ...]

    def evaluate(self, document: Any) -> Any:
        """The value at the path, filtered; None when anything along the way is missing."""
        value = document
        for segment in self.path:
            if isinstance(value, dict):
                value = value.get(segment)
            elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
                value = value[int(segment)]
            else:
                return None
        for apply in self.filters:
            if is_empty(value):
                return None
            value = apply(value)
        return None if is_empty(value) else value


@functools.cache
def parse_expression(text: str) -> Expression:
    path_text, *filter_names = (part.strip() for part in text.split("|"))
    path = tuple(path_text.split("."))
    if not path_text or not all(path):
        raise ValueError(f"{text!r}: a path is dot-separated names, e.g. fields.title")
    unknown = [name for name in filter_names if name not in FILTERS]
    if unknown:
        raise ValueError(f"{text!r}: unknown filter {unknown[0]!r}; known: {sorted(FILTERS)}")
    return Expression(path, tuple(FILTERS[name] for name in filter_names))


def first_value(expressions: Iterable[str], document: Any) -> Any:
    """The value of the first expression that yields one."""
    for text in expressions:
        value = parse_expression(text).evaluate(document)
        if value is not None:
            return value
    return None


def is_empty(value: Any) -> bool:
    return value is None or value in ("", [], {})


def normalise_key(parts: Iterable[Any]) -> str:
    """One comparable text for identifying values: case, accents' forms, dots and spacing aside."""
    normalised = []
    for part in parts:
        text = unicodedata.normalize("NFC", str(part)).casefold().replace(".", " ")
        normalised.append(" ".join(text.split()))
    return "|".join(normalised)


def _expression_list(value: Any) -> Any:
    """`from = "a"` and `from = ["a", "b"]` alike; every expression checked."""
    expressions = [value] if isinstance(value, str) else value
    if isinstance(expressions, list):
        for text in expressions:
            if isinstance(text, str):
                parse_expression(text)
    return expressions


# -- the model -------------------------------------------------------------------------------


class Rules(BaseModel):
    """Unknown keys are errors; `from` is a Python keyword, so it is an alias."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )


class PersonsRule(Rules):
    """A list of people in the payload → associations with Pure persons or external persons.

    A person is recognised as replicated content either by `key` (expressions giving the
    source key of the person's own object: when it is not replicated yet, the object waits)
    or by `match` (expressions on the person entry compared with the `reference_key` of
    the `kind` mapping: no match makes an external person, reused by name).
    """

    from_: list[str] = Field(alias="from", min_length=1)
    role: str = Field(description="classification URI of the person's role")
    kind: str = Field("user", description="the kind whose mapped Pure persons are linked")
    key: list[str] = []
    match: list[str] = []
    last_name: list[str] = ["last-name"]
    first_name: list[str] = ["first-names", "first-name", "initials"]
    internal: str = "InternalContributorAssociation"
    external: str | None = Field(
        "ExternalContributorAssociation",
        description="typeDiscriminator for external persons; none leaves them out",
    )

    _expressions = field_validator(
        "from_", "key", "match", "last_name", "first_name", mode="before"
    )(_expression_list)

    @model_validator(mode="after")
    def _one_way_to_recognise(self) -> PersonsRule:
        if self.key and self.match:
            raise ValueError("recognise persons by `key` or by `match`, not both")
        return self


class PropertyRule(Rules):
    """How one Pure property (a dotted path into the body) gets its value.

    Exactly one of: `value` (a constant); `from` (source expressions, optionally through a
    `lookup` table, with a `default`); a reference: `reference` (the kind whose mapping
    names the Pure content) with `from` (giving the referred object's key), and/or a
    `fallback` for when the source names none; `persons` (a people list, see PersonsRule).
    """

    value: JsonValue = None
    from_: list[str] = Field(default_factory=list, alias="from")
    lookup: str | None = None
    default: JsonValue = None
    required: bool = False
    reference: str | None = None
    many: bool = False
    fallback: Fallback | None = None
    persons: PersonsRule | None = None

    _expressions = field_validator("from_", mode="before")(_expression_list)

    @property
    def kind(self) -> Literal["value", "source", "reference", "persons"]:
        if self.persons is not None:
            return "persons"
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
            bool(self.from_) and self.reference is None and self.fallback is None,
        ]
        if sum(kinds) != 1:
            raise ValueError("give exactly one of value, from, reference or fallback, persons")
        if (self.lookup is not None or self.default is not None) and self.kind != "source":
            raise ValueError("lookup and default go with from")
        if self.many and self.kind != "reference":
            raise ValueError("many goes with reference or fallback")
        if self.kind == "reference" and bool(self.reference) != bool(self.from_):
            raise ValueError("a reference names the kind it refers to and, in from, the key")
        return self


class CustomFieldRule(Rules):
    """A Pure custom-defined field: written with its typeDiscriminator, cleared when empty."""

    type: CustomFieldType
    from_: list[str] = Field(alias="from", min_length=1)
    lookup: str | None = None
    default: JsonValue = None

    _expressions = field_validator("from_", mode="before")(_expression_list)


class ObjectMapping(Rules):
    pure_type: str
    id_source: str = ""  # empty: the one Pure's synchronisation uses for the type
    on_delete: DeletePolicy = "unlock"
    # Expressions into the Pure body that identify the object to `persons` rules elsewhere.
    reference_key: list[str] = []
    properties: dict[str, PropertyRule] = {}
    custom_fields: dict[str, CustomFieldRule] = {}

    _expressions = field_validator("reference_key", mode="before")(_expression_list)

    @model_validator(mode="before")
    @classmethod
    def _default_id_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("id_source"):
            known = PURE_TYPES.get(str(data.get("pure_type")))
            if known is not None:
                return {**data, "id_source": known.id_source}
        return data

    @field_validator("pure_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PURE_TYPES:
            raise ValueError(f"unknown Pure type {value!r}; known: {sorted(PURE_TYPES)}")
        return value

    @field_validator("properties")
    @classmethod
    def _paths(cls, value: dict[str, PropertyRule]) -> dict[str, PropertyRule]:
        for path in value:
            segments = path.split(".")
            if not all(segments):
                raise ValueError(f"{path!r}: a property path is dot-separated names")
            if segments[0] in RESERVED_PROPERTIES:
                raise ValueError(f"{path!r}: crisync writes {segments[0]} itself")
        return value

    @property
    def owned_properties(self) -> frozenset[str]:
        """The top-level properties this mapping writes; people's edits to others stay."""
        return frozenset(path.split(".")[0] for path in self.properties)


class MappingsConfig(Rules):
    """The mappings in force: built-ins, then the mapping file, then the [mappings] section."""

    file: Path | None = None
    builtin: bool = True
    lookups: dict[str, dict[str, JsonValue]] = {}
    elements: dict[str, ObjectMapping] = {}
    unicat: dict[str, ObjectMapping] = {}

    @model_validator(mode="before")
    @classmethod
    def _layered(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        layers: list[Mapping[str, Any]] = []
        if data.get("builtin", True):
            layers.append(builtin_mappings())
        if data.get("file"):
            layers.append(read_mapping_file(Path(data["file"])))
        layers.append(data)
        return layer_mappings(layers)

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
            for source in ("elements", "unicat")
            for kind, rules in (self.elements if source == "elements" else self.unicat).items()
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
        by_kind = {"elements": self.elements, "unicat": self.unicat}.get(source, {})
        return by_kind.get(kind)

    def look_up(self, table: str, value: Any) -> JsonValue:
        """The table's entry for a source value, compared without case; None when absent."""
        if isinstance(value, dict | list) or value is None:
            return None
        return self.lookups.get(table, {}).get(str(value).strip().casefold())


def layer_mappings(layers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Later layers win: a mapping is replaced whole, a lookup table entry by entry."""
    merged: dict[str, Any] = {"lookups": {}, "elements": {}, "unicat": {}}
    for layer in layers:
        for key, value in layer.items():
            if key == "lookups" and isinstance(value, dict):
                for table, entries in value.items():
                    if not isinstance(entries, dict):
                        merged["lookups"][table] = entries  # reported by validation
                        continue
                    target = merged["lookups"].setdefault(table, {})
                    target.update({str(k).strip().casefold(): v for k, v in entries.items()})
            elif key in ("elements", "unicat") and isinstance(value, dict):
                merged[key].update(copy.deepcopy(value))
            else:
                merged[key] = copy.deepcopy(value)
    return merged


@functools.cache
def _builtin_text() -> str:
    return resources.files(__package__).joinpath("default_mappings.toml").read_text("utf-8")


def builtin_mappings() -> dict[str, Any]:
    return tomllib.loads(_builtin_text())


def read_mapping_file(path: Path) -> dict[str, Any]:
    """A mapping file: the [mappings] tables (lookups, elements, unicat) at its top level."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read mapping file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"mapping file {path} is not valid TOML: {exc}") from None
    misplaced = sorted(set(raw) - {"lookups", "elements", "unicat"})
    if misplaced:
        raise ValueError(f"mapping file {path}: unknown tables {misplaced}")
    return raw
