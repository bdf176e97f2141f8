"""Server-side state of a dossier's grants, so that they can be ended before they expire.

A grant is a signed token in the citizen's session (:mod:`.grants`); it carries the
dossier's grant *generation* at the time it was given. Ending a dossier's grants bumps the
generation, so every grant given before no longer matches (``has_grant`` compares). The
row also records when the latest grant was given (the agent page shows it).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from sqlalchemy import bindparam, select
from sqlalchemy.sql import Executable
from sqlmodel import Session

from opencrm_horscompte.base.db import upsert_insert, writer
from opencrm_horscompte.base.models import GrantState
from opencrm_horscompte.hookspecs.host import Host

_TABLE = GrantState.__table__
_ID = bindparam("dossier_id", type_=_TABLE.c.dossier_id.type)
_NOW = bindparam("now", type_=_TABLE.c.granted_at.type)
_GENERATION = select(_TABLE.c.generation).where(_TABLE.c.dossier_id == _ID)


@cache
def _upsert(dialect: str, ending: bool) -> Executable:
    insert = upsert_insert(dialect, _TABLE)
    if ending:
        values = insert.values(dossier_id=_ID, generation=1, granted_at=None, ended_at=_NOW)
        changes = {"generation": _TABLE.c.generation + 1, "ended_at": _NOW}
    else:
        values = insert.values(dossier_id=_ID, generation=0, granted_at=_NOW, ended_at=None)
        changes = {"granted_at": _NOW}
    return values.on_conflict_do_update(
        index_elements=[_TABLE.c.dossier_id], set_=changes
    ).returning(_TABLE.c.generation)


def record_grant(host: Host, dossier_id: int) -> int:
    """Note that a grant is being given now; the generation it must carry."""
    with writer(host.engine).begin() as connection:
        statement = _upsert(connection.dialect.name, False)
        params = {"dossier_id": dossier_id, "now": host.now()}
        return int(connection.execute(statement, params).scalar_one())


def end_grants(session: Session, dossier_id: int, now: datetime) -> int:
    """End every grant given so far for the dossier (in the caller's transaction); the new
    generation."""
    connection = session.connection()
    statement = _upsert(connection.dialect.name, True)
    return int(connection.execute(statement, {"dossier_id": dossier_id, "now": now}).scalar_one())


def current_generation(host: Host, dossier_id: int) -> int:
    with host.engine.connect() as connection:
        value = connection.execute(_GENERATION, {"dossier_id": dossier_id}).scalar()
    return int(value or 0)


def grant_state(session: Session, dossier_id: int) -> GrantState | None:
    return session.get(GrantState, dossier_id)
