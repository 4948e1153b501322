"""Following next links: what makes two links the same page, and a loop of them an error."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from crisync.errors import PermanentError

PageKey = tuple[str, str, str, tuple[tuple[str, str], ...]]


class PaginationLoopError(PermanentError):
    """A next link leads back to a page this sweep already read (a corrupt search index)."""

    def __init__(self, url: str) -> None:
        super().__init__(f"next link loops back to {url}; sweep abandoned", api="elements")


def same_page(url: str) -> PageKey:
    """What identifies a page, whatever the order or encoding of its query."""
    parts = urlsplit(url)
    query = tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return parts.scheme, parts.netloc.lower(), parts.path, query
