"""Checking a validation code, and sending a new one.

Check-and-consume is race-free: one conditional ``UPDATE`` takes an attempt only while the
code is unused, unexpired, under its attempt limit and its guard is not in backoff or
locked; a second conditional ``UPDATE`` consumes it, so of N concurrent right answers
exactly one wins. Wrong answers count against the guard (the dossier's failure counter, or
a decoy's), which survives resends: exponential backoff, then a lock.

PostgreSQL (READ COMMITTED) re-checks only the updated row when an ``UPDATE`` waits on a
lock, so the attempt's ``UPDATE`` also locks the guard row (``FOR UPDATE`` in a CTE) and
decides on that locked, current version: concurrent wrong codes are checked one after the
other, each seeing the failures counted before it. On SQLite the write lock serialises
them; ``now`` is read once the lock is held, never before.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Literal

from sqlalchemy import bindparam, case, exists, literal, select, update
from sqlalchemy.sql import Executable
from sqlmodel import Session

from opencrm_horscompte.base.db import (
    DriverConnection,
    DriverStatement,
    driver_transaction,
    upsert_insert,
    writer,
)
from opencrm_horscompte.base.limits import (
    ATTEMPTS_PER_CODE,
    BACKOFF_AFTER_FAILURES,
    LOCK_AFTER_FAILURES,
    LOCK_DURATION,
    LOOKUP_DOSSIER_MAILS,
    LOOKUP_RESEND,
    MAX_BACKOFF,
    RESEND_COOLDOWN,
    counted,
)
from opencrm_horscompte.base.models import Challenge, FailureGuard, utc
from opencrm_horscompte.base.throttle import hit, throttle_key
from opencrm_horscompte.hookspecs.host import Host
from opencrm_horscompte.lookup.start import code_hmac, issue_code, prepare_code, read_target
from opencrm_horscompte.settings.store import load_settings
from opencrm_horscompte.stats.counters import count

MAX_TYPED_LENGTH = 32
OutcomeKind = Literal[
    "granted", "wrong", "malformed", "expired", "used", "replaced", "exhausted", "wait", "locked"
]
# A failure that earns no wait leaves the guard's ``not_before`` this far in the past, so a
# concurrent request whose clock was read a little earlier is not told to wait.
NO_WAIT_SLACK = timedelta(minutes=1)


@dataclass(frozen=True)
class Outcome:
    """``granted`` (``dossier_id`` set), ``wrong``, ``malformed`` (not digits: nothing
    counted); the code is dead: ``expired``, ``used`` (``dossier_id`` set: the page may
    find it already granted, after a double click), ``replaced`` (a newer code was sent),
    ``exhausted`` (too many wrong tries on it); the guard refuses: ``wait`` / ``locked``
    (``wait`` says how long). Decoys reach them by the same rules (a decoy's code is never
    used: it can't be right)."""

    kind: OutcomeKind
    dossier_id: int | None = None
    wait: timedelta = timedelta(0)
    attempts_left: int = 0  # ``wrong``: the tries this code still takes (0: it is dead)


def backoff(failures: int) -> timedelta:
    """How long the guard waits after ``failures`` consecutive wrong codes."""
    if failures >= LOCK_AFTER_FAILURES:
        return LOCK_DURATION
    if failures <= BACKOFF_AFTER_FAILURES:
        return timedelta(0)
    return min(timedelta(seconds=2 ** (failures - BACKOFF_AFTER_FAILURES)), MAX_BACKOFF)


def clean_code(typed: str) -> str | None:
    """The typed validation code without its spaces, or None if it isn't ASCII digits (at
    most ``MAX_TYPED_LENGTH``)."""
    code = "".join(typed.split())
    if not code or len(code) > MAX_TYPED_LENGTH or not (code.isascii() and code.isdigit()):
        return None
    return code


_CHALLENGE = Challenge.__table__
_GUARD = FailureGuard.__table__
_STAMP = _CHALLENGE.c.created_at.type
_NOW = bindparam("now", type_=_STAMP)
_ID = bindparam("challenge_id", type_=_CHALLENGE.c.id.type)
_GUARD_KEY = bindparam("guard", type_=_GUARD.c.key.type)
_LIVE = (
    _CHALLENGE.c.id == _ID,
    _CHALLENGE.c.consumed_at.is_(None),
    _CHALLENGE.c.attempts < ATTEMPTS_PER_CODE,
    _CHALLENGE.c.expires_at > _NOW,
)


@cache
def _take_attempt_statement(dialect: str) -> DriverStatement:
    return DriverStatement(_take_attempt(dialect))


def _take_attempt(dialect: str) -> Executable:
    """Take one attempt on a live code whose guard is not waiting; returns what the check
    needs. On PostgreSQL the guard row is locked first (a materialised ``FOR UPDATE`` CTE)
    and the wait is decided on that locked, latest version of it."""
    returning = (
        _CHALLENGE.c.code_hmac,
        _CHALLENGE.c.guard_key,
        _CHALLENGE.c.dossier_id,
        _CHALLENGE.c.attempts,
    )
    if dialect != "postgresql":
        waiting = exists().where(_GUARD.c.key == _CHALLENGE.c.guard_key, _GUARD.c.not_before > _NOW)
        return (
            update(_CHALLENGE)
            .where(*_LIVE, ~waiting)
            .values(attempts=_CHALLENGE.c.attempts + 1)
            .returning(*returning)
        )
    # The guard row is upserted (created with no failure if absent) rather than selected
    # FOR UPDATE: it is then locked before the challenge row in every transaction, even the
    # first one, so concurrent attempts queue on it in one order and cannot deadlock.
    owner = _CHALLENGE.alias("owner")
    guard_row = select(
        owner.c.guard_key, literal(0, _GUARD.c.failures.type), bindparam("stale", type_=_STAMP)
    ).where(owner.c.id == _ID)
    insert = upsert_insert(dialect, _GUARD).from_select(
        ["key", "failures", "not_before"], guard_row
    )
    locked = (
        insert.on_conflict_do_update(
            index_elements=[_GUARD.c.key], set_={"failures": _GUARD.c.failures}
        )
        .returning(_GUARD.c.not_before)
        .cte("locked_guard")
    )
    waiting = exists().select_from(locked).where(locked.c.not_before > _NOW)
    return (
        update(_CHALLENGE)
        .where(*_LIVE, ~waiting)
        .values(attempts=_CHALLENGE.c.attempts + 1)
        .returning(*returning)
    )


# Consuming also deletes the challenge's failure guard: a trigger does it in the same
# statement (migration 0003).
_CONSUME = DriverStatement(
    update(_CHALLENGE)
    .where(_CHALLENGE.c.id == _ID, _CHALLENGE.c.consumed_at.is_(None))
    .values(consumed_at=_NOW)
    .returning(_CHALLENGE.c.id)
)
_WHY = DriverStatement(
    select(
        _CHALLENGE.c.consumed_at,
        _CHALLENGE.c.dossier_id,
        _CHALLENGE.c.attempts,
        _CHALLENGE.c.expires_at,
        _GUARD.c.failures,
        _GUARD.c.not_before,
    )
    .select_from(_CHALLENGE.outerjoin(_GUARD, _GUARD.c.key == _CHALLENGE.c.guard_key))
    .where(_CHALLENGE.c.id == _ID)
)
_CHALLENGE_OF = DriverStatement(
    select(
        _CHALLENGE.c.created_at,
        _CHALLENGE.c.guard_key,
        _CHALLENGE.c.dossier_id,
        _CHALLENGE.c.consumed_at,
    ).where(_CHALLENGE.c.id == _ID)
)


@cache
def _count_failure_statement(dialect: str) -> DriverStatement:
    """Upsert of the guard: failures + 1, and the wait that many failures earn."""
    failures = _GUARD.c.failures + 1
    waits = {n: bindparam(f"wait_{n}", type_=_STAMP) for n in range(1, LOCK_AFTER_FAILURES + 1)}
    insert = upsert_insert(dialect, _GUARD)
    return DriverStatement(
        insert.values(key=_GUARD_KEY, failures=1, not_before=bindparam("wait_1", type_=_STAMP))
        .on_conflict_do_update(
            index_elements=[_GUARD.c.key],
            set_={
                "failures": failures,
                "not_before": case(waits, value=failures, else_=bindparam("locked", type_=_STAMP)),
            },
        )
        .returning(_GUARD.c.failures)
    )


def _not_before(failures: int, now: datetime) -> datetime:
    wait = backoff(failures)
    return now + wait if wait else now - NO_WAIT_SLACK


def _count_failure(connection: DriverConnection, guard: str, now: datetime) -> int:
    """Count one failure; the guard's failures after it."""
    params: dict[str, object] = {"guard": guard, "locked": now + LOCK_DURATION}
    params.update({f"wait_{n}": _not_before(n, now) for n in range(1, LOCK_AFTER_FAILURES + 1)})
    statement = _count_failure_statement(connection.dialect.name)
    return int(statement.first(connection, params)[0])


def _why_refused(connection: DriverConnection, challenge_id: int, now: datetime) -> Outcome:
    """Why the attempt was not taken, in the order that tells the citizen what to do."""
    row = _WHY.first(connection, {"challenge_id": challenge_id})
    if row is None:
        return Outcome("replaced")
    if row.consumed_at is not None:  # only a real dossier's code is ever consumed
        return Outcome("used", dossier_id=row.dossier_id)
    waiting = row.not_before is not None and utc(row.not_before) > now
    if waiting and row.failures >= LOCK_AFTER_FAILURES:
        return Outcome("locked", wait=utc(row.not_before) - now)
    if row.attempts >= ATTEMPTS_PER_CODE:
        return Outcome("exhausted")
    if utc(row.expires_at) <= now:
        return Outcome("expired")
    if waiting:
        return Outcome("wait", wait=utc(row.not_before) - now)
    return Outcome("expired")  # not reached: a live row under no wait takes the attempt


def verify(host: Host, challenge_id: int, typed: str) -> Outcome:
    """Check ``typed`` against the challenge; on success the code is spent. Take an attempt,
    then consume it (which forgets the guard) or count a failure; then the daily
    statistics: three statements either way."""
    code = clean_code(typed)
    if code is None:
        return Outcome("malformed")
    with driver_transaction(host.engine) as connection:
        now = host.now()  # under the write lock on SQLite (BEGIN IMMEDIATE has run)
        ids = {"challenge_id": challenge_id, "now": now, "stale": now - NO_WAIT_SLACK}
        statement = _take_attempt_statement(connection.dialect.name)
        challenge = statement.first(connection, ids)
        if challenge is None:
            return _why_refused(connection, challenge_id, now)
        guard = challenge.guard_key
        # Every key is tried (no short-circuit): a code issued before a key rotation works.
        answers = [code_hmac(key, guard, code) for key in host.secret_keys]
        matches = [hmac.compare_digest(answer, challenge.code_hmac) for answer in answers]
        if any(matches) and challenge.dossier_id is not None:
            if _CONSUME.first(connection, ids) is None:
                return _why_refused(connection, challenge_id, now)
            count(connection, now, validations_ok=1)
            return Outcome("granted", dossier_id=challenge.dossier_id)
        failures = _count_failure(connection, guard, now)
        count(connection, now, validations_failed=1, locks=int(failures == LOCK_AFTER_FAILURES))
        return Outcome("wrong", attempts_left=max(0, ATTEMPTS_PER_CODE - challenge.attempts))


@dataclass(frozen=True)
class Resent:
    """``challenge_id`` of the new code, or the wait before one may be asked; None when
    the code asked about is gone: replaced by a newer one, or ``used`` (spent: a resend
    would mail a code for a lookup already done)."""

    challenge_id: int | None
    wait: timedelta = timedelta(0)
    expiry_minutes: int | None = None
    used: bool = False


def resend(host: Host, challenge_id: int, locale: str = "fr") -> Resent:
    """A new code for the same dossier (or decoy): replaces the older one, keeps the guard's
    failure count; at most one per ``RESEND_COOLDOWN``, and the hourly cap of mails. The
    mail is rendered for a decoy too, before the write transaction."""
    with host.engine.connect() as connection:
        challenge = _CHALLENGE_OF.first(connection, {"challenge_id": challenge_id})
        if challenge is None:
            return Resent(None)
        if challenge.consumed_at is not None:
            return Resent(None, used=True)
        settings = load_settings(connection)
        target = read_target(connection, challenge.dossier_id)
    ready_at = utc(challenge.created_at) + RESEND_COOLDOWN
    guard = challenge.guard_key
    decoy_to = "decoy@invalid.example"
    prepared = prepare_code(host, settings, target, guard, decoy_to, locale)
    with Session(writer(host.engine)) as session, session.begin():
        session.connection()  # BEGIN (IMMEDIATE on SQLite) before the clock is read
        now = host.now()
        if ready_at > now:
            return Resent(challenge_id, wait=ready_at - now)
        # One resend per guard and cooldown, counted atomically: an older page, or the same
        # form posted twice (even at once), cannot mail a second code within the cooldown.
        cooldown = hit(
            session,
            throttle_key(host.secret_keys[-1], LOOKUP_RESEND.scope, guard),
            LOOKUP_RESEND,
            now,
        )
        if not cooldown.allowed:
            return Resent(challenge_id, wait=cooldown.retry_after)
        allowed = counted(host, session, LOOKUP_DOSSIER_MAILS, guard, now)
        issued = issue_code(host, session, prepared, now, mail=allowed)
        sent = int(prepared.dossier_id is not None and allowed and not issued.repeated)
        count(session, now, codes_sent=sent, codes_resent=sent)
        return Resent(issued.challenge_id, expiry_minutes=settings.validation_code_expiry_minutes)
