"""Right of access and right to erasure, by address: everything the plugin holds about one
person (``data export``), and the erasure of what may be erased (``data erase``).

A person is found by the matching key of their address (:func:`.emails.email_key`): the
tracking codes of their dossiers, the challenges and grant state of those dossiers, their
identity choices (through :func:`subject_hash`), and the audit events that name them (as
actor, or through one of their dossiers or their subject hash). Both operations are audited
(``privacy.export``, ``privacy.erase``) in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlmodel import Session

from opencrm_horscompte.base.audit import store_event
from opencrm_horscompte.base.emails import email_key_or_blank
from opencrm_horscompte.base.models import (
    AuditRecord,
    Challenge,
    GrantState,
    IdentityChoice,
    SettingRow,
    TrackingCode,
)
from opencrm_horscompte.hookspecs.horscompte import AuditEvent
from opencrm_horscompte.privacy.retention import ANONYMISED

EXPORTED = "privacy.export"
ERASED = "privacy.erase"
VISIBLE_CODE_CHARACTERS = 2

_CODES = TrackingCode.__table__
_AUDIT = AuditRecord.__table__
_CHALLENGES = Challenge.__table__
_CHOICES = IdentityChoice.__table__
_GRANTS = GrantState.__table__
_SETTINGS = SettingRow.__table__


class UnknownAddress(ValueError):
    """The text given is not an address the plugin could have stored."""


def subject_hash(email: str) -> str:
    """A pseudonymous, stable reference to an address (SHA-256 of its matching key): it
    links rows to a person for access and erasure without storing the address. Anyone who
    knows the address can compute it: it is personal data, only not readable as such."""
    key = email_key_or_blank(email)
    return hashlib.sha256(b"opencrm-horscompte.subject\0" + key.encode()).hexdigest()


def mask_code(code: str) -> str:
    """A tracking code with all but its last characters hidden."""
    shown = code[-VISIBLE_CODE_CHARACTERS:]
    return "•" * (len(code) - len(shown)) + shown


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _key(email: str) -> str:
    key = email_key_or_blank(email)
    if not key:
        raise UnknownAddress(email)
    return key


def _dossier_ids(session: Session, key: str) -> list[int]:
    query = select(_CODES.c.dossier_id).where(_CODES.c.email_key == key)
    return sorted(session.connection().execute(query).scalars())


def _audit_rows(session: Session, key: str, dossiers: Sequence[int], subject: str) -> list[Any]:
    """Audit events naming the person: as actor, or in their details (a dossier of theirs,
    their subject hash). Narrowed in SQL, then checked exactly on the parsed details."""
    likes = [_AUDIT.c.details_json.contains(f'"dossier": {dossier}') for dossier in dossiers]
    likes.append(_AUDIT.c.details_json.contains(subject))
    candidates = session.connection().execute(
        select(_AUDIT).where(or_(_as_actor(_AUDIT.c.actor, key), *likes)).order_by(_AUDIT.c.id)
    )
    found = []
    for row in candidates:
        details = json.loads(row.details_json)
        if (
            email_key_or_blank(row.actor) == key
            or details.get("dossier") in dossiers
            or details.get("subject") == subject
        ):
            found.append(row)
    return found


def _as_actor(column: Any, key: str) -> Any:
    """A SQL condition true for every address written in ``column`` whose key is ``key``,
    and for a few more (checked exactly afterwards): the same local part and "@", in the
    database's own case folding on both sides. An address is stored as typed, so its
    domain may be in Unicode where the key has it in punycode, and its local part may hold
    capitals the key keeps (only ASCII letters are folded)."""
    local = key.rpartition("@")[0] + "@"
    return func.lower(func.substr(column, 1, len(local))) == func.lower(local)


def _settings_rows(session: Session, key: str) -> list[Any]:
    """The settings whose last change ``key``'s owner made (an admin)."""
    rows = session.connection().execute(
        select(_SETTINGS.c.key, _SETTINGS.c.updated_by, _SETTINGS.c.updated_at)
        .where(_as_actor(_SETTINGS.c.updated_by, key))
        .order_by(_SETTINGS.c.key)
    )
    return [row for row in rows if email_key_or_blank(row.updated_by) == key]


