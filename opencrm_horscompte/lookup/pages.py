"""The citizen's pages: find a dossier (``/hors-compte/suivi``), enter the validation code
(``/hors-compte/validation``), and "tracking code forgotten" (``/hors-compte/code-oublie``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlmodel import Session

from opencrm_horscompte.base.db import writer
from opencrm_horscompte.base.emails import InvalidEmail, email_key, mask_email, normalize_email
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.hostinfo import moment
from opencrm_horscompte.base.i18n import N_, NP_, Message
from opencrm_horscompte.base.limits import (
    CHALLENGE_TOKEN_MAX_AGE,
    FORGOTTEN_CLIENT,
    FORGOTTEN_EMAIL,
    counted_all,
)
from opencrm_horscompte.base.models import TrackingCode
from opencrm_horscompte.base.paths import FORGOTTEN_PATH, LOOKUP_PATH, VALIDATE_PATH
from opencrm_horscompte.base.rendering import plugin_mail, render_mail, render_page
from opencrm_horscompte.base.tokens import sign, unsign
from opencrm_horscompte.hookspecs.host import Host, Request, Response
from opencrm_horscompte.lookup.grants import grant, has_grant
from opencrm_horscompte.lookup.start import LookupInputError, read_input, start_lookup
from opencrm_horscompte.lookup.validation import Outcome, clean_code, resend, verify
from opencrm_horscompte.settings.store import load_settings
from opencrm_horscompte.tracking.codes import (
    CodePolicy,
    example_tracking_code,
    format_tracking_code,
)

CHALLENGE_PURPOSE = "challenge"
# The code entry page a lookup (or a resend) led to, kept in the session so that the POST
# answers with a redirect to it: a reload or Back shows the page again, and sends no code.
PAGE_KEY = "horscompte.validation"
# "Code oublié" answered: its POST redirects to the page, which shows the reply once.
FORGOTTEN_KEY = "horscompte.forgotten"
FORGOTTEN_MAIL = plugin_mail("forgotten", "Rappel des codes de suivi")
FORGOTTEN_MISS = "forgotten.miss"
FORGOTTEN_LISTED = 20  # the most recent dossiers a "code oublié" mail lists
PLACEHOLDER_CODE = "X" * 12

SENT = N_(
    "Si ces informations correspondent à un dossier, un code de validation vient d'être "
    "envoyé à l'adresse électronique indiquée lors du dépôt."
)
RESENT = N_(
    "Si un dossier correspond, un nouveau code vient d'être envoyé ; l'ancien ne sert plus."
)
ALREADY_RESENT = N_(
    "Un nouveau code vous a déjà été envoyé : saisissez le code du dernier courriel reçu."
)
# What the code entry page tells, by the session's ``notice``.
NOTICES = {"sent": SENT, "resent": RESENT, "already_resent": ALREADY_RESENT}
EXPIRED = N_(
    "Votre demande a expiré : saisissez à nouveau votre adresse électronique et votre code "
    "de suivi."
)
FAILURES: dict[str, Message] = {
    "wrong": N_("Ce code n'est pas le bon. Vérifiez le dernier courriel reçu et recommencez."),
    "malformed": N_("Saisissez le code reçu par courriel : des chiffres seulement."),
    "expired": N_("Ce code a expiré. Demandez un nouveau code avec le bouton ci-dessous."),
    "used": N_(
        "Ce code a déjà servi. Pour revoir votre dossier, recommencez la recherche avec "
        "votre adresse électronique et votre code de suivi."
    ),
    "replaced": N_(
        "Un code plus récent vous a été envoyé : celui-ci ne sert plus. Recommencez la "
        "recherche avec votre adresse électronique et votre code de suivi pour recevoir un "
        "nouveau code."
    ),
    "exhausted": N_(
        "Ce code a reçu trop d'essais erronés et ne sert plus. Demandez un nouveau code "
        "avec le bouton ci-dessous."
    ),
}


NEWER_CODE = N_(
    "Un code plus récent vous a été envoyé : celui-ci ne sert plus. Saisissez le code du "
    "dernier courriel reçu."
)


LAST_TRY_WRONG = N_(
    "Ce code n'est pas le bon, et c'était le dernier essai : il ne sert plus. Demandez un "
    "nouveau code avec le bouton ci-dessous."
)


def _duration(seconds: float) -> Message:
    if seconds < 90:
        return NP_("%(count)s seconde", "%(count)s secondes", int(seconds) + 1)
    minutes = max(1, round(seconds / 60))
    return NP_("%(count)s minute", "%(count)s minutes", minutes)


def failure_message(outcome: Outcome) -> Message:
    """What the code entry page says of a refused code."""
    if outcome.kind == "wrong" and outcome.attempts_left == 0:
        return LAST_TRY_WRONG
    if outcome.kind == "wrong":
        return NP_(
            "Ce code n'est pas le bon. Vérifiez le dernier courriel reçu et recommencez : "
            "ce code accepte encore %(count)s essai.",
            "Ce code n'est pas le bon. Vérifiez le dernier courriel reçu et recommencez : "
            "ce code accepte encore %(count)s essais.",
            outcome.attempts_left,
        )
    return FAILURES.get(outcome.kind) or _wait_message(outcome)


def _wait_message(outcome: Outcome) -> Message:
    duration = _duration(outcome.wait.total_seconds())
    if outcome.kind == "locked":
        return N_(
            "Trop de codes erronés : la recherche de ce dossier par code est bloquée "
            "pendant %(duration)s. Vous pouvez aussi contacter la mairie.",
            duration=duration,
        )
    return N_(
        "Trop de codes erronés : patientez %(duration)s avant de réessayer.", duration=duration
    )


def code_hint(host: Host) -> dict[str, Any]:
    """What the tracking-code field's hint shows (``_tracking_code_field.html``): an example
    under the current policy, grouped as on the receipt, and whether case matters."""
    with Session(host.engine) as session:
        policy = CodePolicy.from_settings(load_settings(session))
    example = format_tracking_code(example_tracking_code(policy))
    return {"code_example": example, "case_sensitive": policy.case_sensitive}


def _lookup_form(
    host: Host, request: Request, values: dict[str, str], errors: dict[str, Message], status: int
) -> Response:
    body = render_page(
        host,
        request,
        "horscompte/lookup.html",
        action_url=LOOKUP_PATH,
        values=values,
        errors=errors,
        forgotten_url=FORGOTTEN_PATH,
        **code_hint(host),
    )
    return Response.html(body, status=status)


def _code_length(host: Host, known: int | None) -> int:
    """The validation code's length: the one a token carried, else the settings' (a token
    signed before it carried the length)."""
    if known is not None:
        return known
    with Session(host.engine) as session:
        return load_settings(session).validation_code_length


def _token(host: Host, challenge_id: int, sent_to: str, code_length: int) -> str:
    """The validation page's signed token: the challenge, the masked address the code was
    sent to (the page's wording only) and the code's length, for the pages that follow."""
    carried: dict[str, Any] = {"challenge": challenge_id, "digits": code_length}
    if sent_to:
        carried["to"] = sent_to
    return sign(host, CHALLENGE_PURPOSE, carried)


def _show_code_page(request: Request, token: str, expiry: int | None, notice: str) -> Response:
    """Answer a POST that sent a code with a redirect to the code entry page (post /
    redirect / get), which the session describes."""
    request.session[PAGE_KEY] = {"token": token, "expiry": expiry, "notice": notice}
    return Response.redirect(VALIDATE_PATH)


def show_newer_page(request: Request, key: str, path: str) -> Response:
    """A resend asked from a page whose code was replaced since (a double click, Back):
    the page of the newer code, told it was already sent; nothing is mailed."""
    request.session[key] = {**request.session[key], "notice": "already_resent"}
    return Response.redirect(path)


def shown_page(request: Request, key: str) -> tuple[dict[str, Any], str] | None:
    """The code entry page the session keeps under ``key`` (the lookup's or the claim's),
    with its token, or None."""
    shown = request.session.get(key)
    if not isinstance(shown, dict) or not isinstance(shown.get("token"), str):
        return None
    return shown, shown["token"]


def _code_page(host: Host, request: Request) -> Response:
    """GET of the code entry page: the one the session's last lookup or resend led to."""
    page = shown_page(request, PAGE_KEY)
    if page is None:
        return Response.redirect(LOOKUP_PATH)
    shown, token = page
    carried = _carried(host, token)
    if carried is None:  # too old: start again
        return _lookup_form(host, request, {}, {"email": EXPIRED}, 400)
    expiry = shown.get("expiry")
    notice = NOTICES.get(str(shown.get("notice")))
    return _validation_form(
        host,
        request,
        carried.challenge_id,
        token=token,
        expiry=expiry if isinstance(expiry, int) else None,
        sent_to=carried.sent_to,
        code_length=carried.code_length,
        notice=notice,
    )


def _validation_form(
    host: Host,
    request: Request,
    challenge_id: int,
    *,
    status: int = 200,
    token: str | None = None,
    expiry: int | None = None,
    sent_to: str = "",
    code_length: int | None = None,
    **messages: Any,
) -> Response:
    """The code entry page; ``expiry`` (minutes) is told with a code just sent. ``sent_to``
    is the typed address, masked: the page is the same whether or not a dossier matched.
    ``token``: the page's own, else one is signed for ``challenge_id``."""
    code_length = _code_length(host, code_length)
    body = render_page(
        host,
        request,
        "horscompte/validate.html",
        token=token or _token(host, challenge_id, sent_to, code_length),
        expiry_minutes=expiry,
        sent_to=sent_to,
        code_length=code_length,
        action_url=VALIDATE_PATH,
        restart_url=LOOKUP_PATH,
        notice=messages.get("notice"),
        error=messages.get("error"),
        resend_refused=messages.get("resend_refused", False),
    )
    return Response.html(body, status=status)


def lookup(host: Host, request: Request) -> Response:
    if request.method != "POST":
        return _lookup_form(host, request, {}, {}, 200)
    try:
        typed = read_input(request.form.get("email", ""), request.form.get("tracking_code", ""))
    except LookupInputError as error:
        shown = {"email": request.form.get("email", "")[:320]}
        return _lookup_form(host, request, shown, error.errors, 400)
    started = start_lookup(host, typed, request.client_addr, request.locale)
    sent_to = mask_email(typed.email)
    token = _token(host, started.challenge_id, sent_to, started.code_length)
    return _show_code_page(request, token, started.expiry_minutes, "sent")


@dataclass(frozen=True)
class _Carried:
    """What the validation page's signed token carries."""

    challenge_id: int
    sent_to: str  # the typed address, masked (the page's wording only)
    code_length: int | None


def _carried(host: Host, token: str) -> _Carried | None:
    max_age = int(CHALLENGE_TOKEN_MAX_AGE.total_seconds())
    carried = unsign(host, CHALLENGE_PURPOSE, token, max_age)
    if not isinstance(carried, dict) or not isinstance(carried.get("challenge"), int):
        return None
    sent_to, digits = carried.get("to"), carried.get("digits")
    return _Carried(
        carried["challenge"],
        sent_to if isinstance(sent_to, str) else "",
        digits if isinstance(digits, int) else None,
    )


def resend_wait_message(wait: timedelta) -> Message:
    """A resend asked within the cooldown: how long to wait."""
    return N_(
        "Un code vient d'être envoyé : patientez %(duration)s avant d'en demander un autre.",
        duration=_duration(wait.total_seconds()),
    )


def _newer_page(host: Host, request: Request, challenge_id: int) -> tuple[str, _Carried] | None:
    """The code entry page the session shows now, if it is another (newer) code's than
    ``challenge_id``'s: a double click's first request, or a resend in another tab, made it."""
    page = shown_page(request, PAGE_KEY)
    carried = None if page is None else _carried(host, page[1])
    if page is None or carried is None or carried.challenge_id == challenge_id:
        return None
    return page[1], carried


def length_error(typed: str, code_length: int | None) -> Message | None:
    """Why ``typed`` can't be the code of ``code_length`` digits (spaces aside), or None:
    told before anything is counted, as a typo, not a wrong code that spends a try."""
    code = clean_code(typed)
    if code_length is None or (code is not None and len(code) == code_length):
        return None
    return NP_(
        "Le code reçu par courriel compte %(count)s chiffre : saisissez-le en entier, sans "
        "lettre ni autre signe.",
        "Le code reçu par courriel compte %(count)s chiffres : saisissez-le en entier, sans "
        "lettre ni autre signe.",
        code_length,
    )


def _granted_before(host: Host, request: Request, outcome: Outcome) -> int | None:
    """The dossier of a code already spent by this session's own request (a double click:
    the first request won, and this session holds the grant), else None."""
    dossier_id = outcome.dossier_id
    if outcome.kind == "used" and dossier_id is not None and has_grant(host, request, dossier_id):
        return dossier_id
    return None


def validate(host: Host, request: Request) -> Response:
    if request.method != "POST":
        return _code_page(host, request)
    carried = _carried(host, request.form.get("token", ""))
    if carried is None:
        return _lookup_form(host, request, {}, {"email": EXPIRED}, 400)
    challenge_id = carried.challenge_id
    page = functools.partial(
        _validation_form, host, request, sent_to=carried.sent_to, code_length=carried.code_length
    )
    if request.form.get("action") == "resend":
        resent = resend(host, challenge_id, request.locale)
        if resent.challenge_id is None:  # replaced by a newer code, or spent
            if not resent.used and _newer_page(host, request, challenge_id):
                return show_newer_page(request, PAGE_KEY, VALIDATE_PATH)
            kind = "used" if resent.used else "replaced"
            return _lookup_form(host, request, {}, {"email": FAILURES[kind]}, 400)
        if resent.wait:
            error = resend_wait_message(resent.wait)
            return page(challenge_id, status=429, error=error, resend_refused=True)
        code_length = _code_length(host, carried.code_length)
        token = _token(host, resent.challenge_id, carried.sent_to, code_length)
        return _show_code_page(request, token, resent.expiry_minutes, "resent")
    typed = request.form.get("code", "")
    if (typo := length_error(typed, carried.code_length)) is not None:
        return page(challenge_id, status=400, error=typo)
    outcome = verify(host, challenge_id, typed)
    if outcome.kind == "granted" and outcome.dossier_id is not None:
        grant(host, request, outcome.dossier_id)
        request.session.pop(PAGE_KEY, None)  # Back then leads to the lookup, not a spent code
        return Response.redirect(host.dossier_url(outcome.dossier_id))
    if (granted := _granted_before(host, request, outcome)) is not None:
        return Response.redirect(host.dossier_url(granted))
    if outcome.kind == "replaced" and (newer := _newer_page(host, request, challenge_id)):
        token, shown = newer
        return _validation_form(
            host,
            request,
            shown.challenge_id,
            status=400,
            token=token,
            sent_to=shown.sent_to,
            code_length=shown.code_length,
            error=NEWER_CODE,
        )
    message = failure_message(outcome)
    status = 429 if outcome.kind in ("wait", "locked") else 400
    return page(challenge_id, status=status, error=message)


def _forgotten_form(host: Host, request: Request, **context: Any) -> Response:
    context = {"values": {}, "errors": {}, "sent": False, **context}
    status = 400 if context["errors"] else 200
    template = "horscompte/forgotten.html"
    body = render_page(host, request, template, lookup_url=LOOKUP_PATH, **context)
    return Response.html(body, status=status)


_CODES = TrackingCode.__table__
# The newest FORGOTTEN_LISTED + 1 tracking codes of an address (one more tells that older
# ones exist), only the columns the mail needs.
_FORGOTTEN_ROWS = (
    select(_CODES.c.demarche_title, _CODES.c.issued_at, _CODES.c.code, _CODES.c.email)
    .where(_CODES.c.email_key == bindparam("key"))
    .order_by(_CODES.c.issued_at.desc(), _CODES.c.dossier_id.desc())
    .limit(FORGOTTEN_LISTED + 1)
)


def forgotten_entry(host: Host, title: str, issued_at: datetime, code: str) -> dict[str, Any]:
    """One dossier of a "code oublié" mail (also the agent's resend of a tracking code)."""
    return {
        "demarche_title": title,
        "date": moment(host, issued_at, "date"),
        "tracking_code": format_tracking_code(code),
    }


def forgotten(host: Host, request: Request) -> Response:
    """Email in, neutral reply; the mailbox gets the list of its dossiers and their codes.
    The POST redirects to the page (post/redirect/get): a reload mails nothing more."""
    if request.method != "POST":
        return _forgotten_form(
            host, request, sent=request.session.pop(FORGOTTEN_KEY, None) == "sent"
        )
    try:
        email = normalize_email(request.form.get("email", ""))
    except InvalidEmail as error:
        shown = {"email": request.form.get("email", "")[:320]}
        return _forgotten_form(host, request, values=shown, errors={"email": error.message})
    key = email_key(email)
    with Session(host.engine) as session:
        newest = session.connection().execute(_FORGOTTEN_ROWS, {"key": key}).all()
    rows = newest[:FORGOTTEN_LISTED][::-1]  # oldest first
    # Rendered before the write transaction, with or without dossiers, and for as many as
    # are listed: the list is padded with placeholders to FORGOTTEN_LISTED entries, the
    # padding rendered apart and thrown away (an address without dossiers gets a list of
    # one placeholder, never sent). Same work whether the address has 0 or 20 dossiers.
    dossiers = [forgotten_entry(host, row.demarche_title, row.issued_at, row.code) for row in rows]
    placeholders = [
        forgotten_entry(host, "-", host.now(), PLACEHOLDER_CODE)
        for _ in range(FORGOTTEN_LISTED - len(dossiers))
    ]
    listed = dossiers or placeholders[:1]
    context = {
        "dossiers": listed,
        "older_dossiers": len(newest) > FORGOTTEN_LISTED,
        "lookup_url": host.absolute_url(LOOKUP_PATH),
    }
    to = rows[-1].email if rows else email
    mail = render_mail(host, to, FORGOTTEN_MAIL, context, request.locale)
    padding = {**context, "dossiers": placeholders[len(listed) - len(dossiers) :]}
    render_mail(host, to, FORGOTTEN_MAIL, padding, request.locale)
    limits = [(FORGOTTEN_CLIENT, request.client_addr), (FORGOTTEN_EMAIL, key)]
    with Session(writer(host.engine)) as session, session.begin():
        if counted_all(host, session, limits) and rows:
            host.queue_mail(session, mail)
        else:
            PluginHooks(host).audit(session, FORGOTTEN_MISS)
    request.session[FORGOTTEN_KEY] = "sent"
    return Response.redirect(FORGOTTEN_PATH)
