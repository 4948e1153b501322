"""Read Elements API responses: ATOM feeds whose API-namespaced content is all that counts.

The parser resolves no entities, loads no DTD, touches no network, and refuses any
document with a DOCTYPE: a feed has no business declaring one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lxml import etree

from crisync.errors import RetriableError

API_NAMESPACES = frozenset(
    {
        "http://www.symplectic.co.uk/publications/api",
        "https://www.symplectic.co.uk/publications/api",
    }
)


class MalformedFeedError(RetriableError):
    """The body is not a readable API feed; asking again may give a whole one."""

    def __init__(self, message: str) -> None:
        super().__init__(message, api="elements")


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


@dataclass(frozen=True)
class ElementsObject:
    category: str
    id: str
    changed_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class DeletedObject:
    category: str
    id: str
    deleted_at: datetime


@dataclass(frozen=True)
class ApiWarning:
    field: str | None  # the record field it concerns, when there is one
    message: str


@dataclass(frozen=True)
class FeedPage:
    schema_version: str | None
    next_url: str | None
    objects: list[ElementsObject] = field(default_factory=list)
    deleted: list[DeletedObject] = field(default_factory=list)
    warnings: list[ApiWarning] = field(default_factory=list)


@dataclass(frozen=True)
class ApiError:
    code: str
    message: str


# What may precede the root element: a byte-order mark, the XML declaration, comments,
# processing instructions and white space.
_PROLOG = re.compile(rb"\A(?:\xef\xbb\xbf)?(?:\s+|<\?.*?\?>|<!--.*?-->)*", re.DOTALL)


def parse_document(body: bytes) -> tuple[etree._Element, str]:
    """The root element and the API namespace the document uses."""
    prolog = _PROLOG.match(body)
    if body[prolog.end() if prolog else 0 :][:9].upper() == b"<!DOCTYPE":
        # Refused before parsing: no entity of it is ever looked at.
        raise MalformedFeedError("document declares a DOCTYPE; refused")
    try:
        root = etree.fromstring(body, _parser())
    except (etree.LxmlError, ValueError) as exc:
        raise MalformedFeedError(f"malformed XML: {exc}") from None
    if root is None:  # lxml answers None for a body of nothing but whitespace
        raise MalformedFeedError("empty document")
    docinfo: Any = root.getroottree().docinfo  # lxml-stubs lack DocInfo.doctype
    if docinfo.doctype:
        raise MalformedFeedError("document declares a DOCTYPE; refused")
    for namespace in (root.nsmap or {}).values():
        if namespace in API_NAMESPACES:
            return root, namespace
    for element in root.iter():
        namespace = etree.QName(element).namespace
        if namespace in API_NAMESPACES:
            return root, namespace
    raise MalformedFeedError("no Elements API content in the document")


def parse_error(body: bytes) -> ApiError | None:
    """The first api:error of an error feed, or None when the body is no error feed."""
    try:
        root, ns = parse_document(body)
    except MalformedFeedError:
        return None
    error = root.find(f".//{{{ns}}}error")
    if error is None:
        return None
    return ApiError(error.get("code", "unknown"), (error.text or "").strip())


def _success_document(body: bytes) -> tuple[etree._Element, str]:
    """The root and the API namespace ("{...}") of a success response."""
    root, ns = parse_document(body)
    if root.find(f".//{{{ns}}}error") is not None:
        raise MalformedFeedError("a success response carried an api:error")
    return root, f"{{{ns}}}"


def _next_link(root: etree._Element, api: str) -> str | None:
    pagination = root.find(f"{api}pagination")
    if pagination is not None:
        for page in pagination.findall(f"{api}page"):
            if page.get("position") == "next":
                return page.get("href")
    return None


def parse_feed(body: bytes, *, precedence: Sequence[str] = ()) -> FeedPage:
    root, api = _success_document(body)
    version = root.findtext(f"{api}schema-version")
    next_url = _next_link(root, api)
    objects = [
        _read_object(element, api, precedence) for element in root.iterfind(f".//{api}object")
    ]
    deleted = [_read_deleted(element) for element in root.iterfind(f".//{api}deleted-object")]
    return FeedPage(
        version.strip() if version else None,
        next_url,
        objects,
        deleted,
        [
            ApiWarning(warning.get("associated-field"), (warning.text or "").strip())
            for warning in root.iterfind(f".//{api}warning")
        ],
    )


@dataclass(frozen=True)
class Relationship:
    """A relationship (or a suggestion of one) between the object asked about and another."""

    id: str
    type: str  # e.g. publication-user-authorship
    type_id: str
    category: str  # the other object's
    object_id: str
    visible: bool
    claimed: bool  # False: a suggestion nobody accepted

    def as_json(self) -> dict[str, Any]:
        """As the payload holds it under `relationships` (docs: notes on relationships)."""
        return {
            "relationship": self.id,
            "type": self.type,
            "type_id": self.type_id,
            "category": self.category,
            "id": self.object_id,
            "visible": self.visible,
            "claimed": self.claimed,
        }


@dataclass(frozen=True)
class RelationshipPage:
    next_url: str | None
    relationships: list[Relationship]


def parse_relationships(body: bytes, involved: tuple[str, str]) -> RelationshipPage:
    """A page of api:relationship (or api:relationship-suggestion) entries at full detail.

    Each names the object other than `involved` (category, id): a feed for one object may
    leave that object out, or name both ends.
    """
    root, api = _success_document(body)
    found = []
    for tag, claimed in (("relationship", True), ("relationship-suggestion", False)):
        for element in root.iterfind(f".//{api}{tag}"):
            relationship_id, type_name = element.get("id"), element.get("type")
            if not relationship_id or not type_name:
                raise MalformedFeedError(f"api:{tag} without id or type")
            ends = [
                (end.get("category") or "", end.get("id") or "")
                for end in element.iterfind(f"{api}related/{api}object")
            ]
            others = [end for end in ends if end != involved and all(end)]
            if not others:
                raise MalformedFeedError(f"api:{tag} {relationship_id} relates no other object")
            # Absent only below full detail; a relationship is shown unless its user hid it.
            visible = (element.findtext(f"{api}is-visible") or "true").strip() != "false"
            category, object_id = others[0]
            found.append(
                Relationship(
                    relationship_id,
                    type_name,
                    element.get("type-id") or "",
                    category,
                    object_id,
                    visible,
                    claimed,
                )
            )
    return RelationshipPage(_next_link(root, api), found)


def _read_deleted(element: etree._Element) -> DeletedObject:
    category, object_id = element.get("category"), element.get("id")
    stamp = element.get("deleted-when")
    if not category or not object_id or not stamp:
        raise MalformedFeedError("api:deleted-object without category, id or deleted-when")
    return DeletedObject(category, object_id, _timestamp(stamp))


@dataclass(frozen=True)
class DataSource:
    name: str
    importable: bool


def parse_sources(body: bytes) -> list[DataSource]:
    """The api:data-source elements of a /{cat}/sources answer."""
    root, ns = parse_document(body)
    return [
        DataSource(
            element.get("name", ""),
            (element.findtext(f"{{{ns}}}importable") or "").strip() == "true",
        )
        for element in root.iterfind(f".//{{{ns}}}data-source")
    ]


@dataclass(frozen=True)
class TypeField:
    type_name: str  # the object type, e.g. journal-article
    name: str  # the field, e.g. title
    field_type: str  # e.g. text, person-list
    operations: frozenset[str]  # update operations it allows: set, clear, add, remove


def parse_types(body: bytes) -> list[TypeField]:
    """Every field of every api:type of a /{cat}/types answer."""
    root, ns = parse_document(body)
    api = f"{{{ns}}}"
    return [
        TypeField(
            object_type.get("name", ""),
            (item.findtext(f"{api}name") or "").strip(),
            (item.findtext(f"{api}type") or "").strip(),
            frozenset(
                operation.get("type", "")
                for operation in item.iterfind(f"{api}update-field-operations/{api}operation")
            ),
        )
        for object_type in root.iterfind(f".//{api}type[@name]")
        for item in object_type.iterfind(f"{api}fields/{api}field")
    ]


def _read_object(element: etree._Element, api: str, precedence: Sequence[str]) -> ElementsObject:
    """An api:object as JSON: attributes, fields by name, and its records' sources.

    Every category reads the same way: the object's own simple elements (a user's
    first-name, ...; its organisation-defined-data by field name) and the fields of its
    records (a publication's title, ...), keyed by their API names, so mappings can name
    any field the API offers. A field several records hold comes from the first of
    `precedence` (record sources) that has it, else from the first record in Elements' order
    that has it; each record's own fields are kept too (`record_fields.<source>`), for a
    mapping that wants one source's value.
    """
    category = element.get("category")
    object_id = element.get("id")
    stamp = element.get("last-affected-when") or element.get("last-modified-when")
    if not category or not object_id or not stamp:
        raise MalformedFeedError("api:object without category, id or timestamp")
    fields: dict[str, Any] = {}
    defined: dict[str, str] = {}
    for child in element:
        tag, text = _local(child), (child.text or "").strip()
        if not tag or len(child) or not text:
            continue
        if tag == "organisation-defined-data":
            # Many elements of one name, told apart by the field name the site gave each:
            # `organisation-defined-data.Faculty`, not whichever came last.
            if field_name := child.get("field-name"):
                defined[field_name] = text
        else:
            fields[tag] = text
    if defined:
        fields["organisation-defined-data"] = defined
    records: list[dict[str, str | None]] = []
    record_fields: dict[str, dict[str, Any]] = {}
    for record in element.iterfind(f"{api}records/{api}record"):
        source = record.get("source-name")
        records.append({"source": source, "id_at_source": record.get("id-at-source")})
        native = record.find(f"{api}native")
        if source and native is not None and source not in record_fields:
            record_fields[source] = {
                name: _field_value(item, item.get("type"))
                for item in native.iterfind(f"{api}field")
                if (name := item.get("name"))
            }
    ranked = sorted(
        record_fields,
        key=lambda source: precedence.index(source) if source in precedence else len(precedence),
    )
    for source in ranked:
        for name, value in record_fields[source].items():
            fields.setdefault(name, value)
    payload: dict[str, Any] = {
        "id": object_id,
        "category": category,
        "attributes": dict(element.attrib),
        "fields": fields,
        "records": records,
        # The object's id in each of its sources, for mappings: `record_ids.scopus`.
        "record_ids": {
            str(record["source"]): record["id_at_source"]
            for record in records
            if record["source"] and record["id_at_source"]
        },
        "record_fields": record_fields,
    }
    return ElementsObject(category, object_id, _timestamp(stamp), payload)


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _field_value(field_element: etree._Element, field_type: str | None) -> Any:
    """A native field's value: its one content element, as JSON."""
    content = list(field_element)
    if not content:
        return None
    value = _as_json(content[0])
    if field_type == "date" and isinstance(value, dict):
        return {part: int(v) for part, v in value.items() if isinstance(v, str) and v.isdigit()}
    return value


def _as_json(element: etree._Element) -> Any:
    children = [child for child in element if isinstance(child.tag, str)]
    if not children:
        return (element.text or "").strip() or None
    names = [_local(child) for child in children]
    if set(names) == {"identifier"} and all(child.get("scheme") for child in children):
        # A person's identifiers by scheme: `identifiers.orcid`.
        return {str(child.get("scheme")): _as_json(child) for child in children}
    if len(children) > 1 and len(set(names)) == 1:
        return [_as_json(child) for child in children]
    if len(children) == 1 and names[0] in LIST_ITEMS:
        return [_as_json(children[0])]
    return {name: _as_json(child) for name, child in zip(names, children, strict=True)}


# Item elements of list fields: one item is still a list (api:people/api:person, ...).
LIST_ITEMS = frozenset(
    {
        "person",
        "keyword",
        "identifier",
        "issn",
        "email-address",
        "web-address",
        "phone-number",
        "item",
    }
)


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedFeedError(f"unreadable timestamp {text[:40]!r}") from None
    if moment.tzinfo is None:
        raise MalformedFeedError(f"timestamp without offset {text[:40]!r}")
    return moment
