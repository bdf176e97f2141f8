"""The reference host's durable mail outbox, against SQLite and PostgreSQL, real SMTP/Maildir."""

from __future__ import annotations

import mailbox
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from processes import HANG_GUARD_SECONDS
from smtp_faults import wait_for
from smtp_server import Collector, body_text, free_port, parse_mail, start_smtp
from sqlalchemy import event, func, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from opencrm_horscompte.hookspecs.host import MailMessage
from opencrm_horscompte.host_kit.refhost.outbox import (
    MAX_ERROR_LENGTH,
    DeliveryReport,
    MaildirTransport,
    OutboxMail,
    OutboxWorker,
    SmtpTransport,
    build_email,
    deliver_due,
    pending_summary,
    queue_mail,
    retry_delay,
    transport_from_url,
)

SENDER = "Mairie de Saint-Étienne <ne-pas-repondre@mairie.example>"
SUBJECT = "Votre démarche « Inscription à la cantine » est déposée"
TEXT = "Bonjour Éloïse,\n\nVotre dossier a bien été reçu. Numéro de suivi : 7K-ÀÉÈ.\n"
HTML = "<p>Bonjour Éloïse,</p><p>Votre dossier a bien été reçu.</p>"


# --------------------------------------------------------------------------- helpers


class FailingTransport:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def send(self, message: EmailMessage) -> None:
        self.calls += 1
        raise self.error


