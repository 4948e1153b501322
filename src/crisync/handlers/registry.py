"""Which handler takes which kind of change: (source, kind) → coroutine."""

from __future__ import annotations

from crisync.handlers.base import Handler
from crisync.handlers.replicate import replicate_to_pure

HANDLERS: dict[tuple[str, str], Handler] = {
    ("elements", "publication"): replicate_to_pure,
    ("elements", "user"): replicate_to_pure,
    ("unicat", "record"): replicate_to_pure,
}
