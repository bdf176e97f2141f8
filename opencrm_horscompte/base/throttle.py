"""Fixed-window rate limits shared by every worker, kept in ``horscompte_throttle``.

A counter is one row per key. A window that started at ``t`` covers ``[t, t + window)``: a
hit at ``t + window`` or later starts a new window (count 1). :func:`hit` counts and reads
back in one atomic ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, so N workers
counting the same key never lose an increment, and exactly one hit per window sees
``count == limit + 1`` (:attr:`Hit.first_refusal`). Refused hits are counted too.

Keys are HMACs (:func:`throttle_key`): client addresses and emails are never stored. The
caller normalises the value first (e.g. lowercases an email). Using the newest secret key
means a key rotation restarts every counter.

Transactions: the functions run in the caller's session and never commit. On SQLite, a
session that writes (:func:`hit`, :func:`reset`, :func:`purge_expired`) must be opened on
:func:`.db.writer` so it begins ``IMMEDIATE``. On PostgreSQL, :func:`hit` keeps the row
locked until the caller's transaction ends: keep that transaction short (or count in a
transaction of its own) so requests on the same key do not queue behind it; at
``REPEATABLE READ`` or above, concurrent hits may fail with a serialisation error.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Dialect, bindparam, column, delete, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnClause
from sqlmodel import Session

from opencrm_horscompte.base.db import DriverConnection, DriverStatement, connection_of
from opencrm_horscompte.base.models import ThrottleCounter, utc

_TABLE = ThrottleCounter.__table__
_NAME = _TABLE.name
_KEY_LENGTH = 64


@dataclass(frozen=True)
class Limit:
    """At most ``limit`` allowed hits per key in each ``window``, e.g.
    ``Limit("identity.client", 30, timedelta(hours=1))``."""

    scope: str
    limit: int
    window: timedelta

    def __post_init__(self) -> None:
        if not self.scope or "\0" in self.scope:
            raise ValueError("scope must be a non-empty string without NUL")
        if self.limit < 0:
            raise ValueError("limit must be >= 0")
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")


@dataclass(frozen=True)
class Hit:
    """The outcome of one :func:`hit`.

    ``count`` includes this hit; ``allowed`` is ``count <= limit``; ``first_refusal`` is
    true for the one hit with ``count == limit + 1`` (audit once per window);
    ``retry_after`` is the time left in the window when refused, zero when allowed.
    """

    count: int
    allowed: bool
    first_refusal: bool
    retry_after: timedelta


def throttle_key(secret: bytes, scope: str, value: str) -> str:
    """Hex HMAC-SHA256 of ``scope`` NUL ``value`` (64 characters)."""
    if not secret:
        raise ValueError("secret must not be empty")
    if not scope or "\0" in scope:
        raise ValueError("scope must be a non-empty string without NUL")
    message = scope.encode() + b"\0" + value.encode("utf-8", "surrogatepass")
    return hmac_sha256_hex(secret, message)


def hmac_sha256_hex(secret: bytes, message: bytes) -> str:
    """Hex HMAC-SHA256 of ``message`` under ``secret``, from the key's state prepared once
    per process (a third less work than ``hmac.new`` per call; a lookup makes five)."""
    keyed = _keyed_sha256(secret).copy()
    keyed.update(message)
    return keyed.hexdigest()


@lru_cache(maxsize=16)
def _keyed_sha256(secret: bytes) -> hmac.HMAC:
    return hmac.new(secret, digestmod=hashlib.sha256)


def hit(
    session: Session | Connection | DriverConnection, key: str, limit: Limit, now: datetime
) -> Hit:
    """Count one event for ``key`` at ``now`` and return the count after it (no commit)."""
    return hit_many(session, [(key, limit)], now)[0]


def hit_many(
    session: Session | Connection | DriverConnection,
    counted: Sequence[tuple[str, Limit]],
    now: datetime,
) -> list[Hit]:
    """:func:`hit` for several keys in ONE statement (a multi-row upsert), in order.

    Rows are written in key order, so concurrent callers lock them in the same order and
    cannot deadlock on PostgreSQL.
    """
    if len({key for key, _ in counted}) != len(counted):
        raise ValueError("each key may be counted once per statement")
    for key, _ in counted:
        _check_key(key)
    now = _aware_utc(now)
    params: dict[str, object] = {"now": now}
    ordered = sorted(counted, key=_first)
    for (key_name, expires_name), (key, limit) in zip(
        _parameter_names(len(counted)), ordered, strict=True
    ):
        params[key_name] = key
        params[expires_name] = now + limit.window
    connection = connection_of(session)
    rows = _upsert(len(counted)).all(connection, params)
    results = {key: (count, expires) for key, count, expires in rows}
    hits = []
    for key, limit in counted:
        count, stored_expiry = results[key]
        allowed = count <= limit.limit
        retry_after = _NO_WAIT
        if not allowed:  # the window's end, read only for a refused hit (the rare one)
            expires_at: datetime = _read_timestamp(connection.dialect)(stored_expiry)
            retry_after = max(expires_at - now, _NO_WAIT)
        hits.append(Hit(count, allowed, count == limit.limit + 1, retry_after))
    return hits


_NO_WAIT = timedelta(0)
_first = itemgetter(0)


@cache
def _parameter_names(rows: int) -> tuple[tuple[str, str], ...]:
    """The key and window-end parameter names of :func:`_upsert`'s rows."""
    return tuple((f"key_{index}", f"expires_{index}") for index in range(rows))


