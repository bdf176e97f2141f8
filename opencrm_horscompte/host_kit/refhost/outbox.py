"""The reference host's durable mail outbox: a table, transports, and a delivery worker.

Mails are queued inside the caller's transaction (:func:`queue_mail`), so a mail exists if
and only if the business change that produced it was committed. A worker
(:class:`OutboxWorker`) then calls :func:`deliver_due`, which:

1. drops the mails that can no longer serve (past their ``useless_after``, e.g. a validation
   code that expired), recording why: they are never delivered late;
2. claims a *small* batch of due rows in one short transaction, giving them a claim token and
   a *short* lease (:data:`CLAIM_LEASE`; on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED``,
   so concurrent workers in any number of processes never claim the same row); a worker that
   dies holds its mails for one lease at most;
3. before each send, renews the lease of the rows it still holds (a row dropped or replaced
   meanwhile is no longer held, and is skipped), then sends outside any transaction, with an
   overall deadline (:data:`SEND_DEADLINE`) shorter than the lease, so a send never outlives
   its claim and a trickling server cannot hold the worker;
4. records each result in its own short transaction, retried for a few seconds (a
   PostgreSQL backend killed under it is replaced by the pool, a restarted server is
   back): ``sent_at``; or, for a temporary failure (4xx, connection refused, timeout),
   ``attempts + 1``, the error and a backoff capped at :data:`MAX_RETRY_DELAY`; or, for a
   permanent one (5xx, invalid address), the dead-letter state ``dead_at`` with its reason,
   which an admin may retry (:func:`retry_now`).

If a result still can't be recorded, the batch stops there and the rest is handed back
(made due again, or due when their lease ends if the database is still gone). Delivery is
at-least-once: a mail sent but not recorded (database gone, worker killed) goes again after
the lease, with the same ``Message-ID``: at most one duplicate per such fault.

A queued mail may carry a key (``MailMessage.replaces``): a newer mail with the same key
makes the older unsent ones useless, and the worker drops them (a resent validation code
kills the older code).

All datetimes are timezone-aware UTC. SQLite stores them without an offset; the column
type ``opencrm_horscompte.base.db.UTCDateTime`` converts to UTC on write and re-attaches
UTC on read.
"""

import contextlib
import logging
import mailbox
import secrets
import smtplib
import socket
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

from sqlalchemy import Column, String, Table, Text, and_, bindparam, case, func, insert, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Field, Session, SQLModel, col, select

from opencrm_horscompte.base.db import (
    DriverConnection,
    DriverStatement,
    connection_of,
    timestamp_column,
    writer,
)
from opencrm_horscompte.hookspecs.host import HEADER_FORBIDDEN, MailMessage

logger = logging.getLogger(__name__)

FIRST_RETRY_DELAY = timedelta(seconds=30)
MAX_RETRY_DELAY = timedelta(minutes=5)
CLAIM_LEASE = timedelta(seconds=30)
SEND_DEADLINE = 20.0
"""Seconds one whole send may take (connect, greeting, every command, DATA, QUIT)."""
BATCH_SIZE = 5
MAX_ERROR_LENGTH = 500
# 7.5 s in all: the lease, renewed before the send, outlasts the send's deadline by 10 s.
_RECORD_RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0)
# Stop starting new sends once this much real time has passed since the claim (the lease is
# renewed before each send, so this only bounds how long one batch keeps the worker).
_BATCH_TIME_BUDGET_SECONDS = 120.0

REPLACED = "remplacé par un courriel plus récent"
USELESS = "n'est plus utile (son contenu a expiré)"


# --------------------------------------------------------------------------- table


class OutboxMail(SQLModel, table=True):
    """One queued mail. Exactly one state: pending (none of ``sent_at``, ``dead_at``,
    ``dropped_at``; ``last_error`` set while it fails and is retried), sent, dead (a
    permanent failure: ``last_error`` is the reason) or dropped (useless or replaced:
    ``last_error`` says which)."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "host_mail_outbox"

    id: int | None = Field(default=None, primary_key=True)
    recipient: str = Field(sa_column=Column(Text, nullable=False))
    subject: str = Field(sa_column=Column(Text, nullable=False))
    text: str = Field(sa_column=Column(Text, nullable=False))
    html: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=timestamp_column())
    next_attempt_at: datetime = Field(sa_column=timestamp_column(index=True))
    attempts: int = Field(default=0, nullable=False)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    sent_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    claim_token: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    dead_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    dropped_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    useless_after: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    replaces: str | None = Field(
        default=None, sa_column=Column(String(200), nullable=True, index=True)
    )


def as_utc(moment: datetime) -> datetime:
    """``moment`` converted to UTC; naive datetimes are refused (their zone is unknown)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("the outbox needs timezone-aware datetimes")
    return moment.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