def export_subject(session: Session, email: str, actor: str, now: Any) -> dict[str, Any]:
    """Everything stored about ``email``, JSON-ready; records a ``privacy.export`` event."""
    key = _key(email)
    subject = subject_hash(key)
    connection = session.connection()
    dossiers = _dossier_ids(session, key)
    codes = connection.execute(
        select(_CODES).where(_CODES.c.email_key == key).order_by(_CODES.c.dossier_id)
    )
    challenges = connection.execute(
        select(_CHALLENGES).where(_CHALLENGES.c.dossier_id.in_(dossiers)).order_by(_CHALLENGES.c.id)
    )
    grants = connection.execute(select(_GRANTS).where(_GRANTS.c.dossier_id.in_(dossiers)))
    choices = connection.execute(select(_CHOICES).where(_CHOICES.c.subject_hash == subject))
    report = {
        "address": key,
        "dossiers": [
            {
                "dossier_id": row.dossier_id,
                "demarche_title": row.demarche_title,
                "email": row.email,
                "tracking_code": mask_code(row.code),
                "issued_at": _iso(row.issued_at),
                "locale": row.locale,
            }
            for row in codes
        ],
        "validation_codes": [
            {
                "dossier_id": row.dossier_id,
                "created_at": _iso(row.created_at),
                "expires_at": _iso(row.expires_at),
                "consumed_at": _iso(row.consumed_at),
                "attempts": row.attempts,
            }
            for row in challenges
        ],
        "grants": [
            {
                "dossier_id": row.dossier_id,
                "granted_at": _iso(row.granted_at),
                "ended_at": _iso(row.ended_at),
            }
            for row in grants
        ],
        "identity_choices": [{"choice": row.choice, "at": _iso(row.at)} for row in choices],
        "audit_events": [
            {
                "id": row.id,
                "kind": row.kind,
                "actor": row.actor,
                "at": _iso(row.at),
                "details": json.loads(row.details_json),
            }
            for row in _audit_rows(session, key, dossiers, subject)
        ],
        "settings_changed_last": [
            {"setting": row.key, "updated_at": _iso(row.updated_at)}
            for row in _settings_rows(session, key)
        ],
    }
    store_event(session, AuditEvent(EXPORTED, actor, now, {"subject": subject}))
    return report


def erase_subject(
    session: Session, email: str, actor: str, now: Any, *, tracking_codes: bool = False
) -> dict[str, int]:
    """Erase what the plugin may erase about ``email``; the rows touched per kind.

    Identity choices and validation codes are deleted, audit events naming the person lose
    actor and details, and the settings they changed last no longer name them. Tracking
    codes (with the address they mail to) are kept by default: they serve a dossier the
    host still instructs (a public-service task, RGPD art. 17(3)(b)); ``tracking_codes=True``
    deletes them too, once the host has deleted the dossiers.
    """
    key = _key(email)
    subject = subject_hash(key)
    connection = session.connection()
    dossiers = _dossier_ids(session, key)
    audit_ids = [row.id for row in _audit_rows(session, key, dossiers, subject)]
    counts = {
        "identity_choices": connection.execute(
            delete(_CHOICES).where(_CHOICES.c.subject_hash == subject)
        ).rowcount,
        "validation_codes": connection.execute(
            delete(_CHALLENGES).where(_CHALLENGES.c.dossier_id.in_(dossiers))
        ).rowcount,
        "audit_events": connection.execute(
            update(_AUDIT)
            .where(_AUDIT.c.id.in_(audit_ids))
            .values(actor=ANONYMISED, details_json="{}")
        ).rowcount,
        "settings_changed_last": connection.execute(
            update(_SETTINGS)
            .where(_SETTINGS.c.key.in_([row.key for row in _settings_rows(session, key)]))
            .values(updated_by=ANONYMISED)
        ).rowcount,
        "tracking_codes": 0,
    }
    if tracking_codes:
        connection.execute(delete(_GRANTS).where(_GRANTS.c.dossier_id.in_(dossiers)))
        counts["tracking_codes"] = connection.execute(
            delete(_CODES).where(_CODES.c.email_key == key)
        ).rowcount
    details = {"subject": subject, **counts}
    store_event(session, AuditEvent(ERASED, actor, now, details))
    return counts
