"""The lookup's mails through a real SMTP server on loopback (aiosmtpd), on both backends.

* the acknowledgment mail at deposit carries the grouped tracking code;
* a lookup's validation mail leaves the outbox, is read back from the SMTP server (to the
  address stored on the dossier, never the one typed; the template's subject; the code in
  the text part; an autoescaped HTML part) and its code opens the dossier page;
* SMTP down: the citizen sees the same page, the mail waits in the outbox with its error,
  and leaves exactly once when SMTP is back; its code still works.
"""

from __future__ import annotations

import re
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from conftest import browser, post
from lookup_helpers import CODE_LINE, deposit, token_of
from smtp_server import Collector, body_text, free_port, start_smtp
from sqlmodel import Session, col, select

from opencrm_horscompte.host_kit.refhost.models import Demarche
from opencrm_horscompte.host_kit.refhost.outbox import (
    FIRST_RETRY_DELAY,
    DeliveryReport,
    OutboxMail,
    SmtpTransport,
    deliver_due,
)
from opencrm_horscompte.tracking.codes import format_tracking_code

DEMARCHE = "signalement-voirie"
# A title with markup in it, to see the HTML part escape it (and the others keep it).
TITLE = 'Signaler un problème <b>voirie</b> & "trottoirs"'
ESCAPED_TITLE = "Signaler un problème &lt;b&gt;voirie&lt;/b&gt; &amp; &#34;trottoirs&#34;"
STORED = "Lea.Dupont@Exemple.fr"  # as typed at deposit, kept on the dossier
TYPED = "  lea.dupont@EXEMPLE.FR "  # as typed at lookup: the same address, another spelling
IDENTITY = {"last_name": "Dupont", "first_name": "Léa", "email": STORED}
ANSWERS = {"subject": "Lampadaire éteint rue des Lilas", "message": "Depuis lundi."}
VALIDATION_SUBJECT = f"Votre code de validation pour « {TITLE} »"
CARRIERS = re.compile(r'(name="(?:csrf_token|token)" value=")[^"]*(")')


# --------------------------------------------------------------------------- SMTP server


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def marked_up_host(host: Any) -> Any:
    """The host, its démarche retitled with markup (the title goes into every mail)."""
    with Session(host.engine) as session, session.begin():
        demarche = session.exec(select(Demarche).where(Demarche.slug == DEMARCHE)).one()
        demarche.title = TITLE
    return host


def lookup(client: Any, tracking_code: str) -> Any:
    typed = {"email": TYPED, "tracking_code": tracking_code}
    return post(client, "/hors-compte/suivi", typed, follow_redirects=True)


def deliver(host: Any, port: int) -> DeliveryReport:
    transport = SmtpTransport("127.0.0.1", port, timeout=5)
    return deliver_due(host.engine, transport, host.now(), host.config.mail_sender)


def code_in(message: EmailMessage) -> str:
    code: str
    [code] = CODE_LINE.findall(body_text(message, "plain"))
    return code


def enter_code(client: Any, page: Any, code: str) -> Any:
    token = token_of(page.text)
    return post(client, "/hors-compte/validation", {"token": token, "code": code})


def opens_the_dossier(client: Any, response: Any, dossier_id: int) -> None:
    assert response.status_code == 303, response.text
    assert response.headers["Location"] == f"/dossiers/{dossier_id}"
    page = client.get(response.headers["Location"])
    assert page.status_code == 200, page.text


def outbox_rows(host: Any) -> list[OutboxMail]:
    with Session(host.engine) as session:
        return list(session.exec(select(OutboxMail).order_by(col(OutboxMail.id))))


def without_carriers(page: Any) -> tuple[int, str]:
    """Status and body, the per-request signed values (CSRF, challenge token) blanked."""
    return page.status_code, CARRIERS.sub(r"\1…\2", page.text)


# --------------------------------------------------------------------------- tests


