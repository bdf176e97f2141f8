"""Finding a deposited dossier again: email + tracking code -> a validation code by mail.

Enumeration resistance: whatever the email and code match (nothing, another dossier's
code, the right pair) and whether or not a limit was reached, the citizen gets the same
page, the database the same statements and the CPU the same work (the validation mail is
filled from its skeleton on both paths). A lookup that matches nothing issues a *decoy*
challenge, which the validation page treats exactly like a real one (attempts, backoff,
lock), and records an audit event where a real lookup queues its mail.

Failure guards: a real challenge counts its wrong codes against the dossier's guard; a decoy
against the guard of the pair (typed email, typed tracking code). A stranger who knows only
the email can therefore put nothing into the state a right tracking code would meet: the
guard of a pair is touched only by lookups of that very pair.

Limits: every lookup counts against its client address. A miss counts against the typed
email (how a stranger guesses tracking codes); a match only against its dossier's hourly
mail cap, which only someone holding the email *and* the tracking code can spend. Both
paths count three keys in one statement, so they write the same rows.

A guard has one live challenge at most: issuing a new code replaces it in place (one
upsert on a partial unique index over live rows), so wrong lookups never pile up rows that
a later lookup would have to scan.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any, cast

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from opencrm_horscompte.base.db import (
    DriverConnection,
    DriverStatement,
    connection_of,
    driver_connection,
    upsert_insert,
    writer,
)
from opencrm_horscompte.base.emails import InvalidEmail, email_key, normalize_email
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.i18n import N_, Message
from opencrm_horscompte.base.limits import (
    LOOKUP_CLIENT,
    LOOKUP_DOSSIER_MAILS,
    LOOKUP_EMAIL,
    LOOKUP_EMAIL_MATCHED,
    REPEAT_WINDOW,
    counted_keyed,
    keyed_events,
)
from opencrm_horscompte.base.mail_skeleton import render_filled_mail
from opencrm_horscompte.base.models import Challenge, TrackingCode
from opencrm_horscompte.base.paths import LOOKUP_PATH
from opencrm_horscompte.base.throttle import Limit, hmac_sha256_hex, throttle_key
from opencrm_horscompte.hookspecs.host import ConnectionMailHost, Host, MailMessage, MailTemplate
from opencrm_horscompte.settings.mail_templates import DEFAULT_VALIDATION_TEMPLATE
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.store import (
    VERSION_ID,
    VERSION_TABLE,
    load_settings,
    settings_under,
)
from opencrm_horscompte.stats.counters import count
from opencrm_horscompte.tracking.codes import (
    SPECIAL,
    CodePolicy,
    could_be_tracking_code,
    generate_validation_code,
    normalize_tracking_code,
    strip_separators,
)

log = logging.getLogger(__name__)

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


def pair_guard(host: Host, key: str, typed_code: str) -> str:
    """The guard of a lookup of (email key ``key``, tracking code as typed), the same
    whether it matches a dossier or not: separators aside and letters in capitals.

    A code policy only ever folds case (see :func:`normalize_tracking_code`), so every
    typing that finds a dossier lands on that dossier's one guard. A miss folds the same
    way whatever the policies in force, so two typings share a guard, or not, alike for a
    real dossier and a decoy: replies can't tell them apart (a "replaced" on the first
    page's code after a second lookup in another case)."""
    return guard_key(host, f"pair:{key}\0{strip_separators(typed_code).upper()}")


def dossier_guard(host: Host, dossier_id: int) -> str:
    """The guard a real dossier had in 0.2, keyed by the dossier (a miss then folded the
    typed code differently from a match). The agent page still reads and unlocks it, for
    the failures counted before the upgrade."""
    return guard_key(host, f"dossier:{dossier_id}")


def code_hmac(key: bytes, guard: str, code: str) -> str:
    return hmac_sha256_hex(key, f"{guard}\0{code}".encode())


def _matching(rows: Sequence[Any], typed: str) -> Any:
    """The row whose code ``typed`` is, comparing every candidate in constant time."""
    found = None
    for row in rows:
        normalized = normalize_tracking_code(typed, _policy(row.policy_json))
        if hmac.compare_digest(normalized.encode(), row.code.encode()):
            found = row
    return found


@lru_cache(maxsize=64)
def _policy(policy_json: str) -> CodePolicy:
    """A stored code's policy, parsed once per process (dossiers share a few policies)."""
    return CodePolicy(**json.loads(policy_json))


