"""The outbox against injected faults: SMTP servers that refuse, answer 4xx or 5xx, hang,
trickle or drop the connection mid-DATA; PostgreSQL backends terminated during delivery; a
worker killed with SIGKILL, or stopped with SIGTERM.

Every test checks the figures of issue 9: no mail lost, at most one duplicate per injected
fault (none without one), a duplicate keeps its Message-ID, the pending count is exact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import PG_ADMIN_URL, Clock, empty_public_schema, login, new_client, post
from smtp_faults import FaultySmtp, closed_port, wait_for
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, col, select

from opencrm_horscompte.base.db import make_engine
from opencrm_horscompte.hookspecs.host import MailMessage
from opencrm_horscompte.host_kit.refhost.host import HostConfig
from opencrm_horscompte.host_kit.refhost.migrate import upgrade_host
from opencrm_horscompte.host_kit.refhost.outbox import (
    CLAIM_LEASE,
    REPLACED,
    SEND_DEADLINE,
    USELESS,
    DeliveryReport,
    OutboxMail,
    SmtpTransport,
    deliver_due,
    outbox_counts,
    queue_mail,
    retry_now,
)

SENDER = "Mairie <ne-pas-repondre@mairie.example>"
HOST_SENDER = HostConfig.mail_sender  # what `opencrm-horscompte worker` sends from
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def outbox(engine: Engine) -> Engine:
    upgrade_host(engine)
    return engine


@pytest.fixture
def smtp() -> Iterator[FaultySmtp]:
    server = FaultySmtp()
    yield server
    server.stop()


def _queue(engine: Engine, clock: Clock, count: int, **hints: Any) -> list[int]:
    with Session(engine) as session:
        ids = [
            queue_mail(
                session,
                MailMessage(to=f"usager.{n}@example.org", subject=f"Objet {n}", text="x", **hints),
                clock(),
            )
            for n in range(count)
        ]
        session.commit()
    return ids


def _table_counts(engine: Engine) -> dict[str, int]:
    """The states counted straight from the table, to check the page's figures against."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT sent_at, dead_at, dropped_at, last_error FROM host_mail_outbox")
        ).all()
    pending = [r for r in rows if r[0] is None and r[1] is None and r[2] is None]
    return {
        "pending": len(pending),
        "failing": sum(1 for r in pending if r[3] is not None),
        "dead": sum(1 for r in rows if r[1] is not None and r[0] is None),
        "dropped": sum(1 for r in rows if r[2] is not None and r[0] is None),
        "sent": sum(1 for r in rows if r[0] is not None),
    }


def _counts(engine: Engine) -> dict[str, int]:
    counts = outbox_counts(engine)
    shown = {name: getattr(counts, name) for name in _table_counts(engine)}
    assert shown == _table_counts(engine)
    return shown


def _message_ids(engine: Engine, sender: str = SENDER) -> dict[int, str]:
    from opencrm_horscompte.host_kit.refhost.outbox import build_email

    with Session(engine) as session:
        return {
            row.id: str(build_email(row, sender)["Message-ID"])
            for row in session.exec(select(OutboxMail))
            if row.id is not None
        }


def _check_figures(engine: Engine, server: FaultySmtp, faults: int, sender: str = SENDER) -> None:
    """0 lost, at most ``faults`` duplicates (each at most once more), Message-IDs kept."""
    received = Counter(server.message_ids())
    expected = set(_message_ids(engine, sender).values())
    assert set(received) == expected, "a mail was lost, or an unknown one was sent"
    duplicates = sum(count - 1 for count in received.values())
    assert duplicates <= faults, received
    assert all(count <= 2 for count in received.values()), received
    assert _counts(engine)["pending"] == 0


# --------------------------------------------------------------------------- SMTP faults


@pytest.mark.parametrize("fault", ["refuse", "4xx", "hang", "trickle", "drop"])
def test_temporary_fault_then_recovery(
    outbox: Engine, clock: Clock, smtp: FaultySmtp, fault: str
) -> None:
    ids = _queue(outbox, clock, 3)
    port = closed_port() if fault == "refuse" else smtp.port
    smtp.mode = "ok" if fault == "refuse" else fault
    # per-operation timeout far above the deadline: only the whole-send deadline can end a
    # hanging or trickling server
    broken = SmtpTransport("127.0.0.1", port, timeout=60, deadline=1.0)

    report = deliver_due(outbox, broken, clock(), SENDER)

    assert report == DeliveryReport(failed=3)
    assert _counts(outbox) | {"sent": 0} == {
        "pending": 3,
        "failing": 3,
        "dead": 0,
        "dropped": 0,
        "sent": 0,
    }
    with Session(outbox) as session:
        errors = {session.get_one(OutboxMail, row_id).last_error for row_id in ids}
    expected_error = {
        "refuse": "ConnectionRefusedError",
        "4xx": "SMTPRecipientsRefused",
        "hang": "SendDeadlineExceeded",
        "trickle": "SendDeadlineExceeded",
        "drop": "SMTPServerDisconnected",
    }[fault]
    assert all(error and error.startswith(expected_error) for error in errors), errors
    assert smtp.message_ids() == []

    smtp.mode = "ok"
    clock.advance(seconds=30)
    healthy = SmtpTransport("127.0.0.1", smtp.port, deadline=10.0)
    assert deliver_due(outbox, healthy, clock(), SENDER) == DeliveryReport(sent=3)
    _check_figures(outbox, smtp, faults=0)  # nothing was accepted during the fault


