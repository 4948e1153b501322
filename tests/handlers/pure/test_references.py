"""References: what is remembered of external persons between objects."""

from __future__ import annotations

from crisync.handlers.pure.references import RecentNames


def test_recent_names_keep_the_most_recently_used_up_to_their_bound() -> None:
    names = RecentNames(size=2)
    names.put("hopper|grace", "u1")
    names.put("lovelace|ada", "u2")
    assert names.get("hopper|grace") == "u1"  # now the most recent
    names.put("turing|alan", "u3")
    assert names.get("lovelace|ada") is None
    assert (names.get("hopper|grace"), names.get("turing|alan")) == ("u1", "u3")