class SlowRecordingTransport:
    """Takes its time, and remembers every Message-ID it was asked to send."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def send(self, message: EmailMessage) -> None:
        time.sleep(self.delay)
        with self._lock:
            self.sent.append(str(message["Message-ID"]))


def _queue(engine: Engine, now: datetime, *messages: MailMessage) -> list[int]:
    with Session(engine) as session:
        ids = [queue_mail(session, message, now) for message in messages]
        session.commit()
        return ids


def _row(engine: Engine, row_id: int) -> OutboxMail:
    with Session(engine) as session:
        row = session.get(OutboxMail, row_id)
        assert row is not None
        return row


def _count(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(OutboxMail)).one())


def _mail(number: int = 1, html: str | None = HTML) -> MailMessage:
    return MailMessage(to=f"eloise.{number}@example.org", subject=SUBJECT, text=TEXT, html=html)


@pytest.fixture
def outbox(engine: Engine) -> Engine:
    SQLModel.metadata.create_all(engine, tables=[OutboxMail.__table__])
    return engine


# --------------------------------------------------------------------------- queueing


def test_queue_mail_stays_in_callers_transaction(outbox: Engine, clock: Any) -> None:
    with Session(outbox) as session:
        queue_mail(session, _mail(), clock())
        session.rollback()
    assert _count(outbox) == 0

    (row_id,) = _queue(outbox, clock(), _mail())
    row = _row(outbox, row_id)
    assert (row.recipient, row.subject, row.text, row.html) == (
        "eloise.1@example.org",
        SUBJECT,
        TEXT,
        HTML,
    )
    assert row.created_at == row.next_attempt_at == clock()
    assert row.created_at.tzinfo is not None
    assert (row.attempts, row.last_error, row.sent_at) == (0, None, None)


@pytest.mark.parametrize(
    "header", [{"to": "a@example.org\r\nBcc: x@evil.example"}, {"subject": "Hi\nBcc: x"}]
)
def test_header_injection_refused_at_queue_time(
    outbox: Engine, clock: Any, header: dict[str, str]
) -> None:
    fields = {"to": "a@example.org", "subject": "Objet", "text": "corps"} | header
    with Session(outbox) as session:
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            message = MailMessage(to=fields["to"], subject=fields["subject"], text=fields["text"])
            queue_mail(session, message, clock())
        session.commit()
    assert _count(outbox) == 0


def test_queue_mail_refuses_naive_datetime(outbox: Engine) -> None:
    with Session(outbox) as session, pytest.raises(ValueError, match="timezone-aware"):
        queue_mail(session, _mail(), datetime(2026, 1, 1, 12, 0))


# --------------------------------------------------------------------------- messages


def test_build_email_headers_and_parts(clock: Any) -> None:
    row = OutboxMail(
        id=7,
        recipient="eloise@example.org",
        subject=SUBJECT,
        text=TEXT,
        html=HTML,
        created_at=clock(),
        next_attempt_at=clock(),
    )
    message = parse_mail(bytes(build_email(row, SENDER)))
    assert message["From"] == SENDER
    assert message["To"] == "eloise@example.org"
    assert message["Subject"] == SUBJECT
    assert message["Date"].datetime == clock()
    assert message["Message-ID"].endswith("@mairie.example>")
    assert message["Message-ID"] == build_email(row, SENDER)["Message-ID"]
    assert message.get_content_type() == "multipart/alternative"
    assert body_text(message, "plain") == TEXT
    assert body_text(message, "html").strip() == HTML


def test_build_email_text_only(clock: Any) -> None:
    row = OutboxMail(
        id=1,
        recipient="a@example.org",
        subject="Objet",
        text=TEXT,
        created_at=clock(),
        next_attempt_at=clock(),
    )
    message = parse_mail(bytes(build_email(row, SENDER)))
    assert message.get_content_type() == "text/plain"
    assert body_text(message, "plain") == TEXT


@pytest.mark.parametrize("field", ["recipient", "subject"])
@pytest.mark.parametrize("bad", ["\r", "\n", "\x00"])
def test_build_email_rechecks_headers(clock: Any, field: str, bad: str) -> None:
    values = {"recipient": "a@example.org", "subject": "Objet"}
    values[field] = f"x{bad}Bcc: victim@example.org"
    row = OutboxMail(
        id=1,
        recipient=values["recipient"],
        subject=values["subject"],
        text="corps",
        created_at=clock(),
        next_attempt_at=clock(),
    )
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        build_email(row, SENDER)
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        build_email(row.model_copy(update={field: "ok"}), f"a{bad}@example.org")


ENCODED_WORD_HEADERS = [
    # (field, value): RFC 2047 encoded-words the email package decodes where they are not
    # allowed, into a second recipient, NUL and VT, or CR LF and a Bcc header.
    ("recipient", "=?utf-8?b?dmljdGltQGV2aWwuZXhhbXBsZSwgeA==?=@x.fr"),
    ("recipient", "=?utf-8?b?YQALYg==?=@x.fr"),
    ("recipient", "=?utf-8?b?YQ0KQmNjOiB2aWN0aW1AZXZpbC5leGFtcGxl?=@x.fr"),
    ("subject", "=?utf-8?b?YQ0KQmNjOiB2aWN0aW1AZXZpbC5leGFtcGxl?="),
    ("subject", "=?utf-8?q?Objet=00cach=C3=A9?="),
]


@pytest.mark.parametrize(("field", "value"), ENCODED_WORD_HEADERS)
def test_an_encoded_word_that_decodes_to_a_control_or_a_recipient_is_dead_mail(
    outbox: Engine, clock: Any, smtp: tuple[int, Collector], field: str, value: str
) -> None:
    """A row written past ``MailMessage`` (another host, an old release) with an
    encoded-word header is never sent with what it decodes to: it is dead at once, as
    every invalid header is, and the other mails go."""
    port, collector = smtp
    good, bad = _queue(outbox, clock(), _mail(1), _mail(2))
    column = {"recipient": "recipient", "subject": "subject"}[field]
    with outbox.begin() as connection:
        connection.execute(
            text(f"UPDATE host_mail_outbox SET {column} = :value WHERE id = :id"),
            {"value": value, "id": bad},
        )

    report = deliver_due(outbox, SmtpTransport("127.0.0.1", port), clock(), SENDER)

    assert report == DeliveryReport(sent=1, dead=1)
    assert [envelope.rcpt_tos for envelope in collector.envelopes] == [["eloise.1@example.org"]]
    assert all(b"evil.example" not in envelope.content for envelope in collector.envelopes)
    failing = _row(outbox, bad)
    assert failing.dead_at == clock() and (failing.last_error or "").startswith("InvalidMail")
    assert _row(outbox, good).sent_at


def test_a_plain_encoded_word_subject_still_goes(clock: Any) -> None:
    """What decodes to ordinary text is no attack: the message is built."""
    row = OutboxMail(
        id=1,
        recipient="a=b?c@example.org",
        subject="=?utf-8?q?Objet_=C3=A9crit?=",
        text="corps",
        created_at=clock(),
        next_attempt_at=clock(),
    )
    message = build_email(row, SENDER)
    assert message["To"] == "a=b?c@example.org" and message["Subject"] == "Objet écrit"


# --------------------------------------------------------------------------- transports


def test_transport_from_url(tmp_path: Path) -> None:
    default = transport_from_url(None, tmp_path / "outbox")
    assert isinstance(default, MaildirTransport) and default.path == tmp_path / "outbox"
    assert (tmp_path / "outbox" / "new").is_dir()
    assert isinstance(transport_from_url("", tmp_path / "outbox"), MaildirTransport)
    other = transport_from_url(f"maildir://{tmp_path}/other", tmp_path / "outbox")
    assert isinstance(other, MaildirTransport) and other.path == tmp_path / "other"

    smtp = transport_from_url("smtp://relay.example:2525", tmp_path)
    assert isinstance(smtp, SmtpTransport)
    assert (smtp.host, smtp.port, smtp.timeout) == ("relay.example", 2525, 10)
    default_port = transport_from_url("smtp://relay.example", tmp_path)
    assert isinstance(default_port, SmtpTransport) and default_port.port == 25

    for bad in ("http://relay.example", "smtps://relay.example:465", "relay.example:25"):
        with pytest.raises(ValueError, match="unsupported mail URL scheme"):
            transport_from_url(bad, tmp_path)
    with pytest.raises(ValueError, match="no host"):
        transport_from_url("smtp://:25", tmp_path)
    with pytest.raises(ValueError, match="invalid port"):
        transport_from_url("smtp://relay.example:99999", tmp_path)
    with pytest.raises(ValueError, match="credentials"):
        transport_from_url("smtp://user:secret@relay.example:25", tmp_path)


def test_retry_delay_doubles_from_30s_capped_at_five_minutes() -> None:
    delays = [retry_delay(attempts).total_seconds() for attempts in range(1, 7)]
    assert delays == [30, 60, 120, 240, 300, 300]
    assert retry_delay(10_000) == timedelta(minutes=5)


# --------------------------------------------------------------------------- delivery


def test_smtp_delivery(outbox: Engine, clock: Any, smtp: tuple[int, Collector]) -> None:
    port, collector = smtp
    first, second = _queue(outbox, clock(), _mail(1), _mail(2, html=None))

    report = deliver_due(outbox, SmtpTransport("127.0.0.1", port), clock(), SENDER)

    assert report == DeliveryReport(sent=2, failed=0)
    assert sorted(envelope.rcpt_tos for envelope in collector.envelopes) == [
        ["eloise.1@example.org"],
        ["eloise.2@example.org"],
    ]
    assert {envelope.mail_from for envelope in collector.envelopes} == {
        "ne-pas-repondre@mairie.example"
    }
    by_recipient = {str(message["To"]): message for message in collector.messages()}
    with_html = by_recipient["eloise.1@example.org"]
    assert with_html["Subject"] == SUBJECT
    assert with_html["From"] == SENDER
    assert body_text(with_html, "plain") == TEXT
    assert body_text(with_html, "html").strip() == HTML
    text_only = by_recipient["eloise.2@example.org"]
    assert text_only.get_content_type() == "text/plain"
    assert body_text(text_only, "plain") == TEXT

    for row_id in (first, second):
        row = _row(outbox, row_id)
        assert row.sent_at == clock() and row.attempts == 0 and row.last_error is None
    assert deliver_due(outbox, SmtpTransport("127.0.0.1", port), clock(), SENDER) == (
        DeliveryReport(sent=0, failed=0)
    )
    assert len(collector.envelopes) == 2


def test_smtp_down_then_back_delivers_exactly_once(outbox: Engine, clock: Any) -> None:
    port = free_port()
    transport = SmtpTransport("127.0.0.1", port, timeout=5)
    (row_id,) = _queue(outbox, clock(), _mail())
    failed_at = clock()

    assert deliver_due(outbox, transport, clock(), SENDER) == DeliveryReport(sent=0, failed=1)

    row = _row(outbox, row_id)
    assert row.sent_at is None and row.attempts == 1
    assert row.last_error is not None and "ConnectionRefusedError" in row.last_error
    assert row.next_attempt_at == failed_at + timedelta(seconds=30)
    assert [mail.id for mail in pending_summary(outbox)] == [row_id]

    controller, collector = start_smtp(port)
    try:
        clock.advance(seconds=29)
        assert deliver_due(outbox, transport, clock(), SENDER) == DeliveryReport()
        assert collector.envelopes == []

        clock.advance(seconds=1)
        assert deliver_due(outbox, transport, clock(), SENDER) == DeliveryReport(sent=1)
        clock.advance(hours=2)
        assert deliver_due(outbox, transport, clock(), SENDER) == DeliveryReport()
    finally:
        controller.stop()

    assert len(collector.envelopes) == 1
    assert collector.messages()[0]["Subject"] == SUBJECT
    row = _row(outbox, row_id)
    assert row.sent_at == failed_at + timedelta(seconds=30)
    assert row.attempts == 1 and row.last_error is None
    assert pending_summary(outbox) == []


def test_backoff_grows_and_error_is_one_truncated_line(outbox: Engine, clock: Any) -> None:
    transport = FailingTransport(OSError("line one\nline two " + "x" * 2000))
    (row_id,) = _queue(outbox, clock(), _mail())
    expected = [30, 60, 120]
    for attempt, delay in enumerate(expected, start=1):
        assert deliver_due(outbox, transport, clock(), SENDER) == DeliveryReport(failed=1)
        row = _row(outbox, row_id)
        assert row.attempts == attempt
        assert row.next_attempt_at == clock() + timedelta(seconds=delay)
        clock.advance(seconds=delay)
    assert transport.calls == len(expected)
    assert row.last_error is not None
    assert row.last_error.startswith("OSError: line one line two xxx")
    assert "\n" not in row.last_error and len(row.last_error) == MAX_ERROR_LENGTH


def test_one_failing_mail_does_not_block_the_others(
    outbox: Engine, clock: Any, smtp: tuple[int, Collector]
) -> None:
    port, collector = smtp
    good_before, bad, good_after = _queue(outbox, clock(), _mail(1), _mail(2), _mail(3))
    with outbox.begin() as connection:  # bypasses MailMessage, as a corrupted row would
        connection.execute(
            text("UPDATE host_mail_outbox SET subject = :subject WHERE id = :id"),
            {"subject": "Objet\r\nBcc: victim@example.org", "id": bad},
        )

    report = deliver_due(outbox, SmtpTransport("127.0.0.1", port), clock(), SENDER)

    assert report == DeliveryReport(sent=2, dead=1)  # a bad header is permanent
    assert sorted(envelope.rcpt_tos[0] for envelope in collector.envelopes) == [
        "eloise.1@example.org",
        "eloise.3@example.org",
    ]
    failing = _row(outbox, bad)
    assert failing.last_error == "InvalidMail: mail header 'Subject' contains CR, LF or NUL"
    assert failing.dead_at == clock()
    assert _row(outbox, good_before).sent_at and _row(outbox, good_after).sent_at


def test_limit_and_oldest_first(outbox: Engine, clock: Any) -> None:
    transport = SlowRecordingTransport(delay=0)
    ids = []
    for number in range(3):
        ids += _queue(outbox, clock(), _mail(number))
        clock.advance(seconds=1)
    assert deliver_due(outbox, transport, clock(), SENDER, limit=2) == DeliveryReport(sent=2)
    assert [_row(outbox, row_id).sent_at is not None for row_id in ids] == [True, True, False]
    assert deliver_due(outbox, transport, clock(), SENDER, limit=2) == DeliveryReport(sent=1)


def test_maildir_delivery(outbox: Engine, clock: Any, tmp_path: Path) -> None:
    folder = tmp_path / "var" / "mail" / "outbox"
    _queue(outbox, clock(), _mail())

    report = deliver_due(outbox, transport_from_url(None, folder), clock(), SENDER)

    assert report == DeliveryReport(sent=1)
    box = mailbox.Maildir(folder, create=False)
    keys = box.keys()
    assert len(keys) == 1
    message = parse_mail(box.get_bytes(keys[0]))
    assert message["To"] == "eloise.1@example.org"
    assert message["Subject"] == SUBJECT
    assert body_text(message, "plain") == TEXT
    assert body_text(message, "html").strip() == HTML


def test_deliver_due_refuses_naive_now(outbox: Engine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        deliver_due(outbox, SlowRecordingTransport(0), datetime(2026, 1, 1), SENDER)


def test_datetimes_are_utc_aware_when_read_back(outbox: Engine, clock: Any) -> None:
    paris = timezone(timedelta(hours=1))
    (row_id,) = _queue(outbox, clock().astimezone(paris), _mail())
    row = _row(outbox, row_id)
    assert row.created_at.tzinfo == UTC
    assert row.created_at == clock()
    assert [mail.id for mail in pending_summary(outbox)] == []


# --------------------------------------------------------------------------- concurrency


@pytest.mark.slow
def test_concurrent_workers_send_each_mail_exactly_once(outbox: Engine, clock: Any) -> None:
    total = 12
    _queue(outbox, clock(), *[_mail(number) for number in range(total)])
    transport = SlowRecordingTransport(delay=0.1)
    start = threading.Barrier(2)
    reports: dict[str, list[DeliveryReport]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            start.wait()
            while (report := deliver_due(outbox, transport, clock(), SENDER, limit=2)).sent:
                reports[name].append(report)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(name,)) for name in reports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANG_GUARD_SECONDS)

    assert errors == []
    assert len(transport.sent) == total
    assert len(set(transport.sent)) == total
    assert all(reports.values()), "both workers should have taken a share"
    assert sum(report.sent for batch in reports.values() for report in batch) == total
    with Session(outbox) as session:
        unsent = session.exec(select(OutboxMail).where(OutboxMail.sent_at == None)).all()  # noqa: E711
    assert unsent == []


@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_simultaneous_claims_never_overlap(outbox: Engine, clock: Any) -> None:
    """Both workers' claim queries run before either commits: they must get disjoint rows."""
    _queue(outbox, clock(), *[_mail(number) for number in range(4)])
    both_selected = threading.Barrier(2, timeout=HANG_GUARD_SECONDS)
    transport = SlowRecordingTransport(delay=0)
    reports: list[DeliveryReport] = []
    errors: list[BaseException] = []

    def after_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().startswith("SELECT") and "host_mail_outbox" in statement:
            both_selected.wait()

    def work() -> None:
        try:
            reports.append(deliver_due(outbox, transport, clock(), SENDER, limit=2))
        except BaseException as error:  # surfaced below
            errors.append(error)

    event.listen(outbox, "after_cursor_execute", after_execute)
    try:
        threads = [threading.Thread(target=work) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=HANG_GUARD_SECONDS)
    finally:
        event.remove(outbox, "after_cursor_execute", after_execute)

    assert errors == []
    assert reports == [DeliveryReport(sent=2), DeliveryReport(sent=2)]
    assert len(set(transport.sent)) == len(transport.sent) == 4


