"""Accounts of the reference host: creation and login."""

from __future__ import annotations

from sqlmodel import Session, select

from opencrm_horscompte.base.emails import email_key, email_key_or_blank, normalize_email
from opencrm_horscompte.host_kit.refhost.models import Account
from opencrm_horscompte.host_kit.refhost.passwords import check_password, hash_password


def create_account(
    session: Session, email: str, password: str, display_name: str, role: str = "citizen"
) -> Account:
    account = Account(
        email=normalize_email(email),
        email_key=email_key(normalize_email(email)),
        display_name=display_name,
        password_hash=hash_password(password),
        role=role,
    )
    session.add(account)
    session.flush()
    return account


def authenticate(session: Session, email: str, password: str) -> Account | None:
    account = find_by_email(session, email)
    if account is None:
        check_password(password, _DUMMY_HASH)  # same work whether or not the account exists
        return None
    return account if check_password(password, account.password_hash) else None


def find_by_email(session: Session, email: str) -> Account | None:
    """The account of ``email`` (as typed), or None, also for an address that can't be valid."""
    key = email_key_or_blank(email)
    if not key:
        return None
    return session.exec(select(Account).where(Account.email_key == key)).first()


_DUMMY_HASH = hash_password("not a real password")
