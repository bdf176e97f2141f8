"""The "Me connecter et continuer" link of the login proposal goes through here: the choice
is remembered for the draft (``accepted``, counted once for the statistics), then the
visitor is sent to the host's login page, which brings them back to their draft.

The link carries a signed token (the draft's HMAC reference, the continue path and the
subject hash), never a code."""

from __future__ import annotations

from functools import cache
from urllib.parse import urlencode

from sqlalchemy import bindparam
from sqlalchemy.sql import Executable
from sqlmodel import Session

from opencrm_horscompte.base.db import upsert_insert, writer
from opencrm_horscompte.base.i18n import N_
from opencrm_horscompte.base.models import IdentityChoice
from opencrm_horscompte.base.paths import ACCEPT_PATH, is_local_path
from opencrm_horscompte.base.rendering import message_page
from opencrm_horscompte.base.tokens import sign, unsign
from opencrm_horscompte.hookspecs.host import Host, Request, Response
from opencrm_horscompte.stats.counters import count

PURPOSE = "identity-accept"
MAX_AGE_SECONDS = 6 * 3600
_TABLE = IdentityChoice.__table__
LINK_EXPIRED = N_("Ce lien a expiré")
RESUME_FROM_HOME = N_(
    "Reprenez votre démarche depuis la page d'accueil : vos saisies sont conservées dans "
    "votre brouillon."
)


def accept_url(host: Host, draft_ref: str, next_url: str, who: str) -> str:
    token = sign(host, PURPOSE, {"ref": draft_ref, "next": next_url, "who": who})
    return f"{ACCEPT_PATH}?{urlencode({'jeton': token})}"


@cache
def _remember(dialect: str) -> Executable:
    values = {column.name: bindparam(column.name, type_=column.type) for column in _TABLE.c}
    insert = upsert_insert(dialect, _TABLE).values(values)
    return insert.on_conflict_do_nothing(index_elements=[_TABLE.c.draft_ref]).returning(
        _TABLE.c.draft_ref
    )


def accept(host: Host, request: Request) -> Response:
    carried = unsign(host, PURPOSE, request.query.get("jeton", ""), MAX_AGE_SECONDS)
    next_url = carried.get("next") if isinstance(carried, dict) else None
    if not isinstance(next_url, str) or not is_local_path(next_url):
        return message_page(host, request, LINK_EXPIRED, RESUME_FROM_HOME, 400)
    assert isinstance(carried, dict)
    who = carried.get("who") if isinstance(carried.get("who"), str) else None
    row = {"draft_ref": str(carried["ref"]), "choice": "accepted", "at": host.now()}
    with Session(writer(host.engine)) as session, session.begin():
        connection = session.connection()
        statement = _remember(connection.dialect.name)
        first = connection.execute(statement, {**row, "subject_hash": who}).first()
        if first is not None:  # the first click only: a reload does not count twice
            count(session, host.now(), proposals_accepted=1)
    return Response.redirect(host.login_url(next_url))