@cache
def _upsert(rows: int) -> DriverStatement:
    """The upsert of ``rows`` counters, as SQL text that PostgreSQL and SQLite both speak:
    a new window when the stored one has expired, else count + 1. (A multi-row insert
    built with the expression language is compiled anew on every call; text is cached.)"""
    values = ", ".join(f"(:key_{index}, :now, :expires_{index}, 1)" for index in range(rows))
    stale = f"{_NAME}.expires_at <= excluded.window_start"
    sql = (
        f'INSERT INTO {_NAME} ("key", window_start, expires_at, count) VALUES {values} '
        f'ON CONFLICT ("key") DO UPDATE SET '
        f"count = CASE WHEN {stale} THEN 1 ELSE {_NAME}.count + 1 END, "
        f"window_start = CASE WHEN {stale} THEN excluded.window_start "
        f"ELSE {_NAME}.window_start END, "
        f"expires_at = CASE WHEN {stale} THEN excluded.expires_at ELSE {_NAME}.expires_at END "
        f'RETURNING "key", count, expires_at'
    )
    stamp = _TABLE.c.window_start.type
    typed = [bindparam("now", type_=stamp)]
    typed += [bindparam(f"expires_{index}", type_=stamp) for index in range(rows)]
    # expires_at comes back as the driver gives it (no result processor): see _read_timestamp
    columns: tuple[ColumnClause[Any], ...] = (_TABLE.c.key, _TABLE.c.count, column("expires_at"))
    return DriverStatement(text(sql).bindparams(*typed).columns(*columns))


@cache
def _read_timestamp(dialect: Dialect) -> Callable[[Any], Any]:
    """Reads a stored ``expires_at`` as the driver returns it: an aware UTC datetime."""
    processor = _TABLE.c.expires_at.type.dialect_impl(dialect).result_processor(dialect, None)
    return processor if processor is not None else utc


def reset(session: Session, key: str) -> None:
    """Forget ``key``'s counter (e.g. after a success)."""
    session.exec(delete(_TABLE).where(_TABLE.c.key == key))


def purge_expired(session: Session, now: datetime, older_than: timedelta) -> int:
    """Delete counters whose window started before ``now - older_than``; return how many.

    ``older_than`` must be at least the longest window in use, or live counters restart.
    """
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    cutoff = _aware_utc(now) - older_than
    result = session.exec(delete(_TABLE).where(_TABLE.c.window_start < cutoff))
    return int(result.rowcount)


def _check_key(key: str) -> None:
    if not 0 < len(key) <= _KEY_LENGTH:
        raise ValueError("key must be 1 to 64 characters (use throttle_key())")


def _aware_utc(now: datetime) -> datetime:
    # SQLite stores timestamps as text without an offset: compare and store UTC only.
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return utc(now)
