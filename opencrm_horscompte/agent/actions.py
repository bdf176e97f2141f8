"""What an agent may do for a dossier: unlock it, mail its tracking code again to the
address stored at deposit, end its grants. Each runs in the caller's transaction and
records exactly one audit event (who, when, which dossier)."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import delete
from sqlmodel import Session

from opencrm_horscompte.agent.state import guards_of
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.limits import AGENT_DOSSIER_MAILS, counted
from opencrm_horscompte.base.models import FailureGuard, TrackingCode
from opencrm_horscompte.base.paths import LOOKUP_PATH
from opencrm_horscompte.base.rendering import render_mail
from opencrm_horscompte.hookspecs.host import Host, User
from opencrm_horscompte.lookup.grant_state import end_grants
from opencrm_horscompte.lookup.pages import FORGOTTEN_MAIL, forgotten_entry

ActionName = Literal["unlock", "resend", "end_grants"]
ACTIONS: tuple[ActionName, ...] = ("unlock", "resend", "end_grants")
VIEWED = "agent.view"
AUDIT_KINDS = {"unlock": "agent.unlock", "resend": "agent.resend", "end_grants": "agent.end_grants"}


def audit(
    host: Host, session: Session, kind: str, agent: User, dossier_id: int, **more: object
) -> None:
    PluginHooks(host).audit(session, kind, {"dossier": dossier_id, **more}, actor=agent.email)


def unlock(host: Host, session: Session, agent: User, dossier_id: int) -> bool:
    """Forget the dossier's failure counter: no more backoff or lock. True if there was one."""
    code = session.get(TrackingCode, dossier_id)
    removed = 0
    if code is not None:
        table = FailureGuard.__table__
        keys = guards_of(host, code)
        removed = session.connection().execute(delete(table).where(table.c.key.in_(keys))).rowcount
    audit(host, session, AUDIT_KINDS["unlock"], agent, dossier_id, had_failures=bool(removed))
    return bool(removed)


def resend_tracking_code(host: Host, session: Session, agent: User, dossier_id: int) -> bool:
    """Mail the tracking code to the address stored at deposit (never another): False when
    the dossier's daily cap of agent mails is reached (nothing sent)."""
    code = session.get(TrackingCode, dossier_id)
    if code is None:
        return False
    sent = counted(host, session, AGENT_DOSSIER_MAILS, str(dossier_id))
    if sent:
        context = {
            "dossiers": [forgotten_entry(host, code.demarche_title, code.issued_at, code.code)],
            "older_dossiers": False,
            "lookup_url": host.absolute_url(LOOKUP_PATH),
        }
        host.queue_mail(
            session, render_mail(host, code.email, FORGOTTEN_MAIL, context, code.locale)
        )
    audit(host, session, AUDIT_KINDS["resend"], agent, dossier_id, sent=sent)
    return sent


def end_active_grants(host: Host, session: Session, agent: User, dossier_id: int) -> None:
    """End every grant given so far for the dossier (citizens must validate again)."""
    end_grants(session, dossier_id, host.now())
    audit(host, session, AUDIT_KINDS["end_grants"], agent, dossier_id)
