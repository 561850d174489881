"""Connecting to the quota database: URL checks, one-line errors and the per-connection
settings of the owner (SQLite WAL, SQLAlchemy-run transactions) and of readers (the
database itself refuses their writes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

# what the hub's users and logs are told to do about a store without the expected schema
MIGRATE_HINT = "kernelhub-quotad migrates it when it starts, or run `kernelhub quota migrate`"


class QuotaStoreError(RuntimeError):
    """The quota database cannot be used (bad or unsupported URL, unreachable, no schema
    or another revision); the message is one line, without the URL's password."""


def parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except sa.exc.ArgumentError:
        raise QuotaStoreError(
            "the quota store URL is not a database URL "
            "(e.g. sqlite:////srv/kernelhub/quotas.sqlite, postgresql+psycopg://...)"
        ) from None


SQLITE_LOCK_WAIT_S = 30.0


def connect(url: str, read_only: bool) -> Engine:
    """An engine for the quota store at ``url``; ``read_only``: the database refuses writes."""
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise QuotaStoreError(f"the quota store needs SQLite or PostgreSQL, not {backend}")
    if read_only and backend == "sqlite" and _missing_file(parsed):
        # SQLite would create it; a reader must leave no trace
        raise QuotaStoreError(f"no quota store at {parsed.database}: {MIGRATE_HINT}")
    # SQLite: a connection that finds the database locked (another process migrating it
    # or turning on WAL, on a loaded machine) waits for it rather than failing in 5 s
    connect_args = {"timeout": SQLITE_LOCK_WAIT_S} if backend == "sqlite" else {}
    try:
        engine = sa.create_engine(
            parsed, pool_pre_ping=backend == "postgresql", connect_args=connect_args
        )
    except (ImportError, sa.exc.ArgumentError) as e:  # no such driver, bad options
        shown = parsed.render_as_string(hide_password=True)
        raise QuotaStoreError(f"cannot use the quota store {shown}: {_first_line(e)}") from None
    if backend == "sqlite":
        _take_over_sqlite_transactions(engine, read_only)
    elif read_only:
        _read_only_postgresql_sessions(engine)
    return engine


def _missing_file(url: URL) -> bool:
    database = url.database or ""
    on_disk = database not in ("", ":memory:") and not url.query.get("uri")
    return on_disk and not Path(database).exists()


def unreachable(url: URL, error: sa.exc.DBAPIError) -> QuotaStoreError:
    """The driver's error as one line, naming the store without its password."""
    shown, cause = url.render_as_string(hide_password=True), error.orig or error
    return QuotaStoreError(f"cannot open the quota store {shown}: {_first_line(cause)}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _take_over_sqlite_transactions(engine: Engine, read_only: bool) -> None:
    """Let SQLAlchemy begin transactions: Python's sqlite3 module (3.11) commits before DDL,
    so a migration would not be atomic. SQLAlchemy's documented pysqlite recipe."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        if read_only:
            # the database refuses every change; WAL is the owner's to set (it is kept
            # in the file), and a reader of an empty file must leave it empty
            dbapi_connection.execute("PRAGMA query_only=ON")
        else:
            # WAL: readers (the hub checking a spawn) never wait for the accounting writer
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("kernelhub_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _read_only_postgresql_sessions(engine: Engine) -> None:
    """Every transaction of ``engine``'s connections READ ONLY: the server refuses changes."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        # outside a transaction, so the setting is the session's (SQLAlchemy's recipe
        # for per-connection settings)
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        dbapi_connection.autocommit = autocommit
