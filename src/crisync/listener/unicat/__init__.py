"""The Unicat source: a project's sync stream, its records, and the jobs it reports."""
