"""Accounts of the reference host: creation and login."""

from __future__ import annotations

from sqlmodel import Session, select

from .models import Account
from .passwords import check_password, hash_password


def email_key(email: str) -> str:
    """The form under which an address is unique among accounts."""
    return email.strip().lower()


def create_account(
    session: Session, email: str, password: str, display_name: str, role: str = "citizen"
) -> Account:
    account = Account(
        email=email.strip(),
        email_key=email_key(email),
        display_name=display_name,
        password_hash=hash_password(password),
        role=role,
    )
    session.add(account)
    session.flush()
    return account


def authenticate(session: Session, email: str, password: str) -> Account | None:
    account = session.exec(select(Account).where(Account.email_key == email_key(email))).first()
    if account is None:
        check_password(password, _DUMMY_HASH)  # same work whether or not the account exists
        return None
    return account if check_password(password, account.password_hash) else None


_DUMMY_HASH = hash_password("not a real password")