def validation_template(
    host: Host, settings: Settings, hooks: PluginHooks | None = None
) -> MailTemplate:
    """The template chosen in the settings: its key's first contribution (as
    ``available_templates`` lists them), or the default when no plugin offers it now."""
    chosen = settings.validation_mail_template
    for template in (hooks or PluginHooks(host)).mail_templates():
        if template.key == chosen:
            return template
    return DEFAULT_VALIDATION_TEMPLATE


_CODES = TrackingCode.__table__
_CHALLENGES = Challenge.__table__
_STAMP = _CHALLENGES.c.created_at.type

# Prebuilt Core statements (compiled once, cached): a lookup's hot path.
_TARGET_COLUMNS = (
    _CODES.c.dossier_id,
    _CODES.c.code,
    _CODES.c.policy_json,
    _CODES.c.email,
    _CODES.c.demarche_title,
    _CODES.c.locale,
)
_EMAIL_KEY = bindparam("email_key", type_=_CODES.c.email_key.type)
_CANDIDATES = DriverStatement(select(*_TARGET_COLUMNS).where(_CODES.c.email_key == _EMAIL_KEY))
# The settings version and the candidates in one statement: the version row, joined to
# every tracking code of the address (one row with no code when there is none).
_SETTINGS_AND_CANDIDATES = DriverStatement(
    select(VERSION_TABLE.c.token, *_TARGET_COLUMNS)
    .select_from(VERSION_TABLE.outerjoin(_CODES, _CODES.c.email_key == _EMAIL_KEY))
    .where(VERSION_TABLE.c.id == VERSION_ID)
)
_TARGET_OF_DOSSIER = DriverStatement(
    select(*_TARGET_COLUMNS).where(
        _CODES.c.dossier_id == bindparam("dossier_id", type_=_CODES.c.dossier_id.type)
    )
)


@cache
def _issue_statement(dialect: str) -> DriverStatement:
    """Insert the guard's live challenge, or replace it in place under a fresh id (the old
    carrier then finds no row: "replaced"); returns the id. One statement, one index probe
    on the live rows, whatever piled up before. A live code younger than ``REPEAT_WINDOW``
    with no attempt taken is kept: then no row is returned (a repeated request)."""
    insert = upsert_insert(dialect, _CHALLENGES).values(
        dossier_id=bindparam("dossier_id", type_=_CHALLENGES.c.dossier_id.type),
        guard_key=bindparam("guard", type_=_CHALLENGES.c.guard_key.type),
        code_hmac=bindparam("code_hmac", type_=_CHALLENGES.c.code_hmac.type),
        created_at=bindparam("now", type_=_STAMP),
        expires_at=bindparam("expires_at", type_=_STAMP),
        attempts=0,
    )
    upsert = insert.on_conflict_do_update(
        index_elements=[_CHALLENGES.c.guard_key],
        index_where=_CHALLENGES.c.consumed_at.is_(None),
        set_={
            "id": _fresh_id(dialect, insert),
            "dossier_id": insert.excluded.dossier_id,
            "code_hmac": insert.excluded.code_hmac,
            "created_at": insert.excluded.created_at,
            "expires_at": insert.excluded.expires_at,
            "attempts": 0,
        },
        where=(_CHALLENGES.c.created_at <= bindparam("repeat_before", type_=_STAMP))
        | (_CHALLENGES.c.attempts > 0),
    )
    return DriverStatement(upsert.returning(_CHALLENGES.c.id))


_LIVE_CHALLENGE = DriverStatement(
    select(_CHALLENGES.c.id).where(
        _CHALLENGES.c.guard_key == bindparam("guard", type_=_CHALLENGES.c.guard_key.type),
        _CHALLENGES.c.consumed_at.is_(None),
    )
)


@dataclass(frozen=True)
class Issued:
    """The challenge a lookup or a resend leads to; ``repeated``: the guard's live code,
    kept (a request repeated within ``REPEAT_WINDOW``), nothing mailed."""

    challenge_id: int
    repeated: bool = False


def _fresh_id(dialect: str, insert: Any) -> Any:
    """The id a replaced challenge takes. PostgreSQL: the one the sequence gave the row
    proposed for insertion, so a replacement draws one id, as an insertion does (the id
    travels in the page's token). SQLite: the write lock is held, and the rowids above the
    current maximum are free."""
    if dialect == "postgresql":
        return insert.excluded.id
    return select(func.max(_CHALLENGES.c.id) + 1).scalar_subquery()


@dataclass(frozen=True)
class PreparedCode:
    """A validation code made, hashed and its mail rendered *before* the write transaction
    (nothing slow under the write lock). ``target`` is None for a decoy, whose mail is
    rendered all the same (equal CPU work) and never queued."""

    guard: str
    dossier_id: int | None
    code_hmac: str
    mail: MailMessage
    expiry: timedelta


