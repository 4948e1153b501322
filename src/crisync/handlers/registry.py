"""Which handler takes which kind of change: (source, kind) → coroutine."""

from __future__ import annotations

from crisync.config.model import CATEGORY_OF_FEED
from crisync.handlers.base import Handler
from crisync.handlers.elements_writeback import WRITEBACK_SOURCE, write_back_to_elements
from crisync.handlers.replicate import replicate_to_pure

# Every Elements category with a built-in mapping (config/default_mappings.toml);
# replicate_to_pure takes their upserts and their deletions alike.
HANDLERS: dict[tuple[str, str], Handler] = {
    ("elements", "publication"): replicate_to_pure,
    ("elements", "user"): replicate_to_pure,
    ("elements", "grant"): replicate_to_pure,
    ("elements", "project"): replicate_to_pure,
    ("elements", "org-structure"): replicate_to_pure,
    ("elements", "equipment"): replicate_to_pure,
    ("elements", "activity"): replicate_to_pure,
    ("unicat", "record"): replicate_to_pure,
    **{
        (WRITEBACK_SOURCE, category): write_back_to_elements
        for category in CATEGORY_OF_FEED.values()
    },
}