_OUTBOX = OutboxMail.__table__
_PENDING = and_(
    _OUTBOX.c.sent_at.is_(None), _OUTBOX.c.dead_at.is_(None), _OUTBOX.c.dropped_at.is_(None)
)
_QUEUE = DriverStatement(
    insert(_OUTBOX)
    .values(
        recipient=bindparam("recipient", type_=_OUTBOX.c.recipient.type),
        subject=bindparam("subject", type_=_OUTBOX.c.subject.type),
        text=bindparam("text", type_=_OUTBOX.c.text.type),
        html=bindparam("html", type_=_OUTBOX.c.html.type),
        created_at=bindparam("now", type_=_OUTBOX.c.created_at.type),
        next_attempt_at=bindparam("now", type_=_OUTBOX.c.next_attempt_at.type),
        useless_after=bindparam("useless_after", type_=_OUTBOX.c.useless_after.type),
        replaces=bindparam("replaces", type_=_OUTBOX.c.replaces.type),
        attempts=0,
    )
    .returning(_OUTBOX.c.id)
)


def queue_mail(session: OrmSession | DriverConnection, message: MailMessage, now: datetime) -> int:
    """Add ``message`` to the outbox in ``session``'s transaction, or a driver connection's
    (the caller commits); returns its id. One ``INSERT`` at driver speed: deposits and
    lookups queue mail on their hot path (the mails it replaces are dropped by the worker,
    not here, so queuing costs the same statements whatever it replaces)."""
    useless_after = getattr(message, "useless_after", None)
    values = {
        "recipient": message.to,
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "now": as_utc(now),
        "useless_after": as_utc(useless_after) if useless_after else None,
        "replaces": getattr(message, "replaces", None),
    }
    return int(_QUEUE.first(connection_of(session), values)[0])


# --------------------------------------------------------------------------- transports


class Transport(Protocol):
    """Delivers one message or raises; the outbox records the exception as the error
    (:func:`is_permanent` tells a permanent failure from a temporary one)."""

    def send(self, message: EmailMessage) -> None: ...


class MaildirTransport:
    """Drops each message into a Maildir folder (created if missing): the default, for demos."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        for folder in (self.path, self.path / "tmp", self.path / "new", self.path / "cur"):
            folder.mkdir(parents=True, exist_ok=True)
        self._maildir = mailbox.Maildir(self.path, create=False)

    def send(self, message: EmailMessage) -> None:
        self._maildir.add(message)

    def __repr__(self) -> str:
        return f"MaildirTransport({str(self.path)!r})"


class SendDeadlineExceeded(TimeoutError):
    """The whole send took longer than the transport's ``deadline`` (a temporary failure)."""


