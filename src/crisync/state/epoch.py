"""Instants stored as integers since the epoch, where their text form costs too much room.

Every instant is stored as text in one form (store.iso_utc: 2026-11-01T12:00:00.000000+00:00),
but in the tables with a row per object or per event, where 32 characters a time add up:
the mapping's change time and the records of done events are integers. These are the
conversions, in Python and in SQL (the latter for rows converted without leaving SQLite).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# SQL expressions of an iso_utc text column ({0}): whole seconds, and microseconds.
SQL_SECONDS = "CAST(strftime('%s', substr({0}, 1, 19)) AS INTEGER)"
SQL_MICROSECONDS = f"{SQL_SECONDS} * 1000000 + CAST(substr({{0}}, 21, 6) AS INTEGER)"


def microseconds(moment: datetime) -> int:
    """Exact for any aware datetime (datetimes carry microseconds, no finer)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_microseconds(count: int) -> datetime:
    return _EPOCH + timedelta(microseconds=count)


def seconds(moment: datetime) -> int:
    return microseconds(moment) // 1_000_000
