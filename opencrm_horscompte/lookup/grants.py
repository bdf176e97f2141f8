"""After a right validation code: a short-lived grant to that one dossier, kept in the
host's signed session and checked by ``opencrm_dossier_access``; it carries the dossier's
grant generation (:mod:`.grant_state`), so an agent can end it server-side."""

from __future__ import annotations

from opencrm_horscompte.base.limits import GRANT_MAX_AGE
from opencrm_horscompte.base.tokens import sign, unsign
from opencrm_horscompte.hookspecs.host import Host, Request
from opencrm_horscompte.lookup.grant_state import current_generation, record_grant

SESSION_KEY = "horscompte.grants"
PURPOSE = "dossier-grant"
MAX_GRANTS = 5


def grant(host: Host, request: Request, dossier_id: int) -> None:
    grants = dict(request.session.get(SESSION_KEY) or {})
    generation = record_grant(host, dossier_id)  # agents can end it (grant_state)
    grants[str(dossier_id)] = sign(host, PURPOSE, {"dossier": dossier_id, "gen": generation})
    request.session[SESSION_KEY] = dict(list(grants.items())[-MAX_GRANTS:])


def has_grant(host: Host, request: Request, dossier_id: int) -> bool:
    grants = request.session.get(SESSION_KEY) or {}
    token = grants.get(str(dossier_id)) if isinstance(grants, dict) else None
    if not isinstance(token, str):
        return False
    carried = unsign(host, PURPOSE, token, int(GRANT_MAX_AGE.total_seconds()))
    if not isinstance(carried, dict) or carried.get("dossier") != dossier_id:
        return False
    return carried.get("gen") == current_generation(host, dossier_id)
