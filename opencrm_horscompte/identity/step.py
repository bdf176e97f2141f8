"""The identity step: when a new dossier's email has an account, propose logging in.

The check is an account-existence oracle by design (the spec asks for it), so it is
throttled per client address and per browser session, with counters in the database; past
a limit it behaves exactly as "no account" and emits one audit event per window.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from functools import cache

from sqlalchemy import bindparam
from sqlalchemy.sql import Executable
from sqlmodel import Session

from opencrm_horscompte.base.db import upsert_insert, writer
from opencrm_horscompte.base.emails import InvalidEmail, email_key, normalize_email
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.limits import (
    IDENTITY_CLIENT,
    IDENTITY_INVITATION,
    IDENTITY_SESSION,
    counted,
    counted_all,
)
from opencrm_horscompte.base.models import IdentityChoice
from opencrm_horscompte.base.paths import CLAIM_PATH, DECLINE_PATH, PROPOSAL_PATH, is_local_path
from opencrm_horscompte.base.rendering import message_page, plugin_mail, render_mail, render_page
from opencrm_horscompte.base.throttle import hmac_sha256_hex
from opencrm_horscompte.base.tokens import sign, unsign
from opencrm_horscompte.claim.page import attacher
from opencrm_horscompte.hookspecs.host import Demarche, Host, IdentityDecision, Request, Response
from opencrm_horscompte.identity.accept import LINK_EXPIRED, RESUME_FROM_HOME, accept_url
from opencrm_horscompte.privacy.subjects import subject_hash
from opencrm_horscompte.settings.store import load_settings
from opencrm_horscompte.stats.counters import count

DECLINE_PURPOSE = "identity-decline"
DECLINE_MAX_AGE_SECONDS = 6 * 3600
SESSION_ID_KEY = "horscompte.sid"
# The login proposal the identity step's POST redirects to (post/redirect/get): what the
# page shows, and the draft it is about. A reload or Back shows it again; once the draft's
# choice is made, it leads on to the form.
PROPOSAL_KEY = "horscompte.proposal"
INVITATION_MAIL = plugin_mail("invitation", "Invitation à se connecter (mode discret)")
NO_INVITATION = "identity.no_invitation"


def _draft_ref(host: Host, draft: str) -> str:
    return hmac_sha256_hex(host.secret_keys[-1], b"draft\0" + draft.encode())


def _session_id(request: Request) -> str:
    if SESSION_ID_KEY not in request.session:
        request.session[SESSION_ID_KEY] = secrets.token_urlsafe(18)
    return str(request.session[SESSION_ID_KEY])


def _within_limits(host: Host, session: Session, request: Request) -> bool:
    """Count this check against the client address and the browser session (both)."""
    events = [(IDENTITY_CLIENT, request.client_addr), (IDENTITY_SESSION, _session_id(request))]
    return counted_all(host, session, events)


def _invite_by_mail(
    host: Host, email: str, demarche: Demarche, locale: str, *, account: bool
) -> None:
    """Discreet mode: the address, not the screen, learns that an account exists.

    The same work whether or not ``account``: the mail is rendered (before the write
    transaction), the address's invitation counter counted, and the mail queued, or an
    audit record written in its place (issue 8, finding 4: no timing difference)."""
    context = {
        "demarche_title": demarche.title,
        "login_url": host.absolute_url(host.login_url("/")),
        # Once deposited, the dossier joins the account through the claim page, if the
        # host has one: the mail says so, rather than promise that logging in is enough.
        "claim_url": host.absolute_url(host.login_url(CLAIM_PATH)) if attacher(host) else "",
    }
    mail = render_mail(host, email, INVITATION_MAIL, context, locale)
    with Session(writer(host.engine)) as session, session.begin():
        allowed = counted(host, session, IDENTITY_INVITATION, email_key(email))
        if account and allowed:
            host.queue_mail(session, mail)
        else:
            PluginHooks(host).audit(session, NO_INVITATION)


_CHOICES = IdentityChoice.__table__


@cache
def _remember_choice(dialect: str) -> Executable:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING``: a double click on "Continuer sans
    compte" records one choice (and counts one decline) and raises nothing."""
    values = {column.name: bindparam(column.name, type_=column.type) for column in _CHOICES.c}
    insert = upsert_insert(dialect, _CHOICES).values(values).on_conflict_do_nothing()
    return insert.returning(_CHOICES.c.draft_ref)


