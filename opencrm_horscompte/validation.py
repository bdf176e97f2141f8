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
from typing import Literal

from sqlalchemy import case, delete, exists, update
from sqlmodel import Session, col, select

from .db import upsert_insert, writer
from .hookspecs.host import Host
from .limits import (
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
from .lookup import code_hmac, send_code
from .models import Challenge, FailureGuard, TrackingCode, utc
from .settings_store import load_settings
from .throttle import hit, throttle_key

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


def _take_attempt(session: Session, challenge_id: int, now: datetime) -> Challenge | None:
    guard_blocked = exists().where(
        col(FailureGuard.key) == col(Challenge.guard_key), col(FailureGuard.not_before) > now
    )
    statement = (
        update(Challenge)
        .where(
            col(Challenge.id) == challenge_id,
            col(Challenge.consumed_at).is_(None),
            col(Challenge.attempts) < ATTEMPTS_PER_CODE,
            col(Challenge.expires_at) > now,
            ~guard_blocked,
        )
        .values(attempts=col(Challenge.attempts) + 1)
        .returning(Challenge)
    )
    return session.exec(statement).scalars().first()  # type: ignore[call-overload, no-any-return]


def _consume(session: Session, challenge_id: int, now: datetime) -> bool:
    statement = (
        update(Challenge)
        .where(col(Challenge.id) == challenge_id, col(Challenge.consumed_at).is_(None))
        .values(consumed_at=now)
        .returning(col(Challenge.id))
    )
    return session.exec(statement).first() is not None  # type: ignore[call-overload]


def _count_failure(session: Session, key: str, now: datetime) -> None:
    table = FailureGuard.__table__
    failures = table.c.failures + 1
    waits = {n: now + backoff(n) for n in range(1, LOCK_AFTER_FAILURES + 1)}
    statement = (
        upsert_insert(session, table)
        .values(key=key, failures=1, not_before=now)
        .on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "failures": failures,
                "not_before": case(waits, value=failures, else_=now + LOCK_DURATION),
            },
        )
    )
    session.exec(statement)  # type: ignore[call-overload]


def _why_refused(session: Session, challenge_id: int, now: datetime) -> Outcome:
    challenge = session.get(Challenge, challenge_id)
    if challenge is None:
        return Outcome("dead")
    guard = session.get(FailureGuard, challenge.guard_key)
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
    with Session(writer(host.engine)) as session, session.begin():
        challenge = _take_attempt(session, challenge_id, now)
        if challenge is None:
            return _why_refused(session, challenge_id, now)
        guard = challenge.guard_key
        # Every key is tried (no short-circuit): a code issued before a key rotation works.
        answers = [code_hmac(key, guard, code) for key in host.secret_keys]
        matches = [hmac.compare_digest(answer, challenge.code_hmac) for answer in answers]
        if any(matches) and challenge.dossier_id is not None:
            if not _consume(session, challenge_id, now):
                return Outcome("dead")
            session.exec(delete(FailureGuard).where(col(FailureGuard.key) == guard))  # type: ignore[call-overload]
            return Outcome("granted", dossier_id=challenge.dossier_id)
        _count_failure(session, guard, now)
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
        fresh = send_code(host, session, settings, target, challenge.guard_key, mail=allowed)
        assert fresh.id is not None
        return Resent(fresh.id, expiry_minutes=settings.validation_code_expiry_minutes)
