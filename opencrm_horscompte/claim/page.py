"""``/hors-compte/rattacher`` ("Rattacher un dossier", in "Mon espace").

The citizen types the tracking code; the lookup's own challenge machinery
(:func:`.lookup.start.start_lookup`, :func:`.lookup.validation.verify` and ``resend``) mails
a validation code to the address stored on the dossier, looked up with the ACCOUNT's
address: a dossier of another address never matches (a decoy code is made, which can't
succeed). On a right code the host attaches the dossier, once: ``attach_dossier`` refuses a
dossier that already belongs to an account. Attaching is audited (``claim.attached``).
A POST that mails a code answers with a redirect to ``/hors-compte/rattacher/code``, the code
entry page the session describes: a reload or Back shows it again and mails nothing.
Only offered by hosts that have ``attach_dossier`` (see ``AttachingHost``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlmodel import Session

from opencrm_horscompte.base.db import writer
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.i18n import N_
from opencrm_horscompte.base.limits import CHALLENGE_TOKEN_MAX_AGE
from opencrm_horscompte.base.paths import CLAIM_CODE_PATH, CLAIM_PATH
from opencrm_horscompte.base.rendering import message_page, render_page
from opencrm_horscompte.base.tokens import sign, unsign
from opencrm_horscompte.hookspecs.host import Host, Request, Response, User
from opencrm_horscompte.lookup.pages import (
    NEWER_CODE,
    NOTICES,
    code_hint,
    failure_message,
    resend_wait_message,
    show_newer_page,
    shown_page,
)
from opencrm_horscompte.lookup.start import LookupInputError, read_input, start_lookup
from opencrm_horscompte.lookup.validation import resend, verify

PURPOSE = "claim-challenge"
# The code entry page the last "start" or resend led to (post/redirect/get), as the
# lookup's ``horscompte.validation``.
PAGE_KEY = "horscompte.claim"
ATTACHED = "claim.attached"
REFUSED = "claim.refused"
TEMPLATE = "horscompte/claim.html"
WAIT = N_(
    "Trop de codes erronés pour ce dossier : patientez avant de réessayer, ou contactez la mairie."
)
ALREADY = N_("Ce dossier est déjà rattaché à un compte : il ne peut pas l'être une seconde fois.")
INVALID_ACCOUNT = N_("L'adresse électronique de votre compte ne peut pas servir à cette recherche.")
EXPIRED = N_("Votre demande a expiré.")
# The lookup's wording sends the citizen back to a form with an address; the claim's has none.
CLAIM_FAILURES = {
    "used": N_(
        "Ce code a déjà servi. Si vous venez de rattacher ce dossier, il figure dans votre "
        "espace ; sinon, saisissez à nouveau son code de suivi."
    ),
    "replaced": N_(
        "Un code plus récent vous a été envoyé : celui-ci ne sert plus. Saisissez à nouveau "
        "le code de suivi pour recevoir un nouveau code."
    ),
}


def attacher(host: Host) -> Callable[[int, User], bool] | None:
    """The host's optional ``attach_dossier``, or None (then there is no claim page)."""
    method = getattr(host, "attach_dossier", None)
    return method if callable(method) else None


def _page(host: Host, request: Request, status: int = 200, **context: Any) -> Response:
    context = {"token": None, "errors": {}, "notice": None, "error": None, **context}
    if not context["token"]:  # the tracking-code form
        context.update(code_hint(host))
    body = render_page(host, request, TEMPLATE, action_url=CLAIM_PATH, **context)
    return Response.html(body, status=status)


def _carried(host: Host, token: str, user: User) -> int | None:
    """The challenge of a token signed for ``user``'s claim, or None."""
    max_age = int(CHALLENGE_TOKEN_MAX_AGE.total_seconds())
    carried = unsign(host, PURPOSE, token, max_age)
    if not isinstance(carried, dict) or carried.get("account") != user.id:
        return None
    challenge = carried.get("challenge")
    return challenge if isinstance(challenge, int) else None


def _token(host: Host, user: User, challenge_id: int) -> str:
    return sign(host, PURPOSE, {"challenge": challenge_id, "account": user.id})


def _shown_challenge(host: Host, request: Request, user: User) -> tuple[str, int] | None:
    """The token and challenge of the code entry page the session shows ``user`` now."""
    page = shown_page(request, PAGE_KEY)
    challenge_id = None if page is None else _carried(host, page[1], user)
    return None if page is None or challenge_id is None else (page[1], challenge_id)