def test_permanent_failure_is_a_dead_letter_an_admin_can_retry(
    host: Any, clock: Clock, smtp: FaultySmtp
) -> None:

    engine = host.engine
    (row_id,) = _queue(engine, clock, 1)
    smtp.mode = "5xx"
    transport = SmtpTransport("127.0.0.1", smtp.port, deadline=10.0)

    assert deliver_due(engine, transport, clock(), SENDER) == DeliveryReport(dead=1)
    clock.advance(hours=2)
    assert deliver_due(engine, transport, clock(), SENDER) == DeliveryReport()  # not retried
    assert _counts(engine)["dead"] == 1 and _counts(engine)["pending"] == 0

    client = new_client(host)
    login(client, ("admin@demoville.fr", "admin-password"))
    page = client.get("/admin/courriels").text
    assert 'data-count="dead">1<' in page and 'data-count="pending">0<' in page
    assert "550" in page and f'data-mail="{row_id}"' in page

    smtp.mode = "ok"
    response = post(client, "/admin/courriels", {"mail": str(row_id)})
    assert response.status_code == 200
    assert 'data-count="pending">1<' in response.text
    assert deliver_due(engine, transport, clock(), SENDER) == DeliveryReport(sent=1)
    _check_figures(engine, smtp, faults=0)
    assert not retry_now(engine, row_id, clock())  # sent: nothing to retry


def test_an_expired_mail_is_dropped_never_delivered_late(
    outbox: Engine, clock: Clock, smtp: FaultySmtp
) -> None:
    (late,) = _queue(outbox, clock, 1, useless_after=clock() + timedelta(minutes=10))
    down = SmtpTransport("127.0.0.1", closed_port(), deadline=5.0)
    assert deliver_due(outbox, down, clock(), SENDER) == DeliveryReport(failed=1)

    clock.advance(minutes=20)  # a 20-minute outage: the code expired meanwhile
    up = SmtpTransport("127.0.0.1", smtp.port, deadline=10.0)
    assert deliver_due(outbox, up, clock(), SENDER) == DeliveryReport(dropped=1)
    assert smtp.message_ids() == []
    with Session(outbox) as session:
        row = session.get(OutboxMail, late)
        assert row is not None and row.last_error == USELESS and row.dropped_at == clock()
    assert _counts(outbox) == {"pending": 0, "failing": 0, "dead": 0, "dropped": 1, "sent": 0}


def test_a_replaced_mail_is_dropped(outbox: Engine, clock: Clock, smtp: FaultySmtp) -> None:
    older, other = _queue(outbox, clock, 2, replaces="code:dossier-1")[0], _queue(outbox, clock, 1)
    (newer,) = _queue(outbox, clock, 1, replaces="code:dossier-1")
    up = SmtpTransport("127.0.0.1", smtp.port, deadline=10.0)

    assert deliver_due(outbox, up, clock(), SENDER) == DeliveryReport(sent=2, dropped=2)

    ids = _message_ids(outbox)
    assert sorted(smtp.message_ids()) == sorted([ids[newer], ids[other[0]]])
    with Session(outbox) as session:
        assert session.get_one(OutboxMail, older).last_error == REPLACED


def test_a_resent_validation_code_replaces_the_older_mail(host: Any, clock: Clock) -> None:
    """The plugin marks its validation mails: useless once the code expires, replaced by
    the next code of the same dossier."""
    from lookup_helpers import LOOKUP, deposit

    client = new_client(host)
    dossier = deposit(client, host)
    for _ in range(2):
        client.get(LOOKUP)
        response = post(client, LOOKUP, {"email": dossier.email, "tracking_code": dossier.code})
        assert response.status_code in (200, 303), response.text
        clock.advance(seconds=61)
    with Session(host.engine) as session:
        codes = [
            row
            for row in session.exec(select(OutboxMail).order_by(col(OutboxMail.id)))
            if row.replaces
        ]
    assert len(codes) == 2
    assert codes[0].replaces == codes[1].replaces
    assert all(row.useless_after is not None for row in codes)
    maildir = SmtpTransport("127.0.0.1", closed_port())  # never reached for the dropped one
    report = deliver_due(host.engine, maildir, clock(), SENDER, limit=50)
    assert report.dropped >= 1


