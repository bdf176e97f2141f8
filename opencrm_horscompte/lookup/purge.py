"""The periodic purge (``opencrm_scheduled_tasks``): spent challenges, idle counters."""

from __future__ import annotations

from sqlalchemy import delete, or_
from sqlmodel import Session, col

from opencrm_horscompte.base.db import writer
from opencrm_horscompte.base.limits import DAY, LOCK_AFTER_FAILURES
from opencrm_horscompte.base.models import Challenge, FailureGuard
from opencrm_horscompte.base.throttle import purge_expired
from opencrm_horscompte.hookspecs.host import Host
from opencrm_horscompte.privacy.retention import apply_retention, spent_state_cutoff
from opencrm_horscompte.settings.store import load_settings

PURGE_EVERY_SECONDS = 3600
KEEP_SPENT_CHALLENGES = DAY


def purge_expired_state(host: Host) -> dict[str, int]:
    """Delete challenges spent or expired for a day, throttle counters past the longest
    window, and failure guards idle for a day that never reached the lock: a dossier that
    was locked stays so, one more failure re-locking it, until a right code resets it.
    Spent state is kept ``retention_spent_state_days`` (at least ``KEEP_SPENT_CHALLENGES``),
    then the retention settings apply (:mod:`opencrm_horscompte.privacy.retention`).
    Returns the rows deleted (or anonymised) per table."""
    now = host.now()
    with Session(writer(host.engine)) as session, session.begin():
        settings = load_settings(session)
        cutoff = min(now - KEEP_SPENT_CHALLENGES, spent_state_cutoff(settings, now))
        challenges = session.exec(
            delete(Challenge).where(
                or_(col(Challenge.expires_at) < cutoff, col(Challenge.consumed_at) < cutoff)
            )
        ).rowcount
        counters = purge_expired(session, now, older_than=max(DAY, now - cutoff))
        guards = session.exec(
            delete(FailureGuard).where(
                col(FailureGuard.not_before) < cutoff,
                col(FailureGuard.failures) < LOCK_AFTER_FAILURES,
            )
        ).rowcount
        retained = apply_retention(session, settings, now)
    return {"challenges": challenges, "counters": counters, "guards": guards, **retained}
