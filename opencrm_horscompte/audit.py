"""The plugin's default audit sink: events stored in ``horscompte_audit_event``."""

from __future__ import annotations

import json

from sqlmodel import Session

from .hookspecs.horscompte import AuditEvent
from .models import AuditRecord


def store_event(session: Session, event: AuditEvent) -> None:
    session.add(
        AuditRecord(
            kind=event.kind,
            actor=event.actor,
            at=event.at,
            details_json=json.dumps(event.details, ensure_ascii=False, default=str),
        )
    )
