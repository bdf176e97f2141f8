"""The reference host's durable mail outbox: a table, transports, and a delivery worker.

Mails are queued inside the caller's transaction (:func:`queue_mail`), so a mail exists if
and only if the business change that produced it was committed. A worker
(:class:`OutboxWorker`) then calls :func:`deliver_due`, which:

1. claims due rows in one short transaction, pushing their ``next_attempt_at`` forward by a
   lease (on PostgreSQL with ``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent workers in
   any number of processes never claim the same row; SQLite serialises writers anyway);
2. sends each claimed mail outside any transaction;
3. records each result in its own short transaction: ``sent_at``, or ``attempts + 1``, the
   last error and an exponential backoff.

A transport failure never raises out of :func:`deliver_due`: the mail stays queued with its
error (shown to admins through :func:`pending_summary`) and is retried later. Delivery is
at-least-once: a worker that dies between sending and recording resends after the lease.

All datetimes are timezone-aware UTC. SQLite stores them without an offset; the column
type ``opencrm_horscompte.base.db.UTCDateTime`` converts to UTC on write and re-attaches
UTC on read.
"""

import logging
import mailbox
import smtplib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import ClassVar, Protocol
from urllib.parse import urlsplit

from sqlalchemy import Column, Table, Text, bindparam, insert, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Field, Session, SQLModel, col, select

from opencrm_horscompte.base.db import timestamp_column, writer
from opencrm_horscompte.hookspecs.host import HEADER_FORBIDDEN, MailMessage

logger = logging.getLogger(__name__)

FIRST_RETRY_DELAY = timedelta(seconds=30)
MAX_RETRY_DELAY = timedelta(hours=1)
CLAIM_LEASE = timedelta(minutes=5)
MAX_ERROR_LENGTH = 500
# Stop starting new sends once this much real time has passed since the claim, so a batch
# never outlives its lease (after which another worker could claim the same rows).
_BATCH_TIME_BUDGET_SECONDS = CLAIM_LEASE.total_seconds() / 2


# --------------------------------------------------------------------------- table


class OutboxMail(SQLModel, table=True):
    """One queued mail; ``sent_at`` is set once delivered, ``last_error`` while it fails."""

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


def as_utc(moment: datetime) -> datetime:
    """``moment`` converted to UTC; naive datetimes are refused (their zone is unknown)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("the outbox needs timezone-aware datetimes")
    return moment.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


_OUTBOX = OutboxMail.__table__
_QUEUE = (
    insert(_OUTBOX)
    .values(
        recipient=bindparam("recipient", type_=_OUTBOX.c.recipient.type),
        subject=bindparam("subject", type_=_OUTBOX.c.subject.type),
        text=bindparam("text", type_=_OUTBOX.c.text.type),
        html=bindparam("html", type_=_OUTBOX.c.html.type),
        created_at=bindparam("now", type_=_OUTBOX.c.created_at.type),
        next_attempt_at=bindparam("now", type_=_OUTBOX.c.next_attempt_at.type),
        attempts=0,
    )
    .returning(_OUTBOX.c.id)
)


def queue_mail(session: OrmSession, message: MailMessage, now: datetime) -> int:
    """Add ``message`` to the outbox in ``session``'s transaction (the caller commits);
    returns its id. One Core ``INSERT``: deposits and lookups queue mail on their hot path."""
    moment = as_utc(now)
    values = {
        "recipient": message.to,
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "now": moment,
    }
    return int(session.connection().execute(_QUEUE, values).scalar_one())


# --------------------------------------------------------------------------- transports


class Transport(Protocol):
    """Delivers one message or raises; the outbox records the exception as the error."""

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


class SmtpTransport:
    """Sends each message over a new plain SMTP connection (a local relay, typically)."""

    def __init__(self, host: str, port: int, timeout: float = 10) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout

    def send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            refused = smtp.send_message(message)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)

    def __repr__(self) -> str:
        return f"SmtpTransport({self.host!r}, {self.port!r}, timeout={self.timeout!r})"


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


def _check_header(name: str, value: str) -> str:
    if any(char in value for char in HEADER_FORBIDDEN):
        raise ValueError(f"mail header {name!r} contains CR, LF or NUL")
    return value


def _message_id(row: OutboxMail, sender: str) -> str:
    """Stable per row, so a resend after a crash carries the same Message-ID."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    stamp = int(row.created_at.timestamp() * 1_000_000)
    return f"<outbox.{row.id}.{stamp}@{domain}>"


