"""Server-side revocation for the reference host's signed-cookie sessions.

The cookie stays a signed cookie, but as soon as it holds anything beyond the CSRF token and
the language (an account, drafts, dossier grants, ...) it also carries a random session id
whose SHA-256 is a row of ``host_session``. A cookie whose row is gone (logout, password
change, expiry) opens as an empty session: a copied cookie dies with the session, and so do
the dossier grants inside it.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

import flask
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from opencrm_horscompte.base.db import upsert_insert, writer
from opencrm_horscompte.host_kit.refhost.host import ReferenceHost
from opencrm_horscompte.host_kit.refhost.models import Account, HostSession
from opencrm_horscompte.host_kit.refhost.passwords import hash_password
from opencrm_horscompte.lookup.pages import FORGOTTEN_KEY
from opencrm_horscompte.lookup.pages import PAGE_KEY as LOOKUP_PAGE_KEY

SID_KEY = "_sid"
# What an anonymous cookie may hold without a server-side session: nothing worth stealing.
# The lookup's code entry page (its signed token is in the page itself, and useless without
# the code mailed to the dossier's address) is one: a lookup writes no session row. So is
# "code oublié"'s "sent", which the same reply shows whatever the address.
UNPROTECTED_KEYS = frozenset({"csrf", "locale", SID_KEY, LOOKUP_PAGE_KEY, FORGOTTEN_KEY})
LIFETIME = timedelta(days=31)


def _key(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def end_session(host: ReferenceHost, session: Any) -> None:
    """Forget the session's server-side row (logout): every copy of its cookie is dead."""
    sid = session.get(SID_KEY)
    if isinstance(sid, str):
        with Session(writer(host.engine)) as db, db.begin():
            db.exec(delete(HostSession).where(col(HostSession.key) == _key(sid)))


def end_account_sessions(host: ReferenceHost, account_id: int) -> int:
    """Forget every session of an account (password change); how many there were."""
    with Session(writer(host.engine)) as db, db.begin():
        result = db.exec(delete(HostSession).where(col(HostSession.account_id) == account_id))
        return int(result.rowcount)


def purge_expired_sessions(host: ReferenceHost) -> int:
    """Delete the rows of sessions past their lifetime (the host's own scheduled task)."""
    with Session(writer(host.engine)) as db, db.begin():
        result = db.exec(delete(HostSession).where(col(HostSession.expires_at) < host.now()))
        return int(result.rowcount)


class UnverifiedSession(SecureCookieSession):
    """A session whose server-side row could not be checked (the store was unreachable).

    It holds only what needs no check (CSRF token, language), so the outage page can be
    answered with the citizen's input; ``store_error`` is why. The request must not go on
    as if the visitor had no session (their draft would look like someone else's: a 404),
    and the browser's cookie is left as it is, drafts and grants included.
    """

    store_error: SQLAlchemyError


class RevocableSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, checked against ``host_session`` on every request."""

    def __init__(self, host: ReferenceHost) -> None:
        self.host = host

    def open_session(self, app: flask.Flask, request: flask.Request) -> SecureCookieSession | None:
        session = super().open_session(app, request)
        if session is None:
            return None
        sid = session.get(SID_KEY)
        protected = any(key not in UNPROTECTED_KEYS for key in session)
        if sid is None and not protected:
            return session
        try:
            alive = isinstance(sid, str) and self._alive(sid)
        except SQLAlchemyError as error:
            unverified = UnverifiedSession(
                {key: value for key, value in session.items() if key in UNPROTECTED_KEYS}
            )
            unverified.store_error = error
            return unverified
        if alive:
            return session
        fresh = self.session_class()
        fresh.modified = bool(session)  # replace the dead cookie in the browser
        return fresh

    def _alive(self, sid: str) -> bool:
        with Session(self.host.engine) as db:
            row = db.get(HostSession, _key(sid))
        return row is not None and row.expires_at > self.host.now()

    def save_session(
        self, app: flask.Flask, session: SessionMixin, response: flask.Response
    ) -> None:
        if isinstance(session, UnverifiedSession):
            return  # the browser keeps its cookie: it is still good once the store is back
        if session.get(SID_KEY) is None and any(key not in UNPROTECTED_KEYS for key in session):
            sid = secrets.token_urlsafe(32)
            now = self.host.now()
            account_id = session.get("account_id")
            with writer(self.host.engine).begin() as connection:
                table = HostSession.__table__
                connection.execute(
                    upsert_insert(connection.dialect.name, table)
                    .values(
                        key=_key(sid),
                        account_id=account_id if isinstance(account_id, int) else None,
                        created_at=now,
                        expires_at=now + LIFETIME,
                    )
                    .on_conflict_do_nothing()
                )
            session[SID_KEY] = sid
        super().save_session(app, session, response)


def change_password(host: ReferenceHost, account_id: int, new_password: str) -> None:
    """Set an account's password and end every session of it (every device, every copied
    cookie, the dossier grants inside them)."""
    with Session(writer(host.engine)) as db, db.begin():
        account = db.get(Account, account_id)
        if account is None:
            raise KeyError(account_id)
        account.password_hash = hash_password(new_password)
    end_account_sessions(host, account_id)
