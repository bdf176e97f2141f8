"""Attaching a dossier deposited without an account to an account (the optional
``attach_dossier`` of the host contract)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from opencrm_horscompte.base.db import writer
from opencrm_horscompte.host_kit.refhost.models import Dossier


def attach_deposited(host: Any, dossier_id: int, account_id: int) -> bool:
    """One conditional UPDATE: only a deposited dossier that belongs to no account, so two
    concurrent claims cannot both win. True when this call attached it."""
    with Session(writer(host.engine)) as session, session.begin():
        result = session.exec(
            update(Dossier)
            .where(
                col(Dossier.id) == dossier_id,
                col(Dossier.account_id).is_(None),
                col(Dossier.status) == "deposited",
            )
            .values(account_id=account_id)
        )
        return bool(result.rowcount == 1)