def prepare_code(
    host: Host,
    settings: Settings,
    target: Any,
    guard: str,
    decoy_to: str,
    locale: str,
    hooks: PluginHooks | None = None,
) -> PreparedCode:
    """The code, its hash and its mail, for ``target`` (None: a decoy's, to ``decoy_to``).
    ``hooks``: the caller's, if it holds them (one ``host.hook`` read per request)."""
    hooks = hooks or PluginHooks(host)
    code = generate_validation_code(settings.validation_code_length)
    context = {
        "expiry_minutes": settings.validation_code_expiry_minutes,
        "lookup_url": host.absolute_url(LOOKUP_PATH),
    }
    # a decoy's mail is filled as a match's is (same skeleton work), never queued
    title = target.demarche_title if target is not None else ""
    filled = {"code": code, "demarche_title": title}
    to, mail_locale = (target.email, target.locale) if target is not None else (decoy_to, locale)
    return PreparedCode(
        guard=guard,
        dossier_id=target.dossier_id if target is not None else None,
        code_hmac=code_hmac(host.secret_keys[-1], guard, code),
        mail=_validation_mail(host, settings, hooks, to, context, filled, mail_locale),
        expiry=timedelta(minutes=settings.validation_code_expiry_minutes),
    )


def _validation_mail(
    host: Host,
    settings: Settings,
    hooks: PluginHooks,
    to: str,
    context: dict[str, Any],
    filled: dict[str, str],
    locale: str,
) -> MailMessage:
    """The chosen template's mail; the default template's, with an error in the log, when
    another plugin's template (or its hook) fails: a broken extension must not take every
    lookup down with it."""
    try:
        template = validation_template(host, settings, hooks)
        return render_filled_mail(host, to, template, context, filled, locale, hooks)
    except Exception:
        if settings.validation_mail_template == DEFAULT_VALIDATION_TEMPLATE.key:
            raise
        log.exception(
            "validation mail template %r failed; the default template was used instead",
            settings.validation_mail_template,
        )
    template = DEFAULT_VALIDATION_TEMPLATE
    return render_filled_mail(host, to, template, context, filled, locale, hooks)


def issue_code(
    host: Host,
    session: Session | DriverConnection,
    prepared: PreparedCode,
    now: datetime,
    *,
    mail: bool,
    hooks: PluginHooks | None = None,
) -> Issued:
    """Store ``prepared`` as its guard's live challenge (replacing the older one), then
    queue its mail when ``mail`` (a real target within its limits), else write the audit
    record that stands where the mail would. Two statements either way. A live code of the
    guard younger than ``REPEAT_WINDOW``, not yet tried, is kept instead: its id is read,
    and nothing is mailed or written (the same for a dossier and a decoy).
    ``session``: an ORM session, or a driver connection where
    ``PluginHooks.driver_level_writes`` allows it (the mail then goes through the host's
    ``queue_mail_on_connection``; ``hooks``: the ones that allowed it)."""
    connection = connection_of(session)
    expires_at = now + prepared.expiry
    params = {
        "dossier_id": prepared.dossier_id,
        "guard": prepared.guard,
        "code_hmac": prepared.code_hmac,
        "now": now,
        "expires_at": expires_at,
    }
    params["repeat_before"] = now - REPEAT_WINDOW
    issued = _issue_statement(connection.dialect.name).first(connection, params)
    if issued is None:  # a double click, the form sent twice: the code on its way stays
        kept = _LIVE_CHALLENGE.first(connection, {"guard": prepared.guard})
        return Issued(int(kept[0]), repeated=True)
    challenge_id = int(issued[0])
    if mail and prepared.dossier_id is not None:
        # useless once the code expires, and replaced by the next code of the same guard
        rendered = prepared.mail
        message = MailMessage(
            rendered.to,
            rendered.subject,
            rendered.text,
            rendered.html,
            useless_after=expires_at,
            replaces=f"horscompte.code:{prepared.guard}",
        )
        if isinstance(session, DriverConnection):
            cast(ConnectionMailHost, host).queue_mail_on_connection(session, message)
        else:
            host.queue_mail(session, message)
    else:
        (hooks or PluginHooks(host)).audit(session, LOOKUP_MISS, {"challenge": challenge_id})
    return Issued(challenge_id)


def read_target(connection: Connection, dossier_id: int | None) -> Any:
    if dossier_id is None:
        return None
    return _TARGET_OF_DOSSIER.first(connection, {"dossier_id": dossier_id})


