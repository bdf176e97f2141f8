"""The periodic purge (``opencrm_scheduled_tasks``): spent challenges, idle counters."""

from __future__ import annotations

from sqlalchemy import delete, or_
from sqlmodel import Session, col

from opencrm_horscompte.base.db import writer
from opencrm_horscompte.base.limits import DAY, LOCK_AFTER_FAILURES
from opencrm_horscompte.base.models import Challenge, FailureGuard
from opencrm_horscompte.base.throttle import purge_expired
from opencrm_horscompte.hookspecs.host import Host

PURGE_EVERY_SECONDS = 3600
KEEP_SPENT_CHALLENGES = DAY


def purge_expired_state(host: Host) -> dict[str, int]:
    """Delete challenges spent or expired for a day, throttle counters past the longest
    window, and failure guards idle for a day that never reached the lock: a dossier that
    was locked stays so, one more failure re-locking it, until a right code resets it.
    Returns the rows deleted per table."""
    now = host.now()
    cutoff = now - KEEP_SPENT_CHALLENGES
    with Session(writer(host.engine)) as session, session.begin():
        challenges = session.exec(
            delete(Challenge).where(
                or_(col(Challenge.expires_at) < cutoff, col(Challenge.consumed_at) < cutoff)
            )
        ).rowcount
        counters = purge_expired(session, now, older_than=DAY)
        guards = session.exec(
            delete(FailureGuard).where(
                col(FailureGuard.not_before) < cutoff,
                col(FailureGuard.failures) < LOCK_AFTER_FAILURES,
            )
        ).rowcount
    return {"challenges": challenges, "counters": counters, "guards": guards}
