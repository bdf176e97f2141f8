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
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from .codes import (
    SPECIAL,
    CodePolicy,
    could_be_tracking_code,
    generate_validation_code,
    normalize_tracking_code,
)
from .emails import InvalidEmail, email_key, normalize_email
from .hookspecs.horscompte import AuditEvent
from .hookspecs.host import Host, MailTemplate
from .i18n import N_, Message
from .limits import LOOKUP_CLIENT, LOOKUP_DOSSIER_MAILS, LOOKUP_EMAIL, counted_all
from .mail_templates import DEFAULT_VALIDATION_TEMPLATE, available_templates
from .models import Challenge, TrackingCode
from .rendering import render_mail
from .settings import Settings
from .throttle import throttle_key

LOOKUP_PATH = "/hors-compte/suivi"
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
            "recopiez-le depuis l'e-mail de dépôt.",
            special=" ".join(SPECIAL),
        )
    if errors:
        raise LookupInputError(errors)
    return LookupInput(email, code)


def guard_key(host: Host, subject: str) -> str:
    return throttle_key(host.secret_keys[-1], "guard", subject)


def code_hmac(key: bytes, guard: str, code: str) -> str:
    return hmac.new(key, f"{guard}\0{code}".encode(), hashlib.sha256).hexdigest()


def _matching(rows: list[TrackingCode], typed: str) -> TrackingCode | None:
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


def _new_challenge(
    host: Host, session: Session, settings: Settings, guard: str, dossier_id: int | None
) -> tuple[Challenge, str]:
    """Kill the guard's older codes and store a new one (its HMAC only)."""
    now = host.now()
    session.exec(  # type: ignore[call-overload]
        update(Challenge)
        .where(col(Challenge.guard_key) == guard, col(Challenge.consumed_at).is_(None))
        .values(consumed_at=now)
    )
    code = generate_validation_code(settings.validation_code_length)
    challenge = Challenge(
        dossier_id=dossier_id,
        guard_key=guard,
        code_hmac=code_hmac(host.secret_keys[-1], guard, code),
        created_at=now,
        expires_at=now + timedelta(minutes=settings.validation_code_expiry_minutes),
    )
    session.add(challenge)
    session.flush()
    return challenge, code


def send_code(
    host: Host,
    session: Session,
    settings: Settings,
    target: TrackingCode | None,
    guard: str,
    *,
    mail: bool,
) -> Challenge:
    """A new validation code for ``target``, mailed (to the address stored at deposit) when
    ``mail`` is true; a decoy for ``None``. A code not mailed (a limit was reached) still
    names its dossier, so a resend after the limit's window mails a real one. Same
    statements either way: the audit record stands where the mail would."""
    challenge, code = _new_challenge(
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
        mail = render_mail(host, target.email, template, context, target.locale)
        host.queue_mail(session, mail)
    else:
        event = AuditEvent(LOOKUP_MISS, "system", host.now(), {"challenge": challenge.id})
        host.hook.horscompte_audit_event(host=host, session=session, event=event)
    return challenge


def start_lookup(
    host: Host, session: Session, settings: Settings, typed: LookupInput, client: str
) -> Challenge:
    """Count the attempt, find the dossier, and send its code (or a decoy's).

    Every limit is counted whatever matched, in one statement, so a match and a miss cost
    the same statements: settings, candidates, counters, older codes, new code, mail/audit.
    """
    key = email_key(typed.email)
    candidates = list(session.exec(select(TrackingCode).where(TrackingCode.email_key == key)))
    target = _matching(candidates, typed.tracking_code)
    guard = guard_key(host, f"dossier:{target.dossier_id}" if target else f"email:{key}")
    limits = [(LOOKUP_CLIENT, client), (LOOKUP_EMAIL, key), (LOOKUP_DOSSIER_MAILS, guard)]
    allowed = counted_all(host, session, limits)
    return send_code(host, session, settings, target, guard, mail=allowed)