def read_settings_and_candidates(
    connection: Connection | DriverConnection, key: str
) -> tuple[Settings, list[Any]]:
    """The settings in force and the tracking codes of email key ``key``: one statement
    (more when the settings changed since this process parsed them, or on a database that
    lost its settings version row). Leaves ``connection`` outside any transaction."""
    rows = _SETTINGS_AND_CANDIDATES.all(connection, {"email_key": key})
    if rows:
        settings = settings_under(connection, rows[0].token)
        candidates = [row for row in rows if row.dossier_id is not None]
    else:
        settings = load_settings(connection)
        candidates = _CANDIDATES.all(connection, {"email_key": key})
    _end_read(connection)
    return settings, candidates


def _end_read(connection: Connection | DriverConnection) -> None:
    """Commit the transaction the driver began implicitly for the read (PostgreSQL). Every
    statement of the read runs at driver level, so a SQLAlchemy ``Connection`` never sees
    it: it is looked for on the DBAPI connection either way."""
    if isinstance(connection, Connection):
        connection = DriverConnection(connection.engine, connection.connection)
    if connection.in_transaction():
        connection.commit()


@dataclass(frozen=True)
class Started:
    challenge_id: int
    expiry_minutes: int
    code_length: int


def start_lookup(host: Host, typed: LookupInput, client: str, locale: str) -> Started:
    """Find the dossier, count the attempt and issue its code (or a decoy's).

    Five statements whatever matched, on one pooled connection: the settings version and
    the candidates (one read, before the write lock), then the rate-limit counters, the
    daily statistics, the challenge and the mail or audit record (one short write
    transaction). The code is drawn, hashed and its mail filled between the two.

    At driver level (no SQLAlchemy ``Connection`` or ORM session) when the host and every
    audit sink allow it (``PluginHooks.driver_level_writes``), else through a session that
    the host's ``queue_mail`` and the audit sinks receive: the same statements either way.
    """
    key = email_key(typed.email)
    hooks = PluginHooks(host)  # the plugins enabled now, for the choice and the audits
    if hooks.driver_level_writes():
        with driver_connection(host.engine) as driver:
            read = read_settings_and_candidates(driver, key)
            plan = _plan(host, hooks, typed, key, client, locale, *read)
            with driver.transaction():
                challenge_id = _write(host, hooks, plan, driver, driver)
    else:
        with writer(host.engine).connect() as connection:
            # read outside any transaction (SQLite: no write lock yet); BEGIN comes below
            read = read_settings_and_candidates(connection, key)
            plan = _plan(host, hooks, typed, key, client, locale, *read)
            # The session's own bookkeeping is done here, outside the write lock; it joins
            # the connection's transaction when the mail is queued (or the miss audited).
            session = Session(bind=connection)
            session.begin()
            with connection.begin():
                challenge_id = _write(host, hooks, plan, session, connection)
    settings = plan.settings
    return Started(
        challenge_id, settings.validation_code_expiry_minutes, settings.validation_code_length
    )


@dataclass(frozen=True)
class _Plan:
    """What a lookup will write, worked out before the write transaction."""

    settings: Settings
    matched: bool
    keyed: Sequence[tuple[str, Limit]]
    prepared: PreparedCode


def _plan(
    host: Host,
    hooks: PluginHooks,
    typed: LookupInput,
    key: str,
    client: str,
    locale: str,
    settings: Settings,
    candidates: Sequence[Any],
) -> _Plan:
    """``key``: the typed email's key, which ``candidates`` were read under."""
    target = _matching(candidates, typed.tracking_code)
    guard = pair_guard(host, key, typed.tracking_code)
    limits: list[tuple[Limit, str]] = [(LOOKUP_CLIENT, client)]
    limits.append((LOOKUP_EMAIL_MATCHED if target is not None else LOOKUP_EMAIL, key))
    limits.append((LOOKUP_DOSSIER_MAILS, guard))
    prepared = prepare_code(host, settings, target, guard, typed.email, locale, hooks)
    return _Plan(settings, target is not None, keyed_events(host, limits), prepared)


def _write(
    host: Host,
    hooks: PluginHooks,
    plan: _Plan,
    session: Session | DriverConnection,
    connection: Connection | DriverConnection,
) -> int:
    """The write transaction's statements, on ``connection`` (in its transaction); mail
    and audit records through ``session``. The challenge id."""
    now = host.now()  # read under the write lock (SQLite), not before it
    allowed = counted_keyed(host, session, plan.keyed, now, connection=connection, hooks=hooks)
    issued = issue_code(host, session, plan.prepared, now, mail=allowed, hooks=hooks)
    sent = plan.matched and allowed and not issued.repeated
    count(connection, now, lookups=1, codes_sent=int(sent))  # one statement either way
    return issued.challenge_id