# --------------------------------------------------------------------------- database faults


def _pg_admin() -> Engine:
    return make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def _terminate_backends(database: str, allow_connections: bool = True) -> None:
    admin = _pg_admin()
    with admin.connect() as connection:
        if not allow_connections:
            connection.execute(text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false'))
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": database},
        )
    admin.dispose()


def _allow_connections(database: str) -> None:
    admin = _pg_admin()
    with admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true'))
    admin.dispose()


class _KillingTransport:
    """Delivers to the SMTP server, and right after the first mail kills the database's
    backends (and, when ``block``, refuses new connections until released)."""

    def __init__(self, smtp: FaultySmtp, database: str, block: bool) -> None:
        self.inner = SmtpTransport("127.0.0.1", smtp.port, deadline=10.0)
        self.database = database
        self.block = block
        self.sends = 0

    def send(self, message: Any) -> None:
        self.inner.send(message)
        self.sends += 1
        if self.sends == 1:
            _terminate_backends(self.database, allow_connections=not self.block)


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("block", "back_during_retries"),
    [(False, False), (True, True), (True, False)],
    ids=["killed", "killed-and-down-for-a-moment", "killed-and-down"],
)
def test_backends_terminated_during_delivery(
    pg_database_url: str,
    clock: Clock,
    smtp: FaultySmtp,
    block: bool,
    back_during_retries: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = make_url(pg_database_url).database
    assert database
    empty_public_schema(pg_database_url)
    engine = make_engine(pg_database_url)
    pauses: list[float] = []

    def pause(seconds: float) -> None:  # the recording's retries, without the waiting
        pauses.append(seconds)
        if back_during_retries and len(pauses) == 2:
            _allow_connections(database)  # the database is back after the second try

    monkeypatch.setattr(time, "sleep", pause)  # what the outbox sleeps through
    try:
        upgrade_host(engine)
        _queue(engine, clock, 4)
        transport = _KillingTransport(smtp, database, block)

        try:
            report = deliver_due(engine, transport, clock(), SENDER)
        finally:
            _allow_connections(database)

        if not block or back_during_retries:
            # the record is retried on a fresh connection: nothing is sent twice, and the
            # batch goes on
            assert report == DeliveryReport(sent=4)
            _check_figures(engine, smtp, faults=0)
            assert len(smtp.message_ids()) == 4
            return
        assert pauses == [0.5, 1.0, 2.0, 4.0]  # 7.5 s of retries before giving up
        # the first mail went out but could not be recorded; the batch stopped there
        assert report == DeliveryReport()
        assert _counts(engine)["pending"] == 4
        clock.advance(seconds=CLAIM_LEASE.total_seconds() + 1)  # the lease runs out
        healthy = SmtpTransport("127.0.0.1", smtp.port, deadline=10.0)
        assert deliver_due(engine, healthy, clock(), SENDER) == DeliveryReport(sent=4)
        _check_figures(engine, smtp, faults=1)
        assert len(smtp.message_ids()) == 5  # the one duplicate, with its Message-ID
    finally:
        engine.dispose()
        empty_public_schema(pg_database_url)


# --------------------------------------------------------------------------- killed worker

_WORKER = textwrap.dedent(
    """
    import sys, threading
    from datetime import UTC, datetime
    from opencrm_horscompte.base.db import make_engine
    from opencrm_horscompte.host_kit.refhost.outbox import SmtpTransport, deliver_due

    url, port = sys.argv[1], int(sys.argv[2])

    class StallsOnSecond:
        def __init__(self):
            self.inner = SmtpTransport("127.0.0.1", port, deadline=10.0)
            self.calls = 0
        def send(self, message):
            self.calls += 1
            if self.calls == 2:
                print("stalled", flush=True)
                threading.Event().wait()   # holds its claim until killed
            self.inner.send(message)

    sender = "Mairie <ne-pas-repondre@mairie.example>"
    deliver_due(make_engine(url), StallsOnSecond(), datetime.now(UTC), sender)
    """
)


@pytest.fixture
def pg_outbox(pg_database_url: str) -> Iterator[Engine]:
    empty_public_schema(pg_database_url)
    engine = make_engine(pg_database_url)
    upgrade_host(engine)
    yield engine
    engine.dispose()
    empty_public_schema(pg_database_url)


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.postgresql
@pytest.mark.slow
def test_mail_claimed_by_a_killed_worker_comes_back_within_one_lease(
    pg_outbox: Engine, pg_database_url: str, smtp: FaultySmtp, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    clock = Clock(datetime.now(UTC))
    _queue(pg_outbox, clock, 7)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER, "utf-8")
    worker = subprocess.Popen(
        [sys.executable, str(script), pg_database_url, str(smtp.port)],
        stdout=subprocess.PIPE,
        text=True,
        env=_environment(),
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "stalled"  # waits for it, no clock
        os.kill(worker.pid, signal.SIGKILL)
        killed_at = datetime.now(UTC)
        assert worker.wait(120) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    with pg_outbox.connect() as connection:
        held = connection.execute(
            text("SELECT next_attempt_at FROM host_mail_outbox WHERE claim_token IS NOT NULL")
        ).all()
    assert held, "the killed worker held some mail"
    # the held mail is due again one lease after the claim (30 s, far under the 60 s target)
    assert all(row[0] <= killed_at + CLAIM_LEASE for row in held)
    assert len(smtp.message_ids()) == 1
    assert _counts(pg_outbox)["pending"] == 6

    # a worker available again, at the end of the lease: everything goes, once
    clock.current = killed_at + CLAIM_LEASE
    healthy = SmtpTransport("127.0.0.1", smtp.port, deadline=10.0)
    while _counts(pg_outbox)["pending"]:
        deliver_due(pg_outbox, healthy, clock(), SENDER)
    _check_figures(pg_outbox, smtp, faults=0)


@pytest.mark.postgresql
@pytest.mark.slow
def test_sigterm_lets_the_current_mail_finish_and_hands_the_rest_back(
    pg_outbox: Engine, pg_database_url: str, smtp: FaultySmtp, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    _queue(pg_outbox, Clock(datetime.now(UTC)), 5)
    smtp.mode = "slow"
    smtp.slow_pause = 1.0
    environment = {
        **_environment(),
        "HORSCOMPTE_DATABASE_URL": pg_database_url,
        "HORSCOMPTE_SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "opencrm_horscompte.cli", "worker", "--data-dir", str(tmp_path)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(smtp.data_started.is_set)  # a mail is in flight
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, output
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    counts = _counts(pg_outbox)
    assert counts["sent"] >= 1  # the one in flight finished and was recorded
    with pg_outbox.connect() as connection:
        claimed = connection.execute(
            text("SELECT count(*) FROM host_mail_outbox WHERE claim_token IS NOT NULL")
        ).scalar_one()
    assert claimed == 0  # the rest of its batch was handed back
    smtp.mode = "ok"
    clock = Clock(datetime.now(UTC))
    healthy = SmtpTransport("127.0.0.1", smtp.port, deadline=10.0)
    assert deliver_due(pg_outbox, healthy, clock(), HOST_SENDER).sent == counts["pending"]
    _check_figures(pg_outbox, smtp, faults=0, sender=HOST_SENDER)


# --------------------------------------------------------------------------- leases


def test_a_send_never_outlives_its_lease(outbox: Engine, clock: Clock) -> None:
    """The lease is renewed right before each send and outlasts the whole-send deadline."""
    assert SmtpTransport("h", 25).deadline == SEND_DEADLINE < CLAIM_LEASE.total_seconds()
    _queue(outbox, clock, 3)
    leases: list[timedelta] = []

    class Inspecting:
        def send(self, message: Any) -> None:
            row_id = int(str(message["Message-ID"]).split(".")[1])
            with Session(outbox) as session:
                row = session.get(OutboxMail, row_id)
                assert row is not None
                leases.append(row.next_attempt_at - clock())

    assert deliver_due(outbox, Inspecting(), clock(), SENDER) == DeliveryReport(sent=3)
    assert len(leases) == 3
    assert all(lease >= CLAIM_LEASE for lease in leases), leases


@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_scheduled_tasks_run_in_one_process_only(host_factory: Any) -> None:
    """Two background workers: the scheduler lock (a PostgreSQL advisory lock) lets one run
    the scheduled tasks; the other takes over when the first goes away."""
    from opencrm_horscompte.host_kit.refhost.runner import LockedScheduler

    host = host_factory()
    first, second = LockedScheduler(host), LockedScheduler(host)
    try:
        every_task = ["host.sessions.purge", "horscompte.purge"]
        assert first.run_due() == every_task
        assert second.run_due() == []
        first.stop()
        assert second.run_due() == every_task
    finally:
        first.stop()
        second.stop()
