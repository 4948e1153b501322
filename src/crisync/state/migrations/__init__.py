"""Versioned schema migrations: one module per step, applied in order.

Step N lives in `vNNN_<name>.py` and brings the schema from version N-1 to N.
Each step runs in one transaction together with the write of its version number.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiosqlite

from crisync.state.migrations import (
    v001_initial,
    v002_create_intents,
    v003_feed_health,
    v004_unicat,
    v005_reference_keys,
    v006_http_validators,
    v007_inbox_order,
    v008_target_neutral,
    v009_api_circuits,
    v010_mapping_origin,
    v011_last_write,
    v012_backfill_quota,
    v013_inbox_payloads,
    v014_compact_state,
)

Migration = Callable[[aiosqlite.Connection], Awaitable[None]]

# The schema version is the length of this list: append, never reorder or edit a shipped step.
MIGRATIONS: list[Migration] = [
    v001_initial.upgrade,
    v002_create_intents.upgrade,
    v003_feed_health.upgrade,
    v004_unicat.upgrade,
    v005_reference_keys.upgrade,
    v006_http_validators.upgrade,
    v007_inbox_order.upgrade,
    v008_target_neutral.upgrade,
    v009_api_circuits.upgrade,
    v010_mapping_origin.upgrade,
    v011_last_write.upgrade,
    v012_backfill_quota.upgrade,
    v013_inbox_payloads.upgrade,
    v014_compact_state.upgrade,
]
