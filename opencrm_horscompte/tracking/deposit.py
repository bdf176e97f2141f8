"""Deposit pipeline: give a dossier its unique tracking code inside the host's transaction,
and queue the acknowledgment mail in the same transaction.

Nothing slow inside the write transaction: when the host calls ``opencrm_deposit_prepare``
before opening it (:func:`prepare`), the candidate code is drawn and the mail rendered
there; inside, :func:`deposit` checks the preparation still fits (same address, title,
language and code policy) and only inserts. A host that doesn't prepare gets the same
result with that work done inside, as does a collision of the prepared code.

A dossier owned by an account (``account_id`` set when it is deposited) gets no tracking
code: its owner follows it from their space, so the lookup never finds it and its
acknowledgment points to the host's page for the dossier instead.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import bindparam, exists, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable
from sqlmodel import Session

from opencrm_horscompte.base.db import (
    DriverConnection,
    DriverStatement,
    connection_of,
    upsert_insert,
)
from opencrm_horscompte.base.emails import email_key_or_blank
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.hostinfo import moment
from opencrm_horscompte.base.i18n import translate
from opencrm_horscompte.base.mail_skeleton import render_filled_mail
from opencrm_horscompte.base.models import TrackingCode, utc
from opencrm_horscompte.base.paths import LOOKUP_PATH
from opencrm_horscompte.base.rendering import plugin_mail
from opencrm_horscompte.hookspecs.host import Dossier, Host, MailMessage
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.store import (
    VERSION_ID,
    VERSION_TABLE,
    latest_version,
    load_settings,
)
from opencrm_horscompte.stats.counters import count
from opencrm_horscompte.tracking.codes import CodePolicy, format_tracking_code, is_findable

MAX_ATTEMPTS = 12
MAX_CODE_LENGTH = 64
MAX_PREPARED = 256
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


@lru_cache(maxsize=64)
def policy_json(policy: CodePolicy) -> str:
    """The policy as stored beside each code: serialised once per policy, not per deposit."""
    return json.dumps(asdict(policy))


_CODES = TrackingCode.__table__


@cache
def _driver_insert(dialect: str) -> DriverStatement:
    return DriverStatement(_insert_unless_taken(dialect))


@cache
def _insert_unless_taken(dialect: str) -> Executable:
    """``INSERT ... ON CONFLICT (code) DO NOTHING RETURNING``: no row back means the code
    is taken; any other conflict (the dossier already has a code) raises as itself."""
    values = {column.name: bindparam(column.name, type_=column.type) for column in _CODES.c}
    insert = upsert_insert(dialect, _CODES).values(values)
    return insert.on_conflict_do_nothing(index_elements=[_CODES.c.code]).returning(
        _CODES.c.dossier_id
    )


@cache
def _driver_insert_if_current(dialect: str) -> DriverStatement:
    return DriverStatement(_insert_if_current(dialect))


@cache
def _insert_if_current(dialect: str) -> Executable:
    """:func:`_insert_unless_taken` that inserts only while ``horscompte_settings_version``
    holds ``settings_token`` (the version a prepared code was drawn under): no row back
    means the code is taken or the settings moved. One statement where reading the version
    first would be two."""
    current = exists().where(
        VERSION_TABLE.c.id == VERSION_ID,
        VERSION_TABLE.c.token == bindparam("settings_token", type_=VERSION_TABLE.c.token.type),
    )
    values = select(*(bindparam(column.name, type_=column.type) for column in _CODES.c))
    insert = upsert_insert(dialect, _CODES).from_select(
        [column.name for column in _CODES.c], values.where(current)
    )
    return insert.on_conflict_do_nothing(index_elements=[_CODES.c.code]).returning(
        _CODES.c.dossier_id
    )


def assign_tracking_code(
    host: Host,
    session: Session,
    dossier: Dossier,
    *,
    settings: Settings | None = None,
    first: str | None = None,
) -> str:
    """Insert the dossier's tracking code, drawing again on a collision.

    Uniqueness comes from the unique index on ``code``: nothing is loaded to check it, so
    the cost of a deposit does not grow with the number of dossiers. ``first`` is a
    candidate drawn beforehand (under the same settings), tried before drawing here.
    """
    connection = connection_of(session)
    if settings is None:
        settings = load_settings(connection)
    return _insert_code(
        host, connection, dossier, settings, CodePolicy.from_settings(settings), first
    )


def _code_row(host: Host, dossier: Dossier, policy: CodePolicy) -> dict[str, Any]:
    """The tracking code's row, its ``code`` aside."""
    return {
        "dossier_id": dossier.id,
        "policy_json": policy_json(policy),
        "issued_at": host.now(),
        "email": dossier.email,
        "email_key": _email_key(dossier.email),
        "demarche_title": dossier.demarche_title,
        "locale": dossier.locale,
        "receipt_proof": None,  # claimed by the depositor's first receipt view
    }


def _insert_code(
    host: Host,
    connection: Connection | DriverConnection,
    dossier: Dossier,
    settings: Settings,
    policy: CodePolicy,
    first: str | None,
) -> str:
    statement = _driver_insert(connection.dialect.name)
    row = _code_row(host, dossier, policy)
    for attempt in range(MAX_ATTEMPTS):
        fresh = attempt > 0 or first is None
        row["code"] = code = _candidate(host, settings, policy) if fresh else str(first)
        if statement.first(connection, row) is not None:  # else the code is taken
            return code
    raise TrackingCodeSpaceExhausted(
        f"no free tracking code after {MAX_ATTEMPTS} draws: lengthen the code or allow "
        "more character classes"
    )


