"""Deposit pipeline: give a dossier its unique tracking code inside the host's transaction,
and queue the acknowledgment mail in the same transaction."""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import cache

from sqlalchemy import bindparam
from sqlalchemy.sql import Executable
from sqlmodel import Session

from opencrm_horscompte.base.db import upsert_insert
from opencrm_horscompte.base.emails import email_key_or_blank
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.models import TrackingCode
from opencrm_horscompte.base.rendering import plugin_mail, render_mail
from opencrm_horscompte.hookspecs.host import Dossier, Host, MailMessage
from opencrm_horscompte.lookup.start import LOOKUP_PATH
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.store import load_settings
from opencrm_horscompte.tracking.codes import CodePolicy, format_tracking_code, is_findable

MAX_ATTEMPTS = 12
MAX_CODE_LENGTH = 64
ACKNOWLEDGMENT_MAIL = plugin_mail("deposit_ack", "Accusé de dépôt avec le code de suivi")


class TrackingCodeSpaceExhausted(RuntimeError):
    """No unused tracking code was found in ``MAX_ATTEMPTS`` draws: the code space is (nearly)
    full. The deposit fails and its transaction rolls back; an admin must lengthen the code
    or allow more character classes."""


def _candidate(host: Host, settings: Settings, policy: CodePolicy) -> str:
    code = PluginHooks(host).generate_tracking_code(settings)
    if not isinstance(code, str) or not 0 < len(code) <= MAX_CODE_LENGTH:
        raise ValueError(f"tracking code generator returned an unusable value: {code!r}")
    if not is_findable(code, policy):
        # Shown and mailed, it could never be found again: normalising what the citizen
        # types (separators removed, case folded per the policy) never gives it back.
        raise ValueError(
            f"tracking code generator returned an unusable value: {code!r} (a lookup could "
            "never find it: use only digits, ASCII letters in the policy's case and "
            "! $ * = @, without separators)"
        )
    return code


_CODES = TrackingCode.__table__


@cache
def _insert_unless_taken(dialect: str) -> Executable:
    """``INSERT ... ON CONFLICT (code) DO NOTHING RETURNING``: no row back means the code
    is taken; any other conflict (the dossier already has a code) raises as itself."""
    values = {column.name: bindparam(column.name, type_=column.type) for column in _CODES.c}
    insert = upsert_insert(dialect, _CODES).values(values)
    return insert.on_conflict_do_nothing(index_elements=[_CODES.c.code]).returning(
        _CODES.c.dossier_id
    )


def assign_tracking_code(host: Host, session: Session, dossier: Dossier) -> str:
    """Insert the dossier's tracking code, drawing again on a collision.

    Uniqueness comes from the unique index on ``code``: nothing is loaded to check it, so
    the cost of a deposit does not grow with the number of dossiers.
    """
    settings = load_settings(session)
    policy = CodePolicy.from_settings(settings)
    connection = session.connection()
    statement = _insert_unless_taken(connection.dialect.name)
    row = {
        "dossier_id": dossier.id,
        "policy_json": json.dumps(asdict(policy)),
        "issued_at": host.now(),
        "email": dossier.email,
        "email_key": email_key_or_blank(dossier.email),
        "demarche_title": dossier.demarche_title,
        "locale": dossier.locale,
        "receipt_proof": None,  # claimed by the depositor's first receipt view
    }
    for _ in range(MAX_ATTEMPTS):
        code = _candidate(host, settings, policy)
        if connection.execute(statement, {**row, "code": code}).first() is not None:
            return code
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


def deposit(host: Host, session: Session, dossier: Dossier) -> str:
    """What ``opencrm_deposit`` does: the code, then the acknowledgment mail."""
    code = assign_tracking_code(host, session, dossier)
    host.queue_mail(session, acknowledgment_mail(host, dossier, code))
    return code
