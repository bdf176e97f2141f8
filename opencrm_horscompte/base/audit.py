"""The plugin's default audit sink: events stored in ``horscompte_audit_event``."""

from __future__ import annotations

import json

from sqlalchemy import bindparam, insert
from sqlmodel import Session

from opencrm_horscompte.base.db import DriverConnection, DriverStatement, connection_of
from opencrm_horscompte.base.models import AuditRecord
from opencrm_horscompte.hookspecs.horscompte import AuditEvent

_COLUMNS = ("kind", "actor", "at", "details_json")
_TABLE = AuditRecord.__table__
_INSERT = DriverStatement(
    insert(_TABLE).values(
        {column: bindparam(column, type_=_TABLE.c[column].type) for column in _COLUMNS}
    )
)


def store_event(session: Session | DriverConnection, event: AuditEvent) -> None:
    """One ``INSERT`` in the session's (or driver connection's) transaction, at driver speed
    (a lookup miss writes one)."""
    details = json.dumps(event.details, ensure_ascii=False, default=str)
    values = {"kind": event.kind, "actor": event.actor, "at": event.at, "details_json": details}
    _INSERT.execute(connection_of(session), values).close()
