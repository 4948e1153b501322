"""crisync: replicates Symplectic Elements and Unicat changes into Elsevier Pure."""

__version__ = "0.1.0"
