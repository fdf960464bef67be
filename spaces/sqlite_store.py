"""One way to open the SQLite files tdbnas keeps (latency tables, search run databases).

Shared rules: WAL journal and a busy timeout so several processes can share a file; explicit
`BEGIN IMMEDIATE` write transactions (a writer takes the lock up front and waits instead of
failing on upgrade); the file is tagged with `PRAGMA application_id` and carries its schema
version in `PRAGMA user_version`, so a store of another kind, or from a newer tdbnas, is
refused with a message instead of being misread.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

BUSY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class StoreKind:
    what: str                 # "latency table", "search run": used in messages
    application_id: int
    schema_version: int
    schema: str               # CREATE statements, separated by ';'
    error: type[Exception]    # raised for a file that is not this kind of store


def connect(target: str, kind: StoreKind, label: str) -> sqlite3.Connection:
    """Open (creating if empty) the store at `target`; `label` names it in messages."""
    conn = None
    try:
        conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable across process kills in WAL mode
        conn.execute("PRAGMA foreign_keys = ON")
        _initialise(conn, kind, label)
        return conn
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise kind.error(f"{label} is not a tdbnas {kind.what} (SQLite says: {exc})") from None
        # Locked for longer than the busy timeout, read-only folder, disk full, ...
        raise OSError(f"cannot use {kind.what} {label}: {exc}") from None
    except BaseException:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        raise


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE ... COMMIT`, ROLLBACK on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _initialise(conn: sqlite3.Connection, kind: StoreKind, label: str) -> None:
    with transaction(conn):
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app_id == 0 and version == 0 and not tables:
            # Statement by statement: `executescript` would commit our open transaction first.
            for statement in kind.schema.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {kind.application_id}")
            conn.execute(f"PRAGMA user_version = {kind.schema_version}")
            return
    if app_id != kind.application_id:
        raise kind.error(f"{label} is a SQLite database but not a tdbnas {kind.what} "
                         f"(application_id {app_id:#x}, tables: {', '.join(sorted(tables)) or 'none'})")
    if version > kind.schema_version:
        raise kind.error(f"{label} has {kind.what} schema version {version}, newer than this tdbnas understands "
                         f"({kind.schema_version}); upgrade tdbnas")
    if version < kind.schema_version:
        raise kind.error(f"{label} has an unknown {kind.what} schema version {version} (this tdbnas reads "
                         f"version {kind.schema_version})")
