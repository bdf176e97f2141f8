"""Deposit pipeline: give a dossier its unique tracking code inside the host's transaction,
and queue the acknowledgment mail in the same transaction."""

from __future__ import annotations

import json
from dataclasses import asdict

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from .codes import CodePolicy, format_tracking_code
from .emails import email_key_or_blank
from .hookspecs.host import Dossier, Host, MailMessage
from .lookup import LOOKUP_PATH
from .models import TrackingCode
from .rendering import plugin_mail, render_mail
from .settings import Settings
from .settings_store import load_settings

MAX_ATTEMPTS = 12
MAX_CODE_LENGTH = 64
ACKNOWLEDGMENT_MAIL = plugin_mail("deposit_ack", "Accusé de dépôt avec le code de suivi")


class TrackingCodeSpaceExhausted(RuntimeError):
    """No unused tracking code was found in ``MAX_ATTEMPTS`` draws: the code space is (nearly)
    full. The deposit fails and its transaction rolls back; an admin must lengthen the code
    or allow more character classes."""


def _candidate(host: Host, settings: Settings) -> str:
    code = host.hook.horscompte_generate_tracking_code(host=host, settings=settings)
    if not isinstance(code, str) or not 0 < len(code) <= MAX_CODE_LENGTH:
        raise ValueError(f"tracking code generator returned an unusable value: {code!r}")
    return code


def _code_taken(session: Session, code: str) -> bool:
    """Was the failed insert a collision on ``code`` (and not another constraint)?"""
    taken = select(TrackingCode.dossier_id).where(TrackingCode.code == code)
    return session.exec(taken).first() is not None


def assign_tracking_code(host: Host, session: Session, dossier: Dossier) -> TrackingCode:
    """Insert the dossier's tracking code, retrying in a savepoint on a collision.

    Uniqueness comes from the unique index on ``code``: nothing is loaded to check it, so
    the cost of a deposit does not grow with the number of dossiers.
    """
    settings = load_settings(session)
    policy_json = json.dumps(asdict(CodePolicy.from_settings(settings)))
    for _ in range(MAX_ATTEMPTS):
        row = TrackingCode(
            dossier_id=dossier.id,
            code=_candidate(host, settings),
            policy_json=policy_json,
            issued_at=host.now(),
            email=dossier.email,
            email_key=email_key_or_blank(dossier.email),
            demarche_title=dossier.demarche_title,
            locale=dossier.locale,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            if _code_taken(session, row.code):
                continue
            raise
        return row
    raise TrackingCodeSpaceExhausted(
        f"no free tracking code after {MAX_ATTEMPTS} draws: lengthen the code or allow "
        "more character classes"
    )


def acknowledgment_mail(host: Host, dossier: Dossier, code: str) -> MailMessage:
    context = {
        "demarche_title": dossier.demarche_title,
        "tracking_code": format_tracking_code(code),
        "lookup_url": host.absolute_url(LOOKUP_PATH),
    }
    return render_mail(host, dossier.email, ACKNOWLEDGMENT_MAIL, context, dossier.locale)


def deposit(host: Host, session: Session, dossier: Dossier) -> TrackingCode:
    """What ``opencrm_deposit`` does: the code, then the acknowledgment mail."""
    row = assign_tracking_code(host, session, dossier)
    host.queue_mail(session, acknowledgment_mail(host, dossier, row.code))
    return row