def build_email(row: OutboxMail, sender: str) -> EmailMessage:
    """The MIME message for ``row``: UTF-8 text, plus an HTML alternative when present."""
    message = EmailMessage()
    message["From"] = _check_header("From", sender)
    message["To"] = _check_header("To", row.recipient)
    message["Subject"] = _check_header("Subject", row.subject)
    message["Date"] = format_datetime(as_utc(row.created_at))
    message["Message-ID"] = _message_id(row, sender)
    message.set_content(row.text, charset="utf-8", cte="quoted-printable")
    if row.html is not None:
        message.add_alternative(row.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message


# --------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class DeliveryReport:
    """What one :func:`deliver_due` call did."""

    sent: int = 0
    failed: int = 0


def retry_delay(attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` failures: 30 s, 60 s, ... capped at 1 h."""
    doublings = min(max(attempts - 1, 0), 16)
    return min(FIRST_RETRY_DELAY * int(2**doublings), MAX_RETRY_DELAY)


def format_error(error: BaseException) -> str:
    """One line, at most :data:`MAX_ERROR_LENGTH` characters, for ``last_error``."""
    line = " ".join(f"{type(error).__name__}: {error}".split())
    if len(line) <= MAX_ERROR_LENGTH:
        return line
    return line[: MAX_ERROR_LENGTH - 1] + "…"


def _claim_due(engine: Engine, now: datetime, limit: int) -> list[OutboxMail]:
    """Lock due unsent rows, push them a lease ahead, and return them (detached)."""
    due = (
        select(OutboxMail)
        .where(col(OutboxMail.sent_at).is_(None), col(OutboxMail.next_attempt_at) <= now)
        .order_by(col(OutboxMail.next_attempt_at), col(OutboxMail.id))
        .limit(limit)
    )
    if engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    with Session(writer(engine), expire_on_commit=False) as session, session.begin():
        rows = list(session.exec(due))
        lease_until = now + CLAIM_LEASE
        for row in rows:
            row.next_attempt_at = lease_until
    return rows


def _record_sent(engine: Engine, row: OutboxMail, now: datetime) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(OutboxMail)
            .where(col(OutboxMail.id) == row.id)
            .values(sent_at=now, last_error=None)
        )


def _record_failure(engine: Engine, row: OutboxMail, now: datetime, error: Exception) -> None:
    attempts = row.attempts + 1
    with engine.begin() as connection:
        connection.execute(
            update(OutboxMail)
            .where(col(OutboxMail.id) == row.id, col(OutboxMail.sent_at).is_(None))
            .values(
                attempts=col(OutboxMail.attempts) + 1,
                last_error=format_error(error),
                next_attempt_at=now + retry_delay(attempts),
            )
        )


def _release(engine: Engine, rows: Sequence[OutboxMail], now: datetime) -> None:
    """Make claimed but unsent rows due again (only while the claim is still ours)."""
    if not rows:
        return
    with engine.begin() as connection:
        connection.execute(
            update(OutboxMail)
            .where(
                col(OutboxMail.id).in_([row.id for row in rows]),
                col(OutboxMail.sent_at).is_(None),
                col(OutboxMail.next_attempt_at) == now + CLAIM_LEASE,
            )
            .values(next_attempt_at=now)
        )


def _send_one(
    engine: Engine, transport: Transport, row: OutboxMail, now: datetime, sender: str
) -> bool:
    """Send ``row`` and record the outcome; True when it was delivered."""
    try:
        transport.send(build_email(row, sender))
    except Exception as error:
        logger.warning(
            "outbox mail %s not delivered (attempt %s): %s",
            row.id,
            row.attempts + 1,
            format_error(error),
        )
        _record_failure(engine, row, now, error)
        return False
    _record_sent(engine, row, now)
    return True


def deliver_due(
    engine: Engine, transport: Transport, now: datetime, sender: str, limit: int = 50
) -> DeliveryReport:
    """Send up to ``limit`` due mails; transport failures are recorded, never raised."""
    moment = as_utc(now)
    rows = _claim_due(engine, moment, limit)
    started = time.monotonic()
    sent = failed = 0
    for index, row in enumerate(rows):
        if time.monotonic() - started > _BATCH_TIME_BUDGET_SECONDS:
            _release(engine, rows[index:], moment)
            break
        if _send_one(engine, transport, row, moment, sender):
            sent += 1
        else:
            failed += 1
    return DeliveryReport(sent=sent, failed=failed)


def pending_summary(engine: Engine, limit: int = 100) -> list[OutboxMail]:
    """Unsent mails whose last attempt failed, oldest first (for the admin page)."""
    failing = (
        select(OutboxMail)
        .where(col(OutboxMail.sent_at).is_(None), col(OutboxMail.last_error).is_not(None))
        .order_by(col(OutboxMail.created_at), col(OutboxMail.id))
        .limit(limit)
    )
    with Session(engine) as session:
        return list(session.exec(failing))


# --------------------------------------------------------------------------- worker


class OutboxWorker(threading.Thread):
    """A daemon thread that calls :func:`deliver_due` every ``interval`` seconds."""

    def __init__(
        self,
        engine: Engine,
        transport: Transport,
        sender: str,
        *,
        now: Callable[[], datetime] = utc_now,
        interval: float = 2.0,
        limit: int = 50,
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
            self.run_once()
            self._stopping.wait(self.interval)

    def run_once(self) -> DeliveryReport | None:
        """One delivery round; errors (database down...) are logged, never raised."""
        try:
            report = deliver_due(self.engine, self.transport, self.now(), self.sender, self.limit)
        except Exception:
            logger.exception("outbox delivery round failed")
            return None
        if report.failed:
            logger.warning("outbox: %s mail(s) sent, %s failed", report.sent, report.failed)
        return report

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to end and wait for it (unless called from the worker itself)."""
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
