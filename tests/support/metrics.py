"""The metric families crisync exports, by name and type, from the collectors themselves."""

from __future__ import annotations

from crisync.metrics import LoopFigures, StateFigures, TelemetryCollector
from crisync.telemetry import Telemetry

# The names a family's samples carry in the exposition, by the family's type.
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


def crisync_families() -> dict[str, str]:
    """Every crisync_* family → its type. Each collector yields every family it has, samples
    or not, so empty figures suffice."""
    state = StateFigures(
        backlog={},
        outbox_depth=0,
        dead_letters=0,
        cursor_lag={},
        credentials_refused={},
        backfill=0,
    )
    families = [
        *TelemetryCollector(Telemetry()).collect(),
        *state.collect(),
        *LoopFigures(tasks=0).collect(),
    ]
    return {family.name: family.type for family in families}


def sample_names() -> set[str]:
    """What a query can name, e.g. crisync_outcomes_total or
    crisync_api_request_duration_seconds_bucket."""
    return {
        name + suffix
        for name, kind in crisync_families().items()
        for suffix in SAMPLE_SUFFIXES[kind]
    }