def _show_proposal(
    request: Request, demarche: Demarche, identity: Mapping[str, str], email: str
) -> Response:
    """Answer the first screen's POST with a redirect to the proposal, which the session
    describes: a reload or Back neither checks the address again nor counts a proposal."""
    request.session[PROPOSAL_KEY] = {
        "draft": identity.get("draft", ""),
        "next": identity.get("continue_url", ""),
        "email": email,
        "title": demarche.title,
        "step": str(identity.get("step", "")),
        "steps": str(identity.get("steps", "")),
    }
    return Response.redirect(PROPOSAL_PATH)


def proposal_page(host: Host, request: Request) -> Response:
    """GET ``/hors-compte/identite``: the login proposal the session's last identity step
    made; once its draft's choice is made (declined, or the login link followed), the
    form it was about; without one, the home page."""
    shown = request.session.get(PROPOSAL_KEY)
    fields = ("draft", "next", "email", "title", "step", "steps")
    if not isinstance(shown, dict) or not all(isinstance(shown.get(f), str) for f in fields):
        return Response.redirect("/")
    draft, next_url, email = shown["draft"], shown["next"], shown["email"]
    if not is_local_path(next_url):
        return Response.redirect("/")
    with Session(host.engine) as session:
        chosen = session.get(IdentityChoice, _draft_ref(host, draft)) is not None
    if chosen:  # Back after the choice: on to the form, and the proposal is done with
        request.session.pop(PROPOSAL_KEY, None)
        return Response.redirect(next_url)
    who = subject_hash(email)  # links the choice to the address for access and erasure
    token = sign(host, DECLINE_PURPOSE, {"draft": draft, "next": next_url, "who": who})
    body = render_page(
        host,
        request,
        "horscompte/identity_proposal.html",
        demarche={"title": shown["title"]},
        email=email,
        step=shown["step"],
        steps=shown["steps"],
        login_url=accept_url(host, _draft_ref(host, draft), next_url, who),  # counted
        decline_url=DECLINE_PATH,
        decline_token=token,
    )
    return Response.html(body)


def identity_step(
    host: Host, request: Request, demarche: Demarche, identity: Mapping[str, str]
) -> IdentityDecision | None:
    """What ``opencrm_identity_step`` decides; None means "continue" in every quiet case
    (setting off, logged in, declined, no account, throttled, unusable address)."""
    draft, next_url = identity.get("draft", ""), identity.get("continue_url", "")
    if request.user is not None or not demarche.open_without_account or not draft:
        return None
    if not is_local_path(next_url):
        return None
    try:
        email = normalize_email(identity.get("email", ""))
    except InvalidEmail:
        return None
    with Session(host.engine) as session:
        settings = load_settings(session)
        if not settings.check_account_exists:
            return None
        if session.get(IdentityChoice, _draft_ref(host, draft)) is not None:
            return None
    with Session(writer(host.engine)) as session, session.begin():
        if not _within_limits(host, session, request):
            return None
    # Outside any transaction: the account source may be a slow directory (LDAP...).
    account = PluginHooks(host).account_exists(email)
    if settings.identity_discreet_mode:
        _invite_by_mail(host, email, demarche, request.locale, account=account)
        return None
    with Session(writer(host.engine)) as session, session.begin():  # same statement either way
        count(session, host.now(), proposals_shown=int(account))
    if not account:
        return None
    return IdentityDecision("propose_login", _show_proposal(request, demarche, identity, email))


def decline(host: Host, request: Request) -> Response:
    """ "Continuer sans compte": remember it for the draft, then go on with the form."""
    carried = unsign(host, DECLINE_PURPOSE, request.form.get("token", ""), DECLINE_MAX_AGE_SECONDS)
    if not isinstance(carried, dict):
        return message_page(host, request, LINK_EXPIRED, RESUME_FROM_HOME, 400)
    draft, next_url = str(carried["draft"]), str(carried["next"])
    if not is_local_path(next_url):  # signed by us, checked again all the same
        next_url = "/"
    who = carried.get("who") if isinstance(carried.get("who"), str) else None
    with writer(host.engine).begin() as connection:
        row = {
            "draft_ref": _draft_ref(host, draft),
            "choice": "declined",
            "at": host.now(),
            "subject_hash": who,
        }
        first = connection.execute(_remember_choice(connection.dialect.name), row).first()
        count(connection, host.now(), proposals_declined=int(first is not None))
    return Response.redirect(next_url)
