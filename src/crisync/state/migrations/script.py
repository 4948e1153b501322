"""Run a migration's SQL inside the caller's transaction."""

from __future__ import annotations

import sqlite3

import aiosqlite


async def execute_script(conn: aiosqlite.Connection, script: str) -> None:
    """Statement by statement: executescript() would commit the surrounding transaction."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        # complete_statement knows comments and string literals, unlike a split on ';'.
        if sqlite3.complete_statement(statement):
            await conn.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement in migration: {statement.strip()[:60]}")
