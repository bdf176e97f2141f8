"""Finding a deposited dossier again: email + tracking code -> a validation code by mail.

Enumeration resistance: whatever the email and code match (nothing, another dossier's
code, the right pair) and whether or not a limit was reached, the citizen gets the same
page and the database the same statements. A lookup that matches nothing creates a *decoy*
challenge, which the validation page treats exactly like a real one (attempts, backoff,
lock), and records an audit event where a real lookup queues its mail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import bindparam, insert, select, update
from sqlmodel import Session

from opencrm_horscompte.base.emails import InvalidEmail, email_key, normalize_email
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.i18n import N_, Message
from opencrm_horscompte.base.limits import (
    LOOKUP_CLIENT,
    LOOKUP_DOSSIER_MAILS,
    LOOKUP_EMAIL,
    counted_all,
)
from opencrm_horscompte.base.models import Challenge, TrackingCode
from opencrm_horscompte.base.paths import LOOKUP_PATH
from opencrm_horscompte.base.rendering import render_mail
from opencrm_horscompte.base.throttle import throttle_key
from opencrm_horscompte.hookspecs.host import Host, MailTemplate
from opencrm_horscompte.settings.mail_templates import (
    DEFAULT_VALIDATION_TEMPLATE,
    available_templates,
)
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.stats.counters import count
from opencrm_horscompte.tracking.codes import (
    SPECIAL,
    CodePolicy,
    could_be_tracking_code,
    generate_validation_code,
    normalize_tracking_code,
)

MAX_TYPED_CODE = 100
LOOKUP_MISS = "lookup.miss"


class LookupInputError(ValueError):
    """What the citizen typed can't be a lookup; ``errors`` maps a field to its message.
    Nothing was counted or stored."""

    def __init__(self, errors: dict[str, Message]) -> None:
        super().__init__("; ".join(map(str, errors.values())))
        self.errors = errors


@dataclass(frozen=True)
class LookupInput:
    email: str
    tracking_code: str


def read_input(form_email: str, form_code: str) -> LookupInput:
    """Validate the lookup form; refuses control characters and oversized input."""
    errors: dict[str, Message] = {}
    try:
        email = normalize_email(form_email)
    except InvalidEmail as error:
        errors["email"] = error.message
        email = ""
    code = form_code.strip()
    if not code:
        errors["tracking_code"] = N_("Saisissez le code de suivi reçu lors du dépôt.")
    elif len(code) > MAX_TYPED_CODE or not could_be_tracking_code(code):
        errors["tracking_code"] = N_(
            "Ce code de suivi contient des caractères qui n'existent pas dans les codes "
            "(seuls les chiffres, les lettres et %(special)s en font partie) : "
            "recopiez-le depuis le courriel de dépôt.",
            special=" ".join(SPECIAL),
        )
    if errors:
        raise LookupInputError(errors)
    return LookupInput(email, code)


def guard_key(host: Host, subject: str) -> str:
    return throttle_key(host.secret_keys[-1], "guard", subject)


def code_hmac(key: bytes, guard: str, code: str) -> str:
    return hmac.new(key, f"{guard}\0{code}".encode(), hashlib.sha256).hexdigest()


def _matching(rows: Sequence[IssuedCode], typed: str) -> IssuedCode | None:
    """The row whose code ``typed`` is, comparing every candidate in constant time."""
    found = None
    for row in rows:
        policy = CodePolicy(**json.loads(row.policy_json))
        normalized = normalize_tracking_code(typed, policy)
        if hmac.compare_digest(normalized.encode(), row.code.encode()):
            found = row
    return found


def validation_template(host: Host, settings: Settings) -> MailTemplate:
    chosen = settings.validation_mail_template
    templates = {template.key: template for template in available_templates(host)}
    return templates.get(chosen, DEFAULT_VALIDATION_TEMPLATE)


_CODES = TrackingCode.__table__
_CHALLENGES = Challenge.__table__
_STAMP = _CHALLENGES.c.created_at.type

# Prebuilt Core statements (compiled once, cached): a lookup's hot path.
_CANDIDATES = select(
    _CODES.c.dossier_id,
    _CODES.c.code,
    _CODES.c.policy_json,
    _CODES.c.email,
    _CODES.c.demarche_title,
    _CODES.c.locale,
).where(_CODES.c.email_key == bindparam("email_key", type_=_CODES.c.email_key.type))
_KILL_OLDER = (
    update(_CHALLENGES)
    .where(
        _CHALLENGES.c.guard_key == bindparam("guard", type_=_CHALLENGES.c.guard_key.type),
        _CHALLENGES.c.consumed_at.is_(None),
    )
    .values(consumed_at=bindparam("now", type_=_STAMP))
)
_INSERT_CHALLENGE = (
    insert(_CHALLENGES)
    .values(
        dossier_id=bindparam("dossier_id", type_=_CHALLENGES.c.dossier_id.type),
        guard_key=bindparam("guard", type_=_CHALLENGES.c.guard_key.type),
        code_hmac=bindparam("code_hmac", type_=_CHALLENGES.c.code_hmac.type),
        created_at=bindparam("now", type_=_STAMP),
        expires_at=bindparam("expires_at", type_=_STAMP),
        attempts=0,
    )
    .returning(_CHALLENGES.c.id)
)


class IssuedCode(Protocol):
    """What the lookup reads of a tracking code (a ``TrackingCode`` or a row of it)."""

    dossier_id: int
    code: str
    policy_json: str
    email: str
    demarche_title: str
    locale: str


def _new_challenge(
    host: Host, session: Session, settings: Settings, guard: str, dossier_id: int | None
) -> tuple[int, str, datetime]:
    """Kill the guard's older codes and store a new one (its HMAC only); its id, code and
    expiry."""
    now = host.now()
    connection = session.connection()
    connection.execute(_KILL_OLDER, {"guard": guard, "now": now})
    code = generate_validation_code(settings.validation_code_length)
    expires_at = now + timedelta(minutes=settings.validation_code_expiry_minutes)
    params = {
        "dossier_id": dossier_id,
        "guard": guard,
        "code_hmac": code_hmac(host.secret_keys[-1], guard, code),
        "now": now,
        "expires_at": expires_at,
    }
    challenge_id: int = connection.execute(_INSERT_CHALLENGE, params).scalar_one()
    return challenge_id, code, expires_at


def send_code(
    host: Host,
    session: Session,
    settings: Settings,
    target: IssuedCode | None,
    guard: str,
    *,
    mail: bool,
) -> int:
    """A new validation code for ``target``, mailed (to the address stored at deposit) when
    ``mail`` is true; a decoy for ``None``. A code not mailed (a limit was reached) still
    names its dossier, so a resend after the limit's window mails a real one. Same
    statements either way: the audit record stands where the mail would."""
    challenge_id, code, expires_at = _new_challenge(
        host, session, settings, guard, target.dossier_id if target else None
    )
    if target is not None and mail:
        context = {
            "code": code,
            "expiry_minutes": settings.validation_code_expiry_minutes,
            "demarche_title": target.demarche_title,
            "lookup_url": host.absolute_url(LOOKUP_PATH),
        }
        template = validation_template(host, settings)
        message = render_mail(host, target.email, template, context, target.locale)
        # useless once the code expires, and replaced by the next code of the same guard
        message = replace(message, useless_after=expires_at, replaces=f"horscompte.code:{guard}")
        host.queue_mail(session, message)
    else:
        PluginHooks(host).audit(session, LOOKUP_MISS, {"challenge": challenge_id})
    return challenge_id


def start_lookup(
    host: Host, session: Session, settings: Settings, typed: LookupInput, client: str
) -> int:
    """Count the attempt, find the dossier, and send its code (or a decoy's).

    Every limit is counted whatever matched, in one statement, so a match and a miss cost
    the same statements: settings, candidates, counters, older codes, new code, mail/audit.
    """
    key = email_key(typed.email)
    candidates = list(session.connection().execute(_CANDIDATES, {"email_key": key}))
    target = _matching(candidates, typed.tracking_code)
    guard = guard_key(host, f"dossier:{target.dossier_id}" if target else f"email:{key}")
    limits = [(LOOKUP_CLIENT, client), (LOOKUP_EMAIL, key), (LOOKUP_DOSSIER_MAILS, guard)]
    allowed = counted_all(host, session, limits)
    count(session, host.now(), lookups=1, codes_sent=int(target is not None and allowed))
    return send_code(host, session, settings, target, guard, mail=allowed)
