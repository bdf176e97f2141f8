"""Checking a validation code, and sending a new one.

Check-and-consume is race-free: one conditional ``UPDATE`` takes an attempt only while the
code is unused, unexpired, under its attempt limit and its guard is not in backoff or
locked; a second conditional ``UPDATE`` consumes it, so of N concurrent right answers
exactly one wins. Wrong answers count against the guard (the dossier's failure counter),
which survives resends: exponential backoff, then a lock.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Literal

from sqlalchemy import bindparam, case, delete, exists, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable
from sqlmodel import Session, select

from opencrm_horscompte.base.db import upsert_insert, writer
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
from opencrm_horscompte.base.models import Challenge, FailureGuard, TrackingCode, utc
from opencrm_horscompte.base.throttle import hit, throttle_key
from opencrm_horscompte.hookspecs.host import Host
from opencrm_horscompte.lookup.start import code_hmac, send_code
from opencrm_horscompte.settings.store import load_settings
from opencrm_horscompte.stats.counters import count

MAX_TYPED_LENGTH = 32
OutcomeKind = Literal["granted", "wrong", "malformed", "dead", "wait", "locked"]


@dataclass(frozen=True)
class Outcome:
    """``granted`` (``dossier_id`` set), ``wrong``, ``malformed`` (not digits: nothing
    counted), ``dead`` (expired, used, replaced or out of attempts), ``wait`` / ``locked``
    (the guard's backoff or lock: ``wait`` says how long)."""

    kind: OutcomeKind
    dossier_id: int | None = None
    wait: timedelta = timedelta(0)


def backoff(failures: int) -> timedelta:
    """How long the guard waits after ``failures`` consecutive wrong codes."""
    if failures >= LOCK_AFTER_FAILURES:
        return LOCK_DURATION
    if failures <= BACKOFF_AFTER_FAILURES:
        return timedelta(0)
    return min(timedelta(seconds=2 ** (failures - BACKOFF_AFTER_FAILURES)), MAX_BACKOFF)


def _clean(typed: str) -> str | None:
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

# Prebuilt Core statements (compiled once, cached): this is the hot path of a lookup.
_TAKE_ATTEMPT = (
    update(_CHALLENGE)
    .where(
        _CHALLENGE.c.id == _ID,
        _CHALLENGE.c.consumed_at.is_(None),
        _CHALLENGE.c.attempts < ATTEMPTS_PER_CODE,
        _CHALLENGE.c.expires_at > _NOW,
        ~exists().where(_GUARD.c.key == _CHALLENGE.c.guard_key, _GUARD.c.not_before > _NOW),
    )
    .values(attempts=_CHALLENGE.c.attempts + 1)
    .returning(_CHALLENGE.c.code_hmac, _CHALLENGE.c.guard_key, _CHALLENGE.c.dossier_id)
)
_CONSUME = (
    update(_CHALLENGE)
    .where(_CHALLENGE.c.id == _ID, _CHALLENGE.c.consumed_at.is_(None))
    .values(consumed_at=_NOW)
    .returning(_CHALLENGE.c.id)
)
_FORGET_GUARD = delete(_GUARD).where(_GUARD.c.key == _GUARD_KEY)
_WHY = (
    select(_GUARD.c.failures, _GUARD.c.not_before)
    .select_from(_CHALLENGE.join(_GUARD, _GUARD.c.key == _CHALLENGE.c.guard_key))
    .where(_CHALLENGE.c.id == _ID)
)


@cache
def _count_failure_statement(dialect: str) -> Executable:
    """Upsert of the guard: failures + 1, and the wait that many failures earn."""
    failures = _GUARD.c.failures + 1
    waits = {n: bindparam(f"wait_{n}", type_=_STAMP) for n in range(1, LOCK_AFTER_FAILURES + 1)}
    insert = upsert_insert(dialect, _GUARD)
    return (
        insert.values(key=_GUARD_KEY, failures=1, not_before=_NOW)
        .on_conflict_do_update(
            index_elements=[_GUARD.c.key],
            set_={
                "failures": failures,
                "not_before": case(waits, value=failures, else_=bindparam("locked", type_=_STAMP)),
            },
        )
        .returning(_GUARD.c.failures)
    )


def _count_failure(connection: Connection, guard: str, now: datetime) -> int:
    """Count one failure; the guard's failures after it."""
    params: dict[str, object] = {"guard": guard, "now": now, "locked": now + LOCK_DURATION}
    params.update({f"wait_{n}": now + backoff(n) for n in range(1, LOCK_AFTER_FAILURES + 1)})
    return int(
        connection.execute(_count_failure_statement(connection.dialect.name), params).scalar_one()
    )


def _why_refused(connection: Connection, challenge_id: int, now: datetime) -> Outcome:
    guard = connection.execute(_WHY, {"challenge_id": challenge_id}).first()
    if guard is not None and utc(guard.not_before) > now:
        locked = guard.failures >= LOCK_AFTER_FAILURES
        return Outcome("locked" if locked else "wait", wait=utc(guard.not_before) - now)
    return Outcome("dead")


def verify(host: Host, challenge_id: int, typed: str) -> Outcome:
    """Check ``typed`` against the challenge; on success the code is spent."""
    code = _clean(typed)
    if code is None:
        return Outcome("malformed")
    now = host.now()
    ids = {"challenge_id": challenge_id, "now": now}
    with writer(host.engine).begin() as connection:
        challenge = connection.execute(_TAKE_ATTEMPT, ids).first()
        if challenge is None:
            return _why_refused(connection, challenge_id, now)
        guard = challenge.guard_key
        # Every key is tried (no short-circuit): a code issued before a key rotation works.
        answers = [code_hmac(key, guard, code) for key in host.secret_keys]
        matches = [hmac.compare_digest(answer, challenge.code_hmac) for answer in answers]
        if any(matches) and challenge.dossier_id is not None:
            if connection.execute(_CONSUME, ids).first() is None:
                return Outcome("dead")
            connection.execute(_FORGET_GUARD, {"guard": guard})
            count(connection, now, validations_ok=1)
            return Outcome("granted", dossier_id=challenge.dossier_id)
        failures = _count_failure(connection, guard, now)
        count(connection, now, validations_failed=1, locks=int(failures == LOCK_AFTER_FAILURES))
        return Outcome("wrong")


@dataclass(frozen=True)
class Resent:
    """``challenge_id`` of the new code, or the wait before one may be asked."""

    challenge_id: int | None
    wait: timedelta = timedelta(0)
    expiry_minutes: int | None = None


def resend(host: Host, challenge_id: int) -> Resent:
    """A new code for the same dossier (or decoy): kills the older one, keeps the guard's
    failure count; at most one per ``RESEND_COOLDOWN``, and the hourly cap of mails."""
    now = host.now()
    with Session(writer(host.engine)) as session, session.begin():
        challenge = session.get(Challenge, challenge_id)
        if challenge is None:
            return Resent(None)
        ready_at = utc(challenge.created_at) + RESEND_COOLDOWN
        if ready_at > now:
            return Resent(challenge_id, wait=ready_at - now)
        # One resend per guard and cooldown, counted atomically: an older page, or the same
        # form posted twice (even at once), cannot mail a second code within the cooldown.
        cooldown = hit(
            session,
            throttle_key(host.secret_keys[-1], LOOKUP_RESEND.scope, challenge.guard_key),
            LOOKUP_RESEND,
            now,
        )
        if not cooldown.allowed:
            return Resent(challenge_id, wait=cooldown.retry_after)
        target = None
        if challenge.dossier_id is not None:
            target = session.exec(
                select(TrackingCode).where(TrackingCode.dossier_id == challenge.dossier_id)
            ).first()
        settings = load_settings(session)
        allowed = counted(host, session, LOOKUP_DOSSIER_MAILS, challenge.guard_key)
        count(session, now, codes_sent=int(target is not None and allowed))
        fresh = send_code(host, session, settings, target, challenge.guard_key, mail=allowed)
        return Resent(fresh, expiry_minutes=settings.validation_code_expiry_minutes)
