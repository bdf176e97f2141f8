"""The periodic purge (``opencrm_scheduled_tasks``): spent challenges, idle counters."""

from __future__ import annotations

from sqlalchemy import delete, or_
from sqlmodel import Session, col

from .db import writer
from .hookspecs.host import Host
from .limits import DAY
from .models import Challenge, FailureGuard
from .throttle import purge_expired

PURGE_EVERY_SECONDS = 3600
KEEP_SPENT_CHALLENGES = DAY


def purge_expired_state(host: Host) -> dict[str, int]:
    """Delete challenges spent or expired for a day, throttle counters past the longest
    window, failure guards idle for a day (a lock included). Returns rows deleted per table."""
    now = host.now()
    cutoff = now - KEEP_SPENT_CHALLENGES
    with Session(writer(host.engine)) as session, session.begin():
        challenges = session.exec(  # type: ignore[call-overload]
            delete(Challenge).where(
                or_(col(Challenge.expires_at) < cutoff, col(Challenge.consumed_at) < cutoff)
            )
        ).rowcount
        counters = purge_expired(session, now, older_than=DAY)
        guards = session.exec(  # type: ignore[call-overload]
            delete(FailureGuard).where(col(FailureGuard.not_before) < cutoff)
        ).rowcount
    return {"challenges": challenges, "counters": counters, "guards": guards}