def _show_code_page(request: Request, token: str, notice: str) -> Response:
    request.session[PAGE_KEY] = {"token": token, "notice": notice}
    return Response.redirect(CLAIM_CODE_PATH)


def _not_found(host: Host, request: Request) -> Response:
    return message_page(host, request, N_("Page introuvable"), N_("Cette page n'existe pas."), 404)


def code_page(host: Host, request: Request) -> Response:
    """GET ``/hors-compte/rattacher/code``: the code entry page the session's last claim
    step led to; without one, the claim form; once it is too old (or another account's),
    the claim form saying the request expired."""
    user = request.user
    if attacher(host) is None:
        return _not_found(host, request)
    if user is None:
        return Response.redirect(host.login_url(CLAIM_PATH))
    page = shown_page(request, PAGE_KEY)
    if page is None:
        return Response.redirect(CLAIM_PATH)
    shown, token = page
    if _carried(host, token, user) is None:
        request.session.pop(PAGE_KEY, None)
        return _page(host, request, 400, errors={"tracking_code": EXPIRED})
    return _page(host, request, token=token, notice=NOTICES.get(str(shown.get("notice"))))


def handle(host: Host, request: Request) -> Response:
    attach = attacher(host)
    user = request.user
    if attach is None:
        return _not_found(host, request)
    if user is None:
        return Response.redirect(host.login_url(CLAIM_PATH))
    if request.method != "POST":
        return _page(host, request)
    action = request.form.get("action", "")
    if action == "start":
        return _start(host, request, user)
    challenge_id = _carried(host, request.form.get("token", ""), user)
    if challenge_id is None:
        return _page(host, request, 400, errors={"tracking_code": EXPIRED})
    if action == "resend":
        resent = resend(host, challenge_id, request.locale)
        if resent.challenge_id is None:  # replaced by a newer code, or spent: start again
            newer = _shown_challenge(host, request, user)
            if not resent.used and newer is not None and newer[1] != challenge_id:
                return show_newer_page(request, PAGE_KEY, CLAIM_CODE_PATH)
            failure = CLAIM_FAILURES["used" if resent.used else "replaced"]
            return _page(host, request, 400, errors={"tracking_code": failure})
        if resent.wait:
            token = _token(host, user, challenge_id)
            error = resend_wait_message(resent.wait)
            return _page(host, request, 429, token=token, error=error)
        return _show_code_page(request, _token(host, user, resent.challenge_id), "resent")
    return _finish(host, request, user, attach, challenge_id)


def _start(host: Host, request: Request, user: User) -> Response:
    try:
        typed = read_input(user.email, request.form.get("tracking_code", ""))
    except LookupInputError as error:
        errors = {k: v for k, v in error.errors.items() if k == "tracking_code"}
        return _page(host, request, 400, errors=errors or {"tracking_code": INVALID_ACCOUNT})
    started = start_lookup(host, typed, request.client_addr, request.locale)
    return _show_code_page(request, _token(host, user, started.challenge_id), "sent")


def _finish(
    host: Host,
    request: Request,
    user: User,
    attach: Callable[[int, User], bool],
    challenge_id: int,
) -> Response:
    outcome = verify(host, challenge_id, request.form.get("code", ""))
    token = _token(host, user, challenge_id)
    if outcome.kind == "used":
        return _page(host, request, 400, errors={"tracking_code": CLAIM_FAILURES["used"]})
    if outcome.kind == "replaced":
        newer = _shown_challenge(host, request, user)
        if newer is not None and newer[1] != challenge_id:
            return _page(host, request, 400, token=newer[0], error=NEWER_CODE)
        return _page(host, request, 400, errors={"tracking_code": CLAIM_FAILURES["replaced"]})
    if outcome.kind != "granted" or outcome.dossier_id is None:
        message = WAIT if outcome.kind in ("wait", "locked") else failure_message(outcome)
        status = 429 if outcome.kind in ("wait", "locked") else 400
        return _page(host, request, status, token=token, error=message)
    dossier_id = outcome.dossier_id
    request.session.pop(PAGE_KEY, None)  # the code is spent: Back leads to the claim form
    attached = attach(dossier_id, user)
    with Session(writer(host.engine)) as session, session.begin():
        kind = ATTACHED if attached else REFUSED
        details = {"dossier": dossier_id, "account": user.id}
        PluginHooks(host).audit(session, kind, details, actor=user.email)
    if not attached:
        return message_page(host, request, N_("Dossier déjà rattaché"), ALREADY, 409)
    return Response.redirect(host.dossier_url(dossier_id))
