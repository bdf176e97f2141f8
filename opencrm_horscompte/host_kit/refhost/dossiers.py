"""Drafts and deposits of the reference host."""

from __future__ import annotations

import secrets
from typing import Any

from sqlmodel import Session, col, select

from opencrm_horscompte.base.db import writer
from opencrm_horscompte.host_kit.refhost.host import ReferenceHost
from opencrm_horscompte.host_kit.refhost.models import Demarche, Dossier


class AlreadyDeposited(Exception):
    """The draft was deposited already (a second click, a reloaded form)."""


def create_draft(
    host: ReferenceHost,
    demarche: Demarche,
    identity: dict[str, str],
    account_id: int | None,
    locale: str = "fr",
) -> Dossier:
    assert demarche.id is not None
    draft = Dossier(
        draft_key=secrets.token_urlsafe(24),
        demarche_id=demarche.id,
        demarche_title=demarche.title,
        email=identity["email"],
        first_name=identity["first_name"],
        last_name=identity["last_name"],
        account_id=account_id,
        created_at=host.now(),
        locale=locale,
    )
    with Session(writer(host.engine), expire_on_commit=False) as session, session.begin():
        session.add(draft)
    return draft


def update_identity(host: ReferenceHost, draft_key: str, identity: dict[str, str]) -> Dossier:
    with Session(writer(host.engine), expire_on_commit=False) as session, session.begin():
        dossier = session.exec(select(Dossier).where(Dossier.draft_key == draft_key)).one()
        if dossier.status != "draft":
            raise AlreadyDeposited(draft_key)
        for key in ("email", "first_name", "last_name"):
            setattr(dossier, key, identity[key])
    return dossier


def attach_to_account(host: ReferenceHost, draft_keys: list[str], account_id: int) -> list[str]:
    """After a login: the session's drafts that belong to nobody and are not deposited yet
    become the account's (the citizen accepted to log in: the same draft goes on; the
    addresses need not match, see the integrator's guide). A deposited dossier, or one of
    another account, stays as it is: logging in on a shared computer takes nobody's
    dossier. Returns the keys the logged-in session keeps: the account's own."""
    if not draft_keys:
        return []
    with Session(writer(host.engine)) as session, session.begin():
        rows = session.exec(select(Dossier).where(col(Dossier.draft_key).in_(draft_keys))).all()
        kept = set()
        for dossier in rows:
            if dossier.account_id is None and dossier.status == "draft":
                dossier.account_id = account_id
                session.add(dossier)
            if dossier.account_id == account_id:
                kept.add(dossier.draft_key)
    return [key for key in draft_keys if key in kept]


def find_dossier(host: ReferenceHost, draft_key: str) -> Dossier | None:
    with Session(host.engine, expire_on_commit=False) as session:
        return session.exec(select(Dossier).where(Dossier.draft_key == draft_key)).first()


def save_answers(host: ReferenceHost, draft_key: str, answers: dict[str, Any]) -> None:
    with Session(writer(host.engine)) as session, session.begin():
        dossier = session.exec(select(Dossier).where(Dossier.draft_key == draft_key)).one()
        if dossier.status != "draft":
            raise AlreadyDeposited(draft_key)
        dossier.answers = answers


def deposit(
    host: ReferenceHost, draft_key: str, answers: dict[str, Any], draft: Dossier | None = None
) -> Dossier:
    """Deposit a draft: one transaction for the dossier and every plugin's part in it.

    A plugin that raises rolls the whole deposit back: the draft stays a draft, with its
    answers, and no plugin state is left behind. With ``draft`` (the draft as the caller
    loaded it), plugins first prepare outside the transaction (``opencrm_deposit_prepare``):
    the write lock is held for the inserts only.
    """
    if draft is not None and draft.status == "draft" and draft.draft_key == draft_key:
        host.hook.opencrm_deposit_prepare(host=host, dossier=draft)
    with Session(writer(host.engine), expire_on_commit=False) as session, session.begin():
        dossier = session.exec(
            select(Dossier).where(Dossier.draft_key == draft_key).with_for_update()
        ).one()
        if dossier.status != "draft":
            raise AlreadyDeposited(draft_key)
        dossier.answers = answers
        dossier.status = "deposited"
        dossier.deposited_at = host.now()
        session.flush()
        host.hook.opencrm_deposit(host=host, session=session, dossier=dossier)
    return dossier
