"""State in SQLite: cursors, inbox, mapping, outbox and dead letters, one module per table."""
