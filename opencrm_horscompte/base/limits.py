"""Every rate limit and lifetime the plugin enforces, in one place (the admin page's
strength estimates and the README read them from here)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection
from sqlmodel import Session

from opencrm_horscompte.base.db import DriverConnection, connection_of
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.throttle import Limit, hit_many, throttle_key
from opencrm_horscompte.hookspecs.host import Host

THROTTLE_REFUSED = "throttle.refused"

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

# Identity step (an account-existence oracle by design): per client address, per browser
# session, and invitation mails per address in discreet mode.
IDENTITY_CLIENT = Limit("identity.client", 30, HOUR)
IDENTITY_SESSION = Limit("identity.session", 10, HOUR)
IDENTITY_INVITATION = Limit("identity.invitation", 3, DAY)

# Lookup (email + tracking code): per client address; lookups that match nothing per typed
# email (a stranger guessing tracking codes); validation mails per failure guard, i.e. per
# dossier for a match (first code and resends together: the hourly cap), which only someone
# holding the email and the tracking code can spend. A match counts LOOKUP_EMAIL_MATCHED
# instead of LOOKUP_EMAIL, so both paths write the same rows: it limits nothing.
LOOKUP_CLIENT = Limit("lookup.client", 30, HOUR)
LOOKUP_EMAIL = Limit("lookup.email", 10, HOUR)
LOOKUP_EMAIL_MATCHED = Limit("lookup.email.matched", 2**31 - 1, HOUR)
LOOKUP_DOSSIER_MAILS = Limit("lookup.dossier", 5, HOUR)

# "Code de suivi oublié": per client address, and mails per address.
FORGOTTEN_CLIENT = Limit("forgotten.client", 10, HOUR)
FORGOTTEN_EMAIL = Limit("forgotten.email", 3, DAY)

# Agent support: page views and actions per agent, tracking-code mails per dossier.
AGENT_ACTIONS = Limit("agent.actor", 60, HOUR)
AGENT_DOSSIER_MAILS = Limit("agent.dossier", 3, DAY)

# Validation codes: wrong tries per code, then a failure counter per dossier that survives
# resends: exponential backoff from BACKOFF_AFTER_FAILURES, lock at LOCK_AFTER_FAILURES.
ATTEMPTS_PER_CODE = 5
RESEND_COOLDOWN = timedelta(seconds=60)
# A lookup of the same address and tracking code this soon after the last one (a double
# click, the form sent twice) gets that code's page again: no new code replaces it.
REPEAT_WINDOW = timedelta(seconds=10)
LOOKUP_RESEND = Limit("lookup.resend", 1, RESEND_COOLDOWN)
BACKOFF_AFTER_FAILURES = 5
MAX_BACKOFF = timedelta(minutes=15)
LOCK_AFTER_FAILURES = 20
LOCK_DURATION = DAY

# Signed carriers.
CHALLENGE_TOKEN_MAX_AGE = timedelta(hours=2)
GRANT_MAX_AGE = timedelta(minutes=30)


def counted(
    host: Host, session: Session, limit: Limit, value: str, now: datetime | None = None
) -> bool:
    """Count one event of ``value`` against ``limit``; False past the limit."""
    return counted_all(host, session, [(limit, value)], now)


def keyed_events(host: Host, events: Sequence[tuple[Limit, str]]) -> list[tuple[str, Limit]]:
    """``(limit, value)`` events as the counters' keys (HMACs of the values): made before
    a write transaction opens, they keep the hashing out of it (:func:`counted_all`)."""
    secret = host.secret_keys[-1]
    return [(throttle_key(secret, limit.scope, value), limit) for limit, value in events]


def counted_all(
    host: Host,
    session: Session,
    events: Sequence[tuple[Limit, str]],
    now: datetime | None = None,
) -> bool:
    """Count each event against its limit, all in one statement; False if any is past its
    limit. The first refusal of each window is audited (once, not on every request).
    ``now`` defaults to the host clock read here (read it after taking the write lock)."""
    return counted_keyed(host, session, keyed_events(host, events), now)


def counted_keyed(
    host: Host,
    session: Session | DriverConnection,
    keyed: Sequence[tuple[str, Limit]],
    now: datetime | None = None,
    *,
    connection: Connection | DriverConnection | None = None,
    hooks: PluginHooks | None = None,
) -> bool:
    """:func:`counted_all` of events already keyed by :func:`keyed_events`. ``session``
    takes the audit of a refusal: a session, or a driver connection where
    ``PluginHooks.driver_level_writes`` allows it. ``connection``: the one ``session`` is
    bound to, already in its write transaction (``now`` read under it), to count on without
    joining the session (joined only to audit a refusal). ``hooks``: the caller's, when
    it chose how to write by the plugins they saw."""
    allowed = True
    if connection is None:
        # begin first: on SQLite the write lock is then held before the clock is read
        connection = connection_of(session)
    moment = host.now() if now is None else now
    for (_, limit), result in zip(keyed, hit_many(connection, keyed, moment), strict=True):
        if result.first_refusal:
            (hooks or PluginHooks(host)).audit(session, THROTTLE_REFUSED, {"scope": limit.scope})
        allowed = allowed and result.allowed
    return allowed
