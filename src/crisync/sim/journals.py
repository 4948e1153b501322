"""The journals every simulated world knows: Elements' journal articles appear in them, and
the Pure simulator holds them from the start, as a real Pure holds its journal list."""

from __future__ import annotations

# (title, print ISSN)
JOURNALS = (
    ("Journal of Computational Physics", "0021-9991"),
    ("Physical Review B", "2469-9950"),
    ("PLOS ONE", "1932-6203"),
    ("Nature", "0028-0836"),
    ("Monthly Notices of the Royal Astronomical Society", "0035-8711"),
)
