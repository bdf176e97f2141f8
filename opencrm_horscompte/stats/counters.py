"""Daily counters: one row per UTC day in ``horscompte_daily_stat``, bumped by ONE upsert
that adds the given increments (zeros included) to their columns.

The statement depends only on the names of the metrics counted, never on their values, so
a caller on a path that must not be told apart (a lookup that matches and one that
doesn't, the identity step's branches) bumps ``lookups=1, codes_sent=0`` or
``lookups=1, codes_sent=1`` with the same SQL and the same parameters' names: only the
values differ. Reading a year is at most 366 rows, so the page stays fast whatever the
number of events counted.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import cache

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import TextClause
from sqlmodel import Session

from opencrm_horscompte.base.db import DriverConnection, DriverStatement, connection_of
from opencrm_horscompte.base.models import DailyStat

METRICS = (
    "deposits",
    "proposals_shown",
    "proposals_accepted",
    "proposals_declined",
    "lookups",
    "codes_sent",
    "codes_resent",
    "validations_ok",
    "validations_failed",
    "locks",
    "throttle_refusals",
)
_TABLE = DailyStat.__table__
_NAME = _TABLE.name


@cache
def _upsert(metrics: tuple[str, ...] = METRICS) -> DriverStatement:
    """:func:`upsert_statement` at driver speed (every lookup, verify and deposit)."""
    return DriverStatement(upsert_statement(metrics))


@cache
def upsert_statement(metrics: tuple[str, ...] = METRICS) -> TextClause:
    """``INSERT ... ON CONFLICT (day) DO UPDATE SET m = m + excluded.m`` for each of
    ``metrics`` (every metric by default), as SQL text both PostgreSQL and SQLite speak
    (compiled once per tuple of names); the other counters of a new day start at 0."""
    columns = ", ".join(METRICS)
    values = ", ".join(f":{metric}" if metric in metrics else "0" for metric in METRICS)
    sets = ", ".join(f"{metric} = {_NAME}.{metric} + excluded.{metric}" for metric in metrics)
    conflict = f"DO UPDATE SET {sets}" if metrics else "DO NOTHING"
    sql = (
        f"INSERT INTO {_NAME} (day, {columns}) VALUES (:day, {values}) ON CONFLICT (day) {conflict}"
    )
    return text(sql).bindparams(bindparam("day", type_=_TABLE.c.day.type))


def utc_day(moment: datetime) -> date:
    """The UTC day of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    return moment.astimezone(UTC).date()


_METRIC_NAMES = frozenset(METRICS)


def count(target: Session | Connection | DriverConnection, at: datetime, **increments: int) -> None:
    """Add ``increments`` (metric name -> 0, 1 or more) to the counters of ``at``'s UTC day,
    in the caller's transaction. Unknown metric names raise; absent metrics add 0."""
    if not _METRIC_NAMES.issuperset(increments):
        raise ValueError(f"unknown metrics: {sorted(set(increments) - _METRIC_NAMES)}")
    params: dict[str, object] = {metric: int(value) for metric, value in increments.items()}
    params["day"] = utc_day(at)
    _upsert(tuple(increments)).execute(connection_of(target), params).close()
