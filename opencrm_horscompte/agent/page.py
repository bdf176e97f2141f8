"""``/admin/hors-compte/assistance``: an agent (or admin) opens a dossier's hors-compte
state by number and acts for the citizen. The page never shows a code; every view and
action is audited (one event each) and counted against the agent's hourly limit."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlmodel import Session

from opencrm_horscompte.agent import actions
from opencrm_horscompte.agent.state import dossier_state
from opencrm_horscompte.base.db import MAX_ROW_ID, writer
from opencrm_horscompte.base.hostinfo import moment
from opencrm_horscompte.base.i18n import N_, Message, translate
from opencrm_horscompte.base.limits import AGENT_ACTIONS, counted
from opencrm_horscompte.base.paths import AGENT_PATH
from opencrm_horscompte.base.rendering import ACCESS_REFUSED, STAFF_ONLY, message_page, render_page
from opencrm_horscompte.hookspecs.host import Host, Request, Response, User

TEMPLATE = "horscompte/agent.html"
MAX_DOSSIER_DIGITS = 12
DONE: dict[str, Message] = {
    "unlock": N_("Dossier débloqué : l'usager peut de nouveau demander un code de validation."),
    "resend": N_("Le code de suivi a été envoyé à l'adresse électronique indiquée lors du dépôt."),
    "end_grants": N_("Les accès en cours à ce dossier sont terminés."),
}
NOT_SENT = N_(
    "Le code de suivi n'a pas été envoyé : la limite d'envois pour ce dossier est atteinte "
    "pour aujourd'hui."
)
NOTICES: dict[str, Message] = {**DONE, "not_sent": NOT_SENT}
NOTICE_KEY = "horscompte.agent_notice"
THROTTLED = N_("Trop d'opérations en peu de temps : patientez avant de recommencer.")
UNKNOWN = N_("Aucun dossier déposé sans compte ne porte ce numéro.")
INVALID = N_("Saisissez le numéro du dossier (des chiffres uniquement).")


def dossier_url(dossier_id: int) -> str:
    """The agent page of one dossier (linked from the host's dossier page)."""
    return f"{AGENT_PATH}?{urlencode({'dossier': dossier_id})}"


def _dossier_number(raw: str) -> int | None:
    text = raw.strip().lstrip("#")
    if not text or len(text) > MAX_DOSSIER_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def _page(host: Host, request: Request, status: int = 200, **context: Any) -> Response:
    context = {"state": None, "number": "", "error": None, "notice": None, **context}

    def when(value: datetime) -> str:
        """A stored UTC time in the host's time zone, as the citizen's pages and mails show
        it (the agent on the phone with the citizen sees the same time)."""
        return translate(moment(host, value), request.locale)

    body = render_page(
        host,
        request,
        TEMPLATE,
        action_url=AGENT_PATH,
        actions=actions.ACTIONS,
        when=when,
        **context,
    )
    return Response.html(body, status=status)


def _refused(host: Host, request: Request) -> Response:
    return message_page(host, request, ACCESS_REFUSED, STAFF_ONLY, 403)


def handle(host: Host, request: Request) -> Response:
    user = request.user
    if user is None or not user.is_agent:  # the host checks it too (permission "agent")
        return _refused(host, request)
    source = request.form if request.method == "POST" else request.query
    raw = source.get("dossier", "")
    if not raw:
        return _page(host, request)
    dossier_id = _dossier_number(raw)
    if dossier_id is None:
        return _page(host, request, 400, number=raw[:20], error=INVALID)
    action = request.form.get("action", "") if request.method == "POST" else ""
    if request.method == "POST" and action not in actions.ACTIONS:
        return _page(host, request, 400, number=str(dossier_id), error=INVALID)
    return _act(host, request, user, dossier_id, action)


def _act(host: Host, request: Request, user: User, dossier_id: int, action: str) -> Response:
    """A view (GET) or an action (POST). An action answers with a redirect to the dossier's
    page (post/redirect/get), whose notice the session keeps: a reload shows the page
    again, and doesn't mail the citizen a second time. That page, right after its action,
    is neither counted nor audited as a view of its own."""
    done = request.session.pop(NOTICE_KEY, None) if not action else None
    if done in NOTICES:
        with Session(host.engine) as session:
            state = dossier_state(host, session, dossier_id)
        if state is not None:
            return _page(host, request, number=str(dossier_id), state=state, notice=NOTICES[done])
    with Session(writer(host.engine)) as session, session.begin():
        if not counted(host, session, AGENT_ACTIONS, user.email):
            return _page(host, request, 429, number=str(dossier_id), error=THROTTLED)
        state = dossier_state(host, session, dossier_id) if dossier_id <= MAX_ROW_ID else None
        if state is None:
            return _page(host, request, 404, number=str(dossier_id), error=UNKNOWN)
        if action == "unlock":
            actions.unlock(host, session, user, dossier_id)
        elif action == "resend":
            sent = actions.resend_tracking_code(host, session, user, dossier_id)
            action = "resend" if sent else "not_sent"
        elif action == "end_grants":
            actions.end_active_grants(host, session, user, dossier_id)
        else:
            actions.audit(host, session, actions.VIEWED, user, dossier_id)
    if action:
        request.session[NOTICE_KEY] = action
        return Response.redirect(dossier_url(dossier_id))
    return _page(host, request, number=str(dossier_id), state=state)
