"""Retention: what the scheduled purge removes or anonymises, per the admin's settings.

- identity choices older than ``retention_identity_choice_days`` are deleted;
- audit events that name a person (an actor other than ``system``, or details naming a
  dossier, an account or an address) older than ``retention_audit_personal_days`` keep
  their kind and date but lose the actor and the details.

Challenges, throttle counters and failure guards past their use follow
``retention_spent_state_days`` in :mod:`opencrm_horscompte.lookup.purge`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_, update
from sqlmodel import Session

from opencrm_horscompte.base.hooks import SYSTEM_ACTOR
from opencrm_horscompte.base.models import AuditRecord, IdentityChoice
from opencrm_horscompte.settings.schema import Settings

ANONYMISED = "anonymised"
# Audit kinds whose details name a dossier, an account or an address.
PERSONAL_KIND_PREFIXES = ("agent.", "claim.", "privacy.")

_AUDIT = AuditRecord.__table__
_CHOICES = IdentityChoice.__table__


def personal_kind_clause() -> ColumnElement[bool]:
    """Audit kinds whose details name a dossier, an account or an address."""
    return or_(*(_AUDIT.c.kind.startswith(prefix) for prefix in PERSONAL_KIND_PREFIXES))


def spent_state_cutoff(settings: Settings, now: datetime) -> datetime:
    return now - timedelta(days=settings.retention_spent_state_days)


def apply_retention(session: Session, settings: Settings, now: datetime) -> dict[str, int]:
    """Delete old identity choices and anonymise old personal audit events (no commit);
    the rows touched per kind of datum."""
    choices_cutoff = now - timedelta(days=settings.retention_identity_choice_days)
    choices = (
        session.connection()
        .execute(delete(_CHOICES).where(_CHOICES.c.at < choices_cutoff))
        .rowcount
    )
    audit_cutoff = now - timedelta(days=settings.retention_audit_personal_days)
    actors = (
        session.connection()
        .execute(
            update(_AUDIT)
            .where(_AUDIT.c.at < audit_cutoff, _AUDIT.c.actor.not_in([SYSTEM_ACTOR, ANONYMISED]))
            .values(actor=ANONYMISED)
        )
        .rowcount
    )
    details = (
        session.connection()
        .execute(
            update(_AUDIT)
            .where(
                _AUDIT.c.at < audit_cutoff, personal_kind_clause(), _AUDIT.c.details_json != "{}"
            )
            .values(details_json="{}")
        )
        .rowcount
    )
    return {"identity_choices": choices, "audit_actors": actors, "audit_details": details}