def test_acknowledgment_mail_carries_the_grouped_tracking_code(
    marked_up_host: Any, client: Any, smtp: tuple[int, Collector]
) -> None:
    host = marked_up_host
    port, collector = smtp
    tracking = deposit(client, host, STORED)

    assert deliver(host, port) == DeliveryReport(sent=1)

    [envelope] = collector.envelopes
    assert envelope.rcpt_tos == [STORED]
    [ack] = collector.messages()
    grouped = format_tracking_code(tracking.code)
    assert "-" in grouped and grouped != tracking.code
    assert ack["To"] == STORED and TITLE in str(ack["Subject"])
    assert grouped in body_text(ack, "plain")
    assert "http://127.0.0.1:8765/hors-compte/suivi" in body_text(ack, "plain")
    html = body_text(ack, "html")
    assert grouped in html and ESCAPED_TITLE in html and "<b>voirie</b>" not in html


def test_validation_mail_read_back_from_smtp_opens_the_dossier(
    marked_up_host: Any, client: Any, smtp: tuple[int, Collector]
) -> None:
    host = marked_up_host
    port, collector = smtp
    tracking = deposit(client, host, STORED)
    deliver(host, port)
    [ack] = collector.messages()
    grouped = re.search(r"[^\s:]{4}(?:-[^\s:]{4})+", body_text(ack, "plain"))
    assert grouped is not None and grouped.group() == format_tracking_code(tracking.code)

    page = lookup(client, grouped.group())  # typed as the citizen reads it in the mail
    assert page.status_code == 200, page.text
    assert deliver(host, port) == DeliveryReport(sent=1)

    [validation] = collector.messages(VALIDATION_SUBJECT)
    assert collector.envelopes[-1].rcpt_tos == [STORED]  # the stored address, not TYPED
    assert validation["To"] == STORED
    assert validation["Subject"] == VALIDATION_SUBJECT  # not escaped: a header, not HTML
    assert validation["From"] == host.config.mail_sender
    assert validation.get_content_type() == "multipart/alternative"
    text = body_text(validation, "plain")
    code = code_in(validation)
    assert f"« {TITLE} »" in text and "10 minutes" in text
    html = body_text(validation, "html")
    assert code in html and ESCAPED_TITLE in html
    assert "<b>voirie</b>" not in html and '"trottoirs"' not in html
    assert code not in page.text  # the code is only in the mail

    opens_the_dossier(client, enter_code(client, page, code), tracking.dossier_id)
    again = enter_code(client, page, code)  # a double click: this browser has the access
    assert again.status_code == 303 and again.headers["Location"].endswith(
        f"/dossiers/{tracking.dossier_id}"
    )
    elsewhere = browser(client)  # single use: another browser is refused
    assert enter_code(elsewhere, page, code).status_code == 400


def test_smtp_down_same_page_mail_kept_then_delivered_once(
    host: Any, client: Any, clock: Any
) -> None:
    port = free_port()  # nothing listens there yet: SMTP is down
    tracking = deposit(client, host, STORED)

    down_page = lookup(client, tracking.code)
    report = deliver(host, port)

    assert report == DeliveryReport(sent=0, failed=2)  # acknowledgment and validation
    for row in outbox_rows(host):
        assert row.sent_at is None and row.attempts == 1
        assert row.last_error is not None and "ConnectionRefusedError" in row.last_error
        assert row.next_attempt_at == clock() + FIRST_RETRY_DELAY
    queued_at = clock()

    controller, collector = start_smtp(port)
    try:
        clock.advance(seconds=FIRST_RETRY_DELAY.total_seconds() - 1)
        assert deliver(host, port) == DeliveryReport()  # still in backoff
        clock.advance(seconds=1)
        assert deliver(host, port) == DeliveryReport(sent=2)
        clock.advance(minutes=1)
        assert deliver(host, port) == DeliveryReport()  # nothing left, nothing twice

        [validation] = collector.messages("Votre code de validation")
        assert validation["To"] == STORED
        assert len(collector.envelopes) == 2
        assert all(row.sent_at == queued_at + FIRST_RETRY_DELAY for row in outbox_rows(host))
        assert all(row.last_error is None for row in outbox_rows(host))

        # 90 s after the lookup, well within the 10 minutes: the code works.
        assert clock() - queued_at < timedelta(minutes=10)
        opens_the_dossier(
            client, enter_code(client, down_page, code_in(validation)), tracking.dossier_id
        )

        up_page = lookup(client, tracking.code)  # SMTP up now: the very same page
        assert deliver(host, port) == DeliveryReport(sent=1)
    finally:
        controller.stop()
    assert without_carriers(down_page) == without_carriers(up_page)
    assert down_page.status_code == 200
