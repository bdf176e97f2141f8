"""The periodic purge (``opencrm_scheduled_tasks``): spent challenges, idle counters."""

from __future__ import annotations

from sqlalchemy import delete, or_
from sqlmodel import Session, col

from opencrm_horscompte.base.db import writer
from opencrm_horscompte.base.limits import DAY, LOCK_AFTER_FAILURES
from opencrm_horscompte.base.models import AuditRecord, Challenge, FailureGuard
from opencrm_horscompte.base.throttle import purge_expired
from opencrm_horscompte.hookspecs.host import Host
from opencrm_horscompte.identity.step import NO_INVITATION
from opencrm_horscompte.lookup.pages import FORGOTTEN_MISS
from opencrm_horscompte.lookup.start import LOOKUP_MISS
from opencrm_horscompte.privacy.retention import apply_retention, spent_state_cutoff
from opencrm_horscompte.settings.store import load_settings

PURGE_EVERY_SECONDS = 3600
KEEP_SPENT_CHALLENGES = DAY
# Audit events written where a mail would have been (a lookup or "code oublié" that matched
# nothing or reached a limit, a discreet invitation not sent): the same work either way.
# Anyone can make them, one per request, so they go with the spent state.
STAND_IN_EVENTS = (LOOKUP_MISS, FORGOTTEN_MISS, NO_INVITATION)


def purge_expired_state(host: Host) -> dict[str, int]:
    """Delete challenges spent or expired for a day, throttle counters past the longest
    window, failure guards idle for a day that never reached the lock (a dossier that
    was locked stays so, one more failure re-locking it, until a right code resets it), and
    the audit events that stood in for a mail (``STAND_IN_EVENTS``), as old.
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
        stand_ins = session.exec(
            delete(AuditRecord).where(
                col(AuditRecord.kind).in_(STAND_IN_EVENTS), col(AuditRecord.at) < cutoff
            )
        ).rowcount
        retained = apply_retention(session, settings, now)
    return {
        "challenges": challenges,
        "counters": counters,
        "guards": guards,
        "stand_in_events": stand_ins,
        **retained,
    }
