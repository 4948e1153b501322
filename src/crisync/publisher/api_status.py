"""An API's state, retained on {prefix}/apis/{api}: whether it answers, and what waits for it.

The dispatcher queues one in the transaction that records its circuit opening, a failed
probe, or its closing, so subscribers learn of an outage without reading the log.
"""

from __future__ import annotations

import json

from crisync.outcome import topic_level
from crisync.state.api_circuits import OpenCircuit
from crisync.state.store import utc_now

API_SCHEMA = "crisync.api/1"


def api_topic(prefix: str, api: str) -> str:
    return f"{prefix}/apis/{topic_level(api)}"


def api_payload(api: str, outage: OpenCircuit | None, waiting: int) -> str:
    """`outage` is the open circuit's record, None when the API answers."""
    document = {
        "schema": API_SCHEMA,
        "api": api,
        "available": outage is None,
        "since": None if outage is None else outage.opened_at,
        "reason": None if outage is None else outage.reason,
        "waiting": waiting,
        "probes_failed": 0 if outage is None else outage.probes_failed,
        "next_probe_at": None if outage is None else outage.next_probe_at,
        "updated_at": utc_now(),
    }
    return json.dumps(document, separators=(",", ":"))
