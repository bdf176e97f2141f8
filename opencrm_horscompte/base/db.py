"""Engines that behave the same on SQLite and PostgreSQL for the plugin's transactions.

SQLite needs two adjustments: pysqlite's own transaction handling breaks SAVEPOINT, so
SQLAlchemy emits BEGIN itself; and a transaction that will write must take the write lock up
front (``BEGIN IMMEDIATE``), through :func:`writer`, so concurrent writers wait on
``busy_timeout`` instead of failing when a read lock is upgraded. Other transactions begin
deferred: with WAL they read while a writer works, even one of the same thread. On
PostgreSQL :func:`writer` changes nothing.

The hot paths' driver-level execution lives in :mod:`opencrm_horscompte.base.driver`; its
public names are re-exported here, where hosts and plugins import them.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Column, DateTime, Dialect, Table, TypeDecorator, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlmodel import create_engine

from opencrm_horscompte.base.driver import (
    BEGIN,
    BEGIN_IMMEDIATE,
    DriverConnection,
    DriverStatement,
    connection_of,
    driver_connection,
    driver_transaction,
)
from opencrm_horscompte.base.manifest import PluginRefused

__all__ = [
    "BEGIN",
    "BEGIN_IMMEDIATE",
    "LOCK_TIMEOUT_MS",
    "MAX_ROW_ID",
    "DriverConnection",
    "DriverStatement",
    "UTCDateTime",
    "check_supported_database",
    "connection_of",
    "driver_connection",
    "driver_transaction",
    "make_engine",
    "timestamp_column",
    "unsupported_database",
    "upsert_insert",
    "writer",
]

# The largest id an INTEGER primary key holds on PostgreSQL (every id column here): a
# number typed or put in a URL beyond it names no row, and must never reach the database
# (where it is a data error, not a missing row).
MAX_ROW_ID = 2**31 - 1

# Their names before base.driver existed (private, but test harnesses patched them);
# deprecated, removed in the next release.
_BEGIN = BEGIN
_BEGIN_IMMEDIATE = BEGIN_IMMEDIATE

_SQLITE_RETURNING = (3, 35, 0)
LOCK_TIMEOUT_MS = 30_000
"""How long a statement waits for a lock: SQLite's ``busy_timeout``, PostgreSQL's
``lock_timeout``. Past it the statement fails (``OperationalError``)."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``: ``sqlite:///path`` or ``postgresql+psycopg://...``.

    Its errors don't carry the statement's parameters (``hide_parameters``): they are
    logged, and the parameters are addresses, codes and mails."""
    kwargs.setdefault("hide_parameters", True)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        if parsed.get_backend_name() == "postgresql":
            # a request waits for a lock at most this long, then fails (the host answers 503)
            # instead of hanging: the same bound as SQLite's busy_timeout
            kwargs.setdefault("connect_args", {"options": f"-c lock_timeout={LOCK_TIMEOUT_MS}"})
        return create_engine(url, pool_pre_ping=True, **kwargs)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={LOCK_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_WRITER_OPTION, False)
        (BEGIN_IMMEDIATE if immediate else BEGIN).execute(connection).close()

    return engine


_WRITER_OPTION = "horscompte_writer"


@cache
def writer(engine: Engine) -> Engine:
    """``engine`` for a transaction that writes: on SQLite it begins ``IMMEDIATE``."""
    return engine.execution_options(**{_WRITER_OPTION: True})


def unsupported_database(name: str) -> str | None:
    """Why the plugin can't run on the database of dialect ``name``, worded for the admin
    (French), or ``None``: it runs on PostgreSQL, and on SQLite 3.35 or newer (``RETURNING``,
    upserts)."""
    if name == "sqlite" and sqlite3.sqlite_version_info < _SQLITE_RETURNING:
        return (
            f"SQLite {sqlite3.sqlite_version} est trop ancien : "
            "le module demande SQLite 3.35 ou plus récent"
        )
    if name not in ("sqlite", "postgresql"):
        return f"base de données non prise en charge : {name} (PostgreSQL ou SQLite 3.35 et plus)"
    return None


def check_typed_url(url: str) -> None:
    """Raise a one-line :class:`ValueError` unless ``url``, typed by a person (a command's
    option, an environment variable), is a URL of a database the plugin runs on."""
    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError) as error:  # not a URL, or a port that isn't a number
        raise ValueError(f"not a database URL ({error})") from None
    if reason := unsupported_database(backend):
        raise ValueError(reason)


def engine_for_typed_url(url: str) -> Engine:
    """:func:`make_engine` for a URL a person typed, checked by :func:`check_typed_url`;
    also a one-line :class:`ValueError` when its driver is unknown or not installed.
    Nothing is connected yet."""
    check_typed_url(url)
    try:
        return make_engine(url)
    except ArgumentError as error:  # an unknown driver name
        raise ValueError(str(error)) from None
    except ImportError as error:  # a known dialect whose driver isn't installed
        raise ValueError(f"driver not installed ({error.name or error})") from None


def database_error_line(error: SQLAlchemyError) -> str:
    """A database error in one line, for a command's stderr: its kind and the driver's
    first line (``OperationalError: connection refused``), without SQLAlchemy's trailer."""
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()
    return f"{type(error).__name__}: {reason[0] if reason else ''}".rstrip(": ")


def upsert_insert(name: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """``INSERT INTO table`` in dialect ``name``, for ``on_conflict_do_update`` /
    ``on_conflict_do_nothing`` and ``returning`` (one atomic statement on SQLite >= 3.35 and
    PostgreSQL)."""
    if reason := unsupported_database(name):
        raise NotImplementedError(reason)
    return postgresql.insert(table) if name == "postgresql" else sqlite.insert(table)


def check_supported_database(engine: Engine) -> None:
    """Raise :class:`PluginRefused`, worded for the admin, unless ``engine``'s database is
    one the plugin runs on. Checked at setup, before any migration touches the database."""
    if reason := unsupported_database(engine.dialect.name):
        raise PluginRefused(reason)


class UTCDateTime(TypeDecorator[datetime]):
    """The one timestamp column type of the plugin and the reference host:
    ``DateTime(timezone=True)`` that refuses naive datetimes (their zone is unknown) and
    always reads back aware UTC (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Any:
        """On SQLite with its default storage format, :meth:`process_bind_param` and the
        dialect's text formatting in one step (the same text, in a fifth of the time: the
        hot paths bind a dozen timestamps per request)."""
        stored_format = getattr(self.impl_instance.dialect_impl(dialect), "_storage_format", None)
        if dialect.name == "sqlite" and stored_format == _SQLITE_DEFAULT_FORMAT:
            return _sqlite_utc_text
        return super().bind_processor(dialect)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_SQLITE_DEFAULT_FORMAT = sqlite.DATETIME._storage_format


def _sqlite_utc_text(value: datetime | None) -> str | None:
    """``UTCDateTime``'s bind value as SQLite's ``DATETIME`` stores it by default:
    ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, without an offset."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # the date, the time, no "+00:00"


def timestamp_column(*, nullable: bool = False, index: bool = False) -> Column[datetime]:
    """A :class:`UTCDateTime` column for a table model (``Field(sa_column=...)``)."""
    return Column(UTCDateTime, nullable=nullable, index=index)
