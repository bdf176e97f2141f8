"""What an agent sees of a dossier's hors-compte state: never a code."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from opencrm_horscompte.base.limits import ATTEMPTS_PER_CODE, GRANT_MAX_AGE, LOCK_AFTER_FAILURES
from opencrm_horscompte.base.models import Challenge, FailureGuard, GrantState, TrackingCode
from opencrm_horscompte.hookspecs.host import Host
from opencrm_horscompte.lookup.start import dossier_guard, pair_guard

RECENT_LOOKUPS = 10


@dataclass(frozen=True)
class Lookup:
    """One validation code sent for the dossier (a lookup or a resend)."""

    created_at: datetime
    expires_at: datetime
    attempts: int
    status: str  # "pending", "spent" (used or replaced), "exhausted" (wrong tries), "expired"


@dataclass(frozen=True)
class DossierState:
    dossier_id: int
    demarche_title: str
    masked_email: str
    issued_at: datetime
    lookups: list[Lookup]
    failures: int
    wait_until: datetime | None  # backoff or lock still running
    locked: bool
    granted_at: datetime | None
    grant_until: datetime | None  # the latest grant, while it may still be in use
    grants_ended_at: datetime | None


def mask_email(address: str) -> str:
    """``l•••@exemple.fr``: enough for a citizen on the phone to recognise their address."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}•••@{domain}"


def guards_of(host: Host, code: TrackingCode) -> tuple[str, str]:
    """The failure guards of the dossier of ``code``: the one its lookups use now, and the
    one of 0.2, keyed by the dossier (failures counted before the upgrade)."""
    return pair_guard(host, code.email_key, code.code), dossier_guard(host, code.dossier_id)


def _latest_guard(session: Session, keys: tuple[str, ...]) -> FailureGuard | None:
    """Of the guards ``keys``, the one whose wait ends last."""
    guards = [guard for key in keys if (guard := session.get(FailureGuard, key)) is not None]
    return max(guards, key=lambda guard: guard.not_before, default=None)


def _status(row: Challenge, now: datetime) -> str:
    if row.consumed_at is not None:
        return "spent"
    if row.attempts >= ATTEMPTS_PER_CODE:
        return "exhausted"
    return "expired" if row.expires_at <= now else "pending"


def dossier_state(host: Host, session: Session, dossier_id: int) -> DossierState | None:
    """The state of a dossier deposited without account, or None if it has no tracking
    code (unknown number, or not filed through the plugin)."""
    code = session.get(TrackingCode, dossier_id)
    if code is None:
        return None
    now = host.now()
    challenges = session.exec(
        select(Challenge)
        .where(Challenge.dossier_id == dossier_id)
        .order_by(col(Challenge.id).desc())
        .limit(RECENT_LOOKUPS)
    )
    lookups = [
        Lookup(row.created_at, row.expires_at, row.attempts, _status(row, now))
        for row in challenges
    ]
    guard = _latest_guard(session, guards_of(host, code))
    failures = guard.failures if guard else 0
    waiting = guard is not None and guard.not_before > now
    grants = session.get(GrantState, dossier_id)
    granted_at = grants.granted_at if grants else None
    ended_at = grants.ended_at if grants else None
    live = (
        granted_at is not None
        and granted_at + GRANT_MAX_AGE > now
        and (ended_at is None or ended_at < granted_at)
    )
    return DossierState(
        dossier_id=dossier_id,
        demarche_title=code.demarche_title,
        masked_email=mask_email(code.email),
        issued_at=code.issued_at,
        lookups=lookups,
        failures=failures,
        wait_until=guard.not_before if guard is not None and waiting else None,
        locked=waiting and failures >= LOCK_AFTER_FAILURES,
        granted_at=granted_at,
        grant_until=granted_at + GRANT_MAX_AGE if live and granted_at else None,
        grants_ended_at=ended_at,
    )
