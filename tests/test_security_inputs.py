"""Issue 8, findings 8 to 10, on SQLite and PostgreSQL where a database is involved:

* 8: email domains are compared per IDNA 2008 / UTS 46, without transitional mapping;
* 9: a third-party tracking code the lookup could never find is refused at deposit;
* 10: the receipt fragment shows the tracking code to the depositing session only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest
from conftest import post
from lookup_helpers import ANSWERS, deposit, lookup, validation_mails
from sqlmodel import Session, select

from opencrm_horscompte.base.emails import NOT_ALLOWED, InvalidEmail, email_key, normalize_email
from opencrm_horscompte.base.limits import REPEAT_WINDOW
from opencrm_horscompte.base.models import TrackingCode
from opencrm_horscompte.hookspecs import host as host_specs
from opencrm_horscompte.hookspecs.host import Request, hookimpl
from opencrm_horscompte.host_kit.refhost import dossiers
from opencrm_horscompte.host_kit.refhost.models import Demarche, Dossier
from opencrm_horscompte.tracking.receipt import RECEIPT_CLAIM_WINDOW, receipt_fragments

# --------------------------------------------------------------------------- finding 8


def key(address: str) -> str:
    return email_key(normalize_email(address))


@pytest.mark.parametrize(
    ("unicode_domain", "ascii_2003_twin", "ace"),
    [("faß.de", "fass.de", "xn--fa-hia.de"), ("\u03c2.gr", "\u03c3.gr", "xn--3xa.gr")],
)
def test_domains_follow_idna_2008_without_transitional_mapping(
    unicode_domain: str, ascii_2003_twin: str, ace: str
) -> None:
    assert key(f"lea@{unicode_domain}") != key(f"lea@{ascii_2003_twin}")
    assert key(f"lea@{unicode_domain}") == key(f"lea@{ace}") == f"lea@{ace}"


def test_a_dossier_filed_under_an_eszett_domain_is_found_under_its_own_name_only(
    client: Any, host: Any, clock: Any
) -> None:
    deposited = deposit(client, host, email="lea@faß.de")
    for typed, found in (("lea@fass.de", False), ("lea@xn--fa-hia.de", True), ("lea@FAß.de", True)):
        clock.advance(seconds=REPEAT_WINDOW.total_seconds() + 1)  # not a repeated lookup
        before = len(validation_mails(host))
        assert lookup(client, typed, deposited.code).status_code == 200
        assert len(validation_mails(host)) == before + found, typed


ENCODED_WORD_ADDRESSES = [
    "=?utf-8?b?dmljdGltQGV2aWwuZXhhbXBsZSwgeA==?=@x.fr",
    "=?utf-8?b?YQALYg==?=@x.fr",
    "=?utf-8?b?YQ0KQmNjOiB2aWN0aW1AZXZpbC5leGFtcGxl?=@x.fr",
    "=?utf-8?q?l=C3=A9a?=@exemple.fr",
]


@pytest.mark.parametrize("address", ENCODED_WORD_ADDRESSES)
def test_an_encoded_word_in_an_address_is_refused_with_a_message(
    client: Any, host: Any, address: str
) -> None:
    """Mail libraries decode RFC 2047 encoded-words even inside an address, into a second
    recipient or a control character: refused on every form that takes an address, with
    the field's message, and nothing stored."""
    with pytest.raises(InvalidEmail) as refused:
        normalize_email(address)
    assert refused.value.message == NOT_ALLOWED
    start = "/demarches/signalement-voirie/nouveau"
    client.get(start)
    identity = {"last_name": "Dupont", "first_name": "Léa", "email": address}
    response = post(client, start, identity)
    assert response.status_code == 400
    assert "caractères non autorisés" in response.text
    answered = lookup(client, address, "ABCD-EFGH-JKLM")
    assert answered.status_code == 400 and "caractères non autorisés" in answered.text
    with Session(host.engine) as session:
        assert session.exec(select(Dossier)).all() == []


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b"])
def test_a_line_or_paragraph_separator_in_a_name_is_refused(client: Any, separator: str) -> None:
    start = "/demarches/signalement-voirie/nouveau"
    client.get(start)
    identity = {"last_name": "Dupont", "first_name": f"Léa{separator}Bcc", "email": "l@x.fr"}
    response = post(client, start, identity)
    assert response.status_code == 400 and "caractères non autorisés" in response.text


