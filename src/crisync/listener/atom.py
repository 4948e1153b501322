"""Read Elements API responses: ATOM feeds whose API-namespaced content is all that counts.

The parser resolves no entities, loads no DTD, touches no network, and refuses any
document with a DOCTYPE: a feed has no business declaring one.
"""

from __future__ import annotations

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
class FeedPage:
    schema_version: str | None
    next_url: str | None
    objects: list[ElementsObject] = field(default_factory=list)


@dataclass(frozen=True)
class ApiError:
    code: str
    message: str


def parse_document(body: bytes) -> tuple[etree._Element, str]:
    """The root element and the API namespace the document uses."""
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as exc:
        raise MalformedFeedError(f"malformed XML: {exc}") from None
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


def parse_feed(body: bytes) -> FeedPage:
    root, ns = parse_document(body)
    if root.find(f".//{{{ns}}}error") is not None:
        raise MalformedFeedError("a success response carried an api:error")
    api = f"{{{ns}}}"
    version = root.findtext(f"{api}schema-version")
    next_url = None
    pagination = root.find(f"{api}pagination")
    if pagination is not None:
        for page in pagination.findall(f"{api}page"):
            if page.get("position") == "next":
                next_url = page.get("href")
    objects = [_read_object(element, api) for element in root.iterfind(f".//{api}object")]
    return FeedPage(version.strip() if version else None, next_url, objects)


def _read_object(element: etree._Element, api: str) -> ElementsObject:
    category = element.get("category")
    object_id = element.get("id")
    stamp = element.get("last-affected-when") or element.get("last-modified-when")
    if not category or not object_id or not stamp:
        raise MalformedFeedError("api:object without category, id or timestamp")
    changed_at = _timestamp(stamp)
    if category == "user":
        payload = _user(element, api)
    elif category == "publication":
        payload = _publication(element, api)
    else:
        payload = {}
    payload["id"] = object_id
    return ElementsObject(category, object_id, changed_at, payload)


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedFeedError(f"unreadable timestamp {text[:40]!r}") from None
    if moment.tzinfo is None:
        raise MalformedFeedError(f"timestamp without offset {text[:40]!r}")
    return moment


def _text(element: etree._Element, path: str) -> str | None:
    value = element.findtext(path)
    return value.strip() if value and value.strip() else None


def _user(element: etree._Element, api: str) -> dict[str, Any]:
    return {
        "proprietary_id": element.get("proprietary-id"),
        "username": element.get("username"),
        "title": _text(element, f"{api}title"),
        "first_name": _text(element, f"{api}first-name"),
        "last_name": _text(element, f"{api}last-name"),
        "email": _text(element, f"{api}email-address"),
    }


def _publication(element: etree._Element, api: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"type": element.get("type")}
    native = element.find(f"{api}records/{api}record/{api}native")
    if native is None:
        return payload
    for item in native.iterfind(f"{api}field"):
        name = item.get("name")
        if name == "title":
            payload["title"] = _text(item, f"{api}text")
        elif name == "language":
            payload["language"] = _text(item, f"{api}text")
        elif name == "authors":
            payload["authors"] = [
                {
                    "last_name": _text(person, f"{api}last-name"),
                    "initials": _text(person, f"{api}initials"),
                }
                for person in item.iterfind(f"{api}people/{api}person")
            ]
        elif name == "publication-date":
            date = item.find(f"{api}date")
            if date is not None:
                payload["publication_date"] = {
                    part: int(value)
                    for part in ("year", "month", "day")
                    if (value := _text(date, f"{api}{part}")) and value.isdigit()
                }
    return payload