class _DeadlineSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` whose socket a watchdog can shut down at any moment."""

    def __init__(self, timeout: float) -> None:
        self._lock = threading.Lock()
        self._aborted = False
        super().__init__(timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        with self._lock:
            if self._aborted:
                sock.close()
                raise SendDeadlineExceeded("send deadline exceeded while connecting")
            self.sock = sock
        return sock

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class SmtpTransport:
    """Sends each message over a new plain SMTP connection (a local relay, typically).

    ``timeout`` bounds each socket operation; ``deadline`` bounds the whole send: a watchdog
    shuts the connection down when it passes, whatever the server is doing (hanging,
    trickling its replies one byte at a time)."""

    def __init__(
        self, host: str, port: int, timeout: float = 10, deadline: float = SEND_DEADLINE
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.deadline = deadline

    def send(self, message: EmailMessage) -> None:
        started = time.monotonic()
        smtp = _DeadlineSMTP(timeout=min(self.timeout, self.deadline))
        watchdog = threading.Timer(self.deadline, smtp.abort)
        watchdog.daemon = True
        watchdog.start()
        try:
            smtp.connect(self.host, self.port)
            refused = smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as error:
            out_of_time = smtp._aborted or time.monotonic() - started >= self.deadline
            if out_of_time and not isinstance(error, smtplib.SMTPResponseException):
                raise SendDeadlineExceeded(
                    f"send deadline of {self.deadline:g} s exceeded ({type(error).__name__})"
                ) from error
            raise
        finally:
            watchdog.cancel()
            _quiet_close(smtp)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)

    def __repr__(self) -> str:
        return (
            f"SmtpTransport({self.host!r}, {self.port!r}, timeout={self.timeout!r}, "
            f"deadline={self.deadline!r})"
        )


def _quiet_close(smtp: smtplib.SMTP) -> None:
    """QUIT politely when the connection still works (the mail is already accepted)."""
    try:
        if smtp.sock is not None and not getattr(smtp, "_aborted", False):
            smtp.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        smtp.close()


def transport_from_url(url: str | None, maildir: Path) -> Transport:
    """``smtp://host:port`` -> :class:`SmtpTransport`; nothing -> :class:`MaildirTransport`.

    ``maildir:///some/path`` picks another Maildir folder. Other schemes, credentials and
    missing hosts raise :class:`ValueError`.
    """
    if not url:
        return MaildirTransport(maildir)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "maildir":
        return MaildirTransport(Path(parts.path) if parts.path else maildir)
    if scheme != "smtp":
        raise ValueError(f"unsupported mail URL scheme {parts.scheme!r}: use smtp://host:port")
    if parts.username or parts.password:
        raise ValueError("smtp:// URLs with credentials are not supported")
    try:
        port = parts.port or 25
    except ValueError as error:
        raise ValueError(f"invalid port in mail URL {url!r}") from error
    if not parts.hostname:
        raise ValueError(f"mail URL {url!r} has no host")
    return SmtpTransport(parts.hostname, port)


# --------------------------------------------------------------------------- messages


class InvalidMail(ValueError):
    """The row can't become a valid message (bad header, invalid address): permanent."""


def _check_header(name: str, value: str) -> str:
    if any(char in value for char in HEADER_FORBIDDEN):
        raise InvalidMail(f"mail header {name!r} contains CR, LF or NUL")
    return value


def _check_address(value: str) -> str:
    address = parseaddr(value)[1]
    local, at, domain = address.rpartition("@")
    if not (at and local and domain) or any(char.isspace() for char in address):
        raise InvalidMail(f"invalid recipient address {value!r}")
    return value


def _set_header(message: EmailMessage, name: str, value: str) -> None:
    """Set header ``name``, then check what the email package made of it: it decodes RFC
    2047 encoded-words (``=?utf-8?b?...?=``) even where they are not allowed, so a value
    clean as typed can still read as a control character."""
    _check_header(name, value)
    try:
        message[name] = value
        decoded = str(message[name])
    except (ValueError, TypeError, IndexError) as error:  # what the header parser raises
        raise InvalidMail(f"mail header {name!r} can't be parsed: {error}") from error
    if any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in decoded):
        raise InvalidMail(f"mail header {name!r} decodes to a control character")


def _check_one_recipient(message: EmailMessage, recipient: str) -> None:
    """``To:`` as the email package reads it holds ``recipient`` alone (an encoded-word
    could have made it two)."""
    read = [address.addr_spec for address in getattr(message["To"], "addresses", ())]
    if read != [parseaddr(recipient)[1]]:
        raise InvalidMail(f"mail header 'To' does not read as the one address {recipient!r}")


def _message_id(row: OutboxMail, sender: str) -> str:
    """Stable per row, so a resend after a crash carries the same Message-ID."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    stamp = int(row.created_at.timestamp() * 1_000_000)
    return f"<outbox.{row.id}.{stamp}@{domain}>"


def build_email(row: OutboxMail, sender: str) -> EmailMessage:
    """The MIME message for ``row``: UTF-8 text, plus an HTML alternative when present."""
    message = EmailMessage()
    _set_header(message, "From", sender)
    _set_header(message, "To", _check_address(row.recipient))
    _check_one_recipient(message, row.recipient)
    _set_header(message, "Subject", row.subject)
    message["Date"] = format_datetime(as_utc(row.created_at))
    message["Message-ID"] = _message_id(row, sender)
    message.set_content(row.text, charset="utf-8", cte="quoted-printable")
    if row.html is not None:
        message.add_alternative(row.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message


def is_permanent(error: BaseException) -> bool:
    """A failure that retrying can't fix: an SMTP 5xx reply (for every recipient), or a
    message that can't be built (invalid address, bad header)."""
    if isinstance(error, InvalidMail):
        return True
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        return bool(codes) and all(500 <= code < 600 for code in codes)
    if isinstance(error, smtplib.SMTPResponseException):
        return 500 <= error.smtp_code < 600
    return False


# --------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class DeliveryReport:
    """What one :func:`deliver_due` call did: ``failed`` counts temporary failures (to be
    retried), ``dead`` permanent ones, ``dropped`` mails that could no longer serve."""

    sent: int = 0
    failed: int = 0
    dead: int = 0
    dropped: int = 0


def retry_delay(attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` failures: 30 s, 60 s, ... capped at
    :data:`MAX_RETRY_DELAY` (5 min: after an outage, mail goes out minutes later, not an
    hour later)."""
    doublings = min(max(attempts - 1, 0), 16)
    return min(FIRST_RETRY_DELAY * int(2**doublings), MAX_RETRY_DELAY)


def format_error(error: BaseException) -> str:
    """One line, at most :data:`MAX_ERROR_LENGTH` characters, for ``last_error``."""
    line = " ".join(f"{type(error).__name__}: {error}".split())
    if len(line) <= MAX_ERROR_LENGTH:
        return line
    return line[: MAX_ERROR_LENGTH - 1] + "…"


def _drop_unneeded(engine: Engine, now: datetime, token: str | None = None) -> int:
    """Drop the pending mails that can no longer serve: past their ``useless_after``, or
    replaced by a newer mail with the same ``replaces`` key. Only mails nobody is sending:
    unclaimed, with an ended lease, or claimed by ``token`` (the caller's own batch)."""
    newer = _OUTBOX.alias("newer")
    replaced = (
        select(newer.c.id)
        .where(newer.c.replaces == _OUTBOX.c.replaces, newer.c.id > _OUTBOX.c.id)
        .exists()
    )
    free = or_(_OUTBOX.c.claim_token.is_(None), _OUTBOX.c.next_attempt_at <= now)
    if token is not None:
        free = or_(free, _OUTBOX.c.claim_token == token)
    dropped = 0
    with writer(engine).begin() as connection:
        for condition, reason in (
            (_OUTBOX.c.useless_after <= now, USELESS),
            (and_(_OUTBOX.c.replaces.is_not(None), replaced), REPLACED),
        ):
            statement = (
                update(_OUTBOX)
                .where(_PENDING, free, condition)
                .values(dropped_at=now, last_error=reason, claim_token=None)
                .returning(_OUTBOX.c.id)
            )
            for (row_id,) in connection.execute(statement):
                logger.info("outbox mail %s dropped: %s", row_id, reason)
                dropped += 1
    return dropped


def _claim_due(engine: Engine, now: datetime, limit: int) -> tuple[str, list[OutboxMail]]:
    """Lock due pending rows, give them a claim token and a lease, and return them
    (detached) with the token."""
    due = (
        select(OutboxMail)
        .where(_PENDING, col(OutboxMail.next_attempt_at) <= now)
        .order_by(col(OutboxMail.next_attempt_at), col(OutboxMail.id))
        .limit(limit)
    )
    if engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    token = secrets.token_hex(16)
    with Session(writer(engine), expire_on_commit=False) as session, session.begin():
        rows = list(session.exec(due))
        for row in rows:
            row.next_attempt_at = now + CLAIM_LEASE
            row.claim_token = token
    return token, rows


def _still_held(engine: Engine, token: str, ids: Sequence[int], now: datetime) -> set[int]:
    """Renew the lease of the rows of ``ids`` this claim still holds; returns their ids."""
    statement = (
        update(_OUTBOX)
        .where(_OUTBOX.c.id.in_(ids), _OUTBOX.c.claim_token == token, _PENDING)
        .values(next_attempt_at=now + CLAIM_LEASE)
        .returning(_OUTBOX.c.id)
    )
    with writer(engine).begin() as connection:
        return {row_id for (row_id,) in connection.execute(statement)}


def _with_retries(action: Callable[[], None]) -> None:
    """Run a short recording transaction; again on a database error, after pauses that
    double (:data:`_RECORD_RETRY_PAUSES`: the pool replaces a killed backend, a restarted
    server is back within seconds). A sent mail whose result can't be recorded goes out
    again once its lease ends, and the rest of its batch waits for theirs."""
    for pause in _RECORD_RETRY_PAUSES:
        try:
            action()
            return
        except SQLAlchemyError as error:
            logger.warning(
                "outbox: recording failed, retrying in %s s: %s", pause, format_error(error)
            )
            time.sleep(pause)
    action()


def _record_sent(engine: Engine, row: OutboxMail, now: datetime) -> None:
    def record() -> None:
        with writer(engine).begin() as connection:
            connection.execute(
                update(_OUTBOX)
                .where(_OUTBOX.c.id == row.id)
                .values(sent_at=now, last_error=None, claim_token=None, dropped_at=None)
            )

    _with_retries(record)


def _record_failure(
    engine: Engine, row: OutboxMail, token: str, now: datetime, error: Exception
) -> bool:
    """Record a failed send; True when it was permanent (the mail is dead)."""
    permanent = is_permanent(error)
    values: dict[str, Any] = {
        "attempts": _OUTBOX.c.attempts + 1,
        "last_error": format_error(error),
        "claim_token": None,
    }
    if permanent:
        values["dead_at"] = now
    else:
        values["next_attempt_at"] = now + retry_delay(row.attempts + 1)

    def record() -> None:
        with writer(engine).begin() as connection:
            connection.execute(
                update(_OUTBOX)
                .where(_OUTBOX.c.id == row.id, _OUTBOX.c.claim_token == token, _PENDING)
                .values(**values)
            )

    _with_retries(record)
    return permanent


def _release(engine: Engine, token: str, rows: Sequence[OutboxMail], now: datetime) -> None:
    """Hand claimed but unsent rows back: due again at once (only while the claim is ours).
    Best effort: if the database is away, the rows come back when the lease ends."""
    if not rows:
        return
    try:
        with writer(engine).begin() as connection:
            connection.execute(
                update(_OUTBOX)
                .where(
                    _OUTBOX.c.id.in_([row.id for row in rows]),
                    _OUTBOX.c.claim_token == token,
                    _PENDING,
                )
                .values(next_attempt_at=now, claim_token=None)
            )
    except SQLAlchemyError as error:
        logger.warning(
            "outbox: %s claimed mail(s) not handed back (they return after the lease): %s",
            len(rows),
            format_error(error),
        )


def deliver_due(
    engine: Engine,
    transport: Transport,
    now: datetime,
    sender: str,
    limit: int = BATCH_SIZE,
    should_stop: Callable[[], bool] | None = None,
) -> DeliveryReport:
    """Send up to ``limit`` due mails (see the module doc); transport failures are recorded,
    never raised. ``should_stop`` is asked before each send: when it says yes (SIGTERM),
    the rest of the batch is handed back."""
    moment = as_utc(now)
    started = time.monotonic()

    # Leases and "useless after" follow the caller's clock moved on by the real time spent;
    # results are recorded at the round's ``now`` (retries are reckoned from there).
    def current() -> datetime:
        return moment + timedelta(seconds=time.monotonic() - started)

    dropped = _drop_unneeded(engine, moment)
    token, rows = _claim_due(engine, moment, limit)
    counts = {"sent": 0, "failed": 0, "dead": 0}
    for index, row in enumerate(rows):
        rest = rows[index:]
        stopping = should_stop is not None and should_stop()
        if stopping or time.monotonic() - started > _BATCH_TIME_BUDGET_SECONDS:
            _release(engine, token, rest, moment)
            break
        at = current()
        try:
            dropped += _drop_unneeded(engine, at, token)
            held = _still_held(engine, token, [r.id for r in rest if r.id is not None], at)
            if row.id not in held:
                continue  # dropped just now, or the lease was lost: another worker has it
            outcome = _send_one(engine, transport, row, token, moment, sender)
        except SQLAlchemyError as error:
            logger.warning(
                "outbox: database error, handing the rest of the batch back: %s",
                format_error(error),
            )
            _release(engine, token, rows[index + 1 :], moment)
            break
        counts[outcome] += 1
    return DeliveryReport(dropped=dropped, **counts)


def _send_one(
    engine: Engine, transport: Transport, row: OutboxMail, token: str, now: datetime, sender: str
) -> str:
    """Send ``row`` and record the outcome: ``sent``, ``failed`` or ``dead``. A database
    error while recording propagates (the caller hands the rest of the batch back)."""
    try:
        transport.send(build_email(row, sender))
    except Exception as error:
        permanent = is_permanent(error)
        logger.warning(
            "outbox mail %s not delivered (attempt %s, %s): %s",
            row.id,
            row.attempts + 1,
            "permanent" if permanent else "will retry",
            format_error(error),
        )
        return "dead" if _record_failure(engine, row, token, now, error) else "failed"
    _record_sent(engine, row, now)
    return "sent"


# --------------------------------------------------------------------------- admin


@dataclass(frozen=True)
class OutboxCounts:
    """The outbox by state, counted in the table: ``pending`` includes ``failing`` (pending
    mails whose last try failed and that will be retried)."""

    pending: int = 0
    failing: int = 0
    dead: int = 0
    dropped: int = 0
    sent: int = 0


def outbox_counts(engine: Engine) -> OutboxCounts:
    """One ``SELECT`` counting every state (what the admin page shows)."""
    pending = _PENDING
    statement = sa_select(
        func.count(case((pending, 1))),
        func.count(case((and_(pending, _OUTBOX.c.last_error.is_not(None)), 1))),
        func.count(case((_OUTBOX.c.dead_at.is_not(None), 1))),
        func.count(case((_OUTBOX.c.dropped_at.is_not(None), 1))),
        func.count(case((_OUTBOX.c.sent_at.is_not(None), 1))),
    ).select_from(_OUTBOX)
    with engine.connect() as connection:
        row = connection.execute(statement).one()
    return OutboxCounts(*(int(value) for value in row))


def pending_summary(engine: Engine, limit: int = 100) -> list[OutboxMail]:
    """Pending mails whose last attempt failed, oldest first (for the admin page)."""
    failing = (
        select(OutboxMail)
        .where(_PENDING, col(OutboxMail.last_error).is_not(None))
        .order_by(col(OutboxMail.created_at), col(OutboxMail.id))
        .limit(limit)
    )
    with Session(engine) as session:
        return list(session.exec(failing))


def dead_letters(engine: Engine, limit: int = 100) -> list[OutboxMail]:
    """Mails that failed permanently, newest first, with their reason in ``last_error``."""
    dead = (
        select(OutboxMail)
        .where(col(OutboxMail.dead_at).is_not(None), col(OutboxMail.sent_at).is_(None))
        .order_by(col(OutboxMail.dead_at).desc(), col(OutboxMail.id).desc())
        .limit(limit)
    )
    with Session(engine) as session:
        return list(session.exec(dead))


def retry_now(engine: Engine, row_id: int, now: datetime) -> bool:
    """Make a dead or failing mail due at once (the admin's "retry now"); False when the
    mail is not one of those (sent, dropped, unknown)."""
    statement = (
        update(_OUTBOX)
        .where(
            _OUTBOX.c.id == row_id,
            _OUTBOX.c.sent_at.is_(None),
            _OUTBOX.c.dropped_at.is_(None),
            or_(_OUTBOX.c.dead_at.is_not(None), _OUTBOX.c.last_error.is_not(None)),
            or_(_OUTBOX.c.claim_token.is_(None), _OUTBOX.c.next_attempt_at <= now),
        )
        .values(dead_at=None, next_attempt_at=as_utc(now), claim_token=None)
    )
    with writer(engine).begin() as connection:
        return bool(connection.execute(statement).rowcount)


# --------------------------------------------------------------------------- worker


class OutboxWorker(threading.Thread):
    """A daemon thread that calls :func:`deliver_due` every ``interval`` seconds (at once
    again while batches come back full). :meth:`stop` lets the mail being sent finish and
    hands the rest of its batch back."""

    def __init__(
        self,
        engine: Engine,
        transport: Transport,
        sender: str,
        *,
        now: Callable[[], datetime] = utc_now,
        interval: float = 2.0,
        limit: int = BATCH_SIZE,
    ) -> None:
        super().__init__(name="outbox-worker", daemon=True)
        self.engine = engine
        self.transport = transport
        self.sender = sender
        self.now = now
        self.interval = interval
        self.limit = limit
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            report = self.run_once()
            busy = report is not None and (
                report.sent + report.failed + report.dead + report.dropped >= self.limit
            )
            if not busy:
                self._stopping.wait(self.interval)

    def run_once(self) -> DeliveryReport | None:
        """One delivery round; errors (database down...) are logged, never raised."""
        try:
            report = deliver_due(
                self.engine,
                self.transport,
                self.now(),
                self.sender,
                self.limit,
                should_stop=self._stopping.is_set,
            )
        except Exception:
            logger.exception("outbox delivery round failed")
            return None
        if report.failed or report.dead:
            logger.warning(
                "outbox: %s mail(s) sent, %s failed, %s dead",
                report.sent,
                report.failed,
                report.dead,
            )
        return report

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to end and wait for it (unless called from the worker itself)."""
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