def test_equals_and_question_marks_apart_stay_allowed() -> None:
    assert normalize_email("a=b?c@exemple.fr") == "a=b?c@exemple.fr"
    assert normalize_email("x?=y=z@exemple.fr") == "x?=y=z@exemple.fr"  # "?=" alone


# --------------------------------------------------------------------------- finding 9


class FixedCode:
    def __init__(self, code: str) -> None:
        self.code = code

    @hookimpl
    def horscompte_generate_tracking_code(self, host: Any, settings: Any) -> str:
        return self.code


def _draft(host: Any) -> Dossier:
    with Session(host.engine) as session:
        demarche = session.exec(select(Demarche)).first()
    assert demarche is not None
    identity = {"email": "lea.dupont@exemple.fr", "first_name": "Léa", "last_name": "Dupont"}
    return dossiers.create_draft(host, demarche, identity, None)


@pytest.mark.parametrize(
    "candidate",
    [
        "2026-ABC-123",
        "abcuvw",
        "AB CD",
        "\uff21\uff22\uff23\uff242345",
        "<b>AB</b>",
        "ABCD\u00ad2345",
        "ABC\u2013D234",
    ],
)
def test_a_candidate_the_lookup_could_never_find_fails_the_deposit(
    host_factory: Any, candidate: str
) -> None:
    host = host_factory(extra_plugins=[FixedCode(candidate)])
    draft = _draft(host)
    with pytest.raises(ValueError, match="never find it"):
        dossiers.deposit(host, draft.draft_key, ANSWERS)
    with Session(host.engine) as session:
        assert list(session.exec(select(TrackingCode))) == []


def test_a_findable_third_party_code_is_kept_and_found(host_factory: Any) -> None:
    host = host_factory(extra_plugins=[FixedCode("ABCD2345")])
    from opencrm_horscompte.host_kit.refhost.app import create_app

    client = create_app(host).test_client()
    deposited = deposit(client, host)
    assert deposited.code == "ABCD2345"
    lookup(client, deposited.email, " ABCD 2345 ")  # typed loosely: still found
    assert len(validation_mails(host)) == 1


# --------------------------------------------------------------------------- finding 10


def _dossier(host: Any, dossier_id: int) -> host_specs.Dossier:
    """The stored dossier, as the plugin reads it (stored: its ``id`` is set)."""
    with Session(host.engine, expire_on_commit=False) as session:
        found = session.get(Dossier, dossier_id)
        assert found is not None
        return cast(host_specs.Dossier, found)


def test_the_receipt_shows_the_code_to_the_depositing_session_only(
    client: Any, host: Any, clock: Any
) -> None:
    deposited = deposit(client, host)  # the depositor's redirect to the receipt claims it
    dossier = _dossier(host, deposited.dossier_id)
    with client.session_transaction() as session:
        depositor = dict(session)
    shown = receipt_fragments(host, Request("GET", "/recu", session=depositor), dossier)
    assert 'data-testid="tracking-code"' in shown[0]
    stranger = receipt_fragments(host, Request("GET", "/recu", session={}), dossier)
    assert 'data-testid="tracking-code"' not in stranger[0]
    forged = {"horscompte.receipts": {str(deposited.dossier_id): "guess"}}
    assert (
        "tracking-code"
        not in receipt_fragments(host, Request("GET", "/", session=forged), dossier)[0]
    )
    clock.advance(days=3)  # later views from the depositing browser still show it
    assert (
        "tracking-code"
        in receipt_fragments(host, Request("GET", "/", session=depositor), dossier)[0]
    )


def test_a_receipt_never_claimed_in_time_shows_no_code(client: Any, host: Any, clock: Any) -> None:
    start = "/demarches/signalement-voirie/nouveau"
    client.get(start)
    identity = {"last_name": "Dupont", "first_name": "Léa", "email": "lea.dupont@exemple.fr"}
    form_url = post(client, start, identity).headers["Location"]
    response = post(client, form_url, {**ANSWERS, "action": "deposit"})
    assert response.status_code == 303  # the receipt is not opened now
    clock.advance(seconds=RECEIPT_CLAIM_WINDOW.total_seconds() + 1)
    page = client.get(response.headers["Location"])
    assert page.status_code == 200
    assert 'data-testid="tracking-code"' not in page.text
    assert "envoyé par courriel" in page.text


def test_the_receipt_claim_window_is_minutes() -> None:
    assert timedelta(0) < RECEIPT_CLAIM_WINDOW <= timedelta(minutes=10)