def _insert_drawn(
    host: Host, connection: Connection | DriverConnection, drawn: dict[str, Any]
) -> str | None:
    """The code drawn beforehand (``drawn``: its row but ``issued_at``), inserted if it is
    free and its settings still in force; else None, and nothing was written."""
    row = {**drawn, "issued_at": host.now()}
    statement = _driver_insert_if_current(connection.dialect.name)
    return _drawn_code(drawn) if statement.first(connection, row) is not None else None


@lru_cache(maxsize=1024)
def _email_key(email: str) -> str:
    """The matching key of an address (normalisation and IDNA cost tens of microseconds;
    the draft's address was normalised by the host, the key is cached per process)."""
    return email_key_or_blank(email)


def acknowledgment_mail(host: Host, dossier: Dossier, code: str | None) -> MailMessage:
    """The acknowledgment: démarche, date and number restated; the grouped tracking code
    and the lookup page, or (``code`` None, an account's dossier) the dossier's page."""
    shown_at = translate(moment(host, dossier.deposited_at or host.now()), dossier.locale)
    filled = {
        "demarche_title": dossier.demarche_title,
        "deposited_at": shown_at,
        "dossier_number": str(dossier.id),
        "dossier_url": host.absolute_url(host.dossier_url(dossier.id)),
    }
    context: dict[str, str | None] = {"lookup_url": host.absolute_url(LOOKUP_PATH)}
    if code:
        filled["tracking_code"] = format_tracking_code(code)
    else:
        context["tracking_code"] = None  # the account's version of the mail
    mail = ACKNOWLEDGMENT_MAIL
    return render_filled_mail(host, dossier.email, mail, context, filled, dossier.locale)


@dataclass(frozen=True)
class _Prepared:
    """A candidate code's row as it will be inserted (``drawn``: all but ``issued_at``, the
    deposit's own time, with the ``settings_token`` it was drawn under; None for an
    account's dossier, which gets no code) and its rendered mail; what they were made
    from, and the UTC span of the minute the mail shows (``shown_from`` included,
    ``shown_until`` not)."""

    made_for: tuple[object, ...]
    shown_from: datetime
    shown_until: datetime
    drawn: dict[str, Any] | None
    mail: MailMessage

    @property
    def code(self) -> str | None:
        return _drawn_code(self.drawn)


def _drawn_code(drawn: dict[str, Any] | None) -> str | None:
    return str(drawn["code"]) if drawn is not None else None


_prepared: dict[tuple[int, int], _Prepared] = {}
_prepared_lock = threading.Lock()


def _made_for(host: Host, dossier: Dossier) -> tuple[object, ...]:
    """What the prepared mail and row depend on, the deposit time aside (see
    :func:`_shown_minute`); checked again inside the transaction."""
    url = host.absolute_url(LOOKUP_PATH)
    return (dossier.email, dossier.demarche_title, dossier.locale, dossier.account_id, url)


def _shown_minute(host: Host, at: datetime) -> tuple[datetime, datetime]:
    """The UTC span of the minute the mail shows for a deposit at ``at``: inside the
    transaction, a deposit time within it reads the same (two comparisons instead of a
    time-zone conversion)."""
    start = moment(host, at).minute().astimezone(UTC)
    return start, start + _MINUTE


_MINUTE = timedelta(minutes=1)


def prepare(host: Host, dossier: Dossier) -> None:
    """What ``opencrm_deposit_prepare`` does, outside any transaction: draw a candidate code
    under the settings this process loaded last and render its acknowledgment mail. Before
    this process has loaded the settings once, nothing is prepared (an account's dossier,
    which gets no code, needs no settings). The hand-over stays within the request: the
    host deposits right after."""
    drawn: dict[str, Any] | None = None
    if dossier.account_id is None:
        latest = latest_version(host.engine)
        if latest is None:
            return
        token, settings = latest
        policy = CodePolicy.from_settings(settings)
        drawn = _code_row(host, dossier, policy)  # the address normalised here, not inside
        drawn["code"], drawn["settings_token"] = _candidate(host, settings, policy), token
    at = dossier.deposited_at or host.now()
    shown_from, shown_until = _shown_minute(host, at)
    mail = acknowledgment_mail(host, dossier, _drawn_code(drawn))
    prepared = _Prepared(_made_for(host, dossier), shown_from, shown_until, drawn, mail)
    with _prepared_lock:
        while len(_prepared) >= MAX_PREPARED:  # preparations whose deposit never came
            _prepared.pop(next(iter(_prepared)))
        _prepared[id(host), dossier.id] = prepared


def _take_prepared(host: Host, dossier: Dossier) -> _Prepared | None:
    """This dossier's preparation, if the dossier is still what it was made for."""
    with _prepared_lock:
        prepared = _prepared.pop((id(host), dossier.id), None)
    if prepared is None:
        return None
    at = utc(dossier.deposited_at or host.now())
    if not prepared.shown_from <= at < prepared.shown_until:
        return None
    return prepared if prepared.made_for == _made_for(host, dossier) else None


def deposit(host: Host, session: Session, dossier: Dossier) -> str | None:
    """What ``opencrm_deposit`` does: the code (none for an account's dossier), then the
    acknowledgment mail."""
    code: str | None = None
    connection = connection_of(session)
    prepared = _take_prepared(host, dossier)
    if dossier.account_id is None:
        if prepared is not None and prepared.drawn is not None:
            code = _insert_drawn(host, connection, prepared.drawn)
        if code is None:  # not prepared, its code taken meanwhile, or the settings moved
            settings = load_settings(connection)
            policy = CodePolicy.from_settings(settings)
            code = _insert_code(host, connection, dossier, settings, policy, None)
    if prepared is not None and code == prepared.code:
        mail = prepared.mail
    else:
        mail = acknowledgment_mail(host, dossier, code)
    count(connection, host.now(), deposits=1)
    host.queue_mail(session, mail)
    return code