@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_locked_rows_are_skipped_not_waited_for(outbox: Engine, clock: Any) -> None:
    locked, free = _queue(outbox, clock(), _mail(1), _mail(2))
    transport = SlowRecordingTransport(delay=0)
    with outbox.connect() as other_worker:
        other_worker.begin()
        other_worker.execute(
            text("SELECT id FROM host_mail_outbox WHERE id = :id FOR UPDATE"), {"id": locked}
        )
        results: list[DeliveryReport] = []
        thread = threading.Thread(
            target=lambda: results.append(deliver_due(outbox, transport, clock(), SENDER))
        )
        thread.start()
        thread.join(timeout=HANG_GUARD_SECONDS)
        assert not thread.is_alive(), "deliver_due waited on a locked row"
        other_worker.rollback()
    assert results == [DeliveryReport(sent=1)]
    assert _row(outbox, free).sent_at is not None
    assert _row(outbox, locked).sent_at is None


def test_claimed_rows_are_not_due_for_another_worker(outbox: Engine, clock: Any) -> None:
    (row_id,) = _queue(outbox, clock(), _mail())
    inner: list[DeliveryReport] = []

    class Reentrant:
        """While sending, a second worker looks for due mails: it must find none."""

        def send(self, message: EmailMessage) -> None:
            inner.append(deliver_due(outbox, SlowRecordingTransport(0), clock(), SENDER))

    assert deliver_due(outbox, Reentrant(), clock(), SENDER) == DeliveryReport(sent=1)
    assert inner == [DeliveryReport()]
    assert _row(outbox, row_id).sent_at == clock()


# --------------------------------------------------------------------------- worker


def test_worker_delivers_and_stops(outbox: Engine, clock: Any, tmp_path: Path) -> None:
    _queue(outbox, clock(), _mail())
    folder = tmp_path / "maildir"
    worker = OutboxWorker(outbox, MaildirTransport(folder), SENDER, now=clock, interval=0.05)
    assert worker.daemon
    worker.start()
    try:
        wait_for(lambda: list(mailbox.Maildir(folder).keys()))  # no deadline: a hang guard
    finally:
        worker.stop(timeout=HANG_GUARD_SECONDS)
    assert not worker.is_alive()
    assert len(mailbox.Maildir(folder).keys()) == 1


def test_worker_logs_failures_and_keeps_going(
    outbox: Engine, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _queue(outbox, clock(), _mail())
    worker = OutboxWorker(outbox, FailingTransport(OSError("relay down")), SENDER, now=clock)
    with caplog.at_level("WARNING", logger="opencrm_horscompte.host_kit.refhost.outbox"):
        assert worker.run_once() == DeliveryReport(failed=1)
    assert "relay down" in caplog.text

    broken = OutboxWorker(outbox, SlowRecordingTransport(0), SENDER, now=_naive_now)
    with caplog.at_level("ERROR", logger="opencrm_horscompte.host_kit.refhost.outbox"):
        assert broken.run_once() is None
    assert "outbox delivery round failed" in caplog.text


def _naive_now() -> datetime:
    """A naive 'now': deliver_due refuses it, so the worker's round fails and is logged."""
    return datetime(2026, 1, 1)


def test_batch_past_its_time_budget_releases_unsent_claims(
    outbox: Engine, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _queue(outbox, clock(), _mail(1), _mail(2))
    monkeypatch.setattr(
        "opencrm_horscompte.host_kit.refhost.outbox._BATCH_TIME_BUDGET_SECONDS", -1.0
    )
    transport = SlowRecordingTransport(delay=0)

    assert deliver_due(outbox, transport, clock(), SENDER) == DeliveryReport()

    assert transport.sent == []
    assert [_row(outbox, row_id).next_attempt_at for row_id in ids] == [clock(), clock()]
    monkeypatch.undo()
    assert deliver_due(outbox, transport, clock(), SENDER) == DeliveryReport(sent=2)
