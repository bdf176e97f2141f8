"""Finding a dossier again without an account, through the reference host over HTTP, on
SQLite and PostgreSQL: email + tracking code, then a validation code by mail, then a grant
to that one dossier. Attack paths: expiry, replay, brute force, tokens, enumeration, input.
"""

from __future__ import annotations

import base64
import email
import email.policy
import html
import json
import logging
import re
import socket
import string
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, ClassVar

import jinja2
import pytest
from aiosmtpd.controller import Controller
from conftest import TEST_SECRET_KEYS, browser, new_client, post, recorded_statements
from lookup_helpers import (
    EMAIL,
    FORGOTTEN,
    LOOKUP,
    STRANGER,
    VALIDATE,
    Deposited,
    change_settings,
    code_in,
    count,
    counts,
    deposit,
    last_code,
    lookup,
    mails,
    resend,
    rows,
    start,
    submit,
    token_of,
    validation_mails,
    without_hidden_values,
    wrong,
)
from sqlmodel import Session

from opencrm_horscompte.base import limits, tokens
from opencrm_horscompte.base.models import AuditRecord, Challenge, FailureGuard, ThrottleCounter
from opencrm_horscompte.hookspecs.host import MailTemplate, hookimpl
from opencrm_horscompte.host_kit.refhost.app import create_app
from opencrm_horscompte.host_kit.refhost.host import TEMPLATES, HostConfig, ReferenceHost
from opencrm_horscompte.host_kit.refhost.models import Demarche, HostSession
from opencrm_horscompte.host_kit.refhost.outbox import OutboxMail, SmtpTransport, deliver_due
from opencrm_horscompte.identity import step as identity
from opencrm_horscompte.lookup.validation import backoff
from opencrm_horscompte.tracking.codes import format_tracking_code

SENDER = "Ville de Démoville <ne-pas-repondre@demoville.invalid>"
STATE = (Challenge, FailureGuard, ThrottleCounter, OutboxMail, AuditRecord)
CODE_EXPIRED = "Ce code a expiré"
USED = "Ce code a déjà servi"
REPLACED = "Un code plus récent"
ALREADY_RESENT = "Un nouveau code vous a déjà été envoyé"
EXHAUSTED = "trop d&#39;essais erronés"
WRONG = "n&#39;est pas le bon"
EXPIRED_REQUEST = "Votre demande a expiré"


def guard_failures(host: Any) -> list[int]:
    return sorted(guard.failures for guard in rows(host, FailureGuard))


def field_error(page: str, field: str) -> str:
    """The message shown next to ``field`` (empty when there is none)."""
    match = re.search(rf'id="{field}-error"[^>]*>([^<]+)<', page)
    return match.group(1).strip() if match else ""


# --------------------------------------------------------------------------- happy path


def test_right_pair_typed_loosely_opens_that_dossier_in_that_browser_only(
    client: Any, host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = deposit(client, host)
    second = deposit(client, host)  # same email, another dossier
    citizen = browser(client)
    typed_code = format_tracking_code(first.code).replace("-", " ")
    page = lookup(citizen, "  LEA.Dupont@EXEMPLE.fr ", f" {typed_code} ")
    assert page.status_code == 200
    assert "un code de validation vient d&#39;être envoyé" in page.text
    assert "Il expire dans 10 minutes" in page.text
    [mail] = validation_mails(host)
    assert mail.recipient == EMAIL  # the stored address, not the typed variant
    code = code_in(mail.text)
    response = submit(citizen, token_of(page.text), code)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/dossiers/{first.dossier_id}"
    assert code not in page.text and code not in caplog.text  # nor in the token: not in page
    assert all(code not in str(challenge.code_hmac) for challenge in rows(host, Challenge))
    dossier_page = citizen.get(response.headers["Location"])
    assert dossier_page.status_code == 200 and "Lampadaire éteint" in dossier_page.text
    assert browser(client).get(f"/dossiers/{first.dossier_id}").status_code == 403
    assert citizen.get(f"/dossiers/{second.dossier_id}").status_code == 403


def test_code_typed_in_lower_case_without_dashes_when_the_policy_ignores_case(
    client: Any, host: Any
) -> None:
    change_settings(host, tracking_code_lowercase=False, tracking_code_special=False)
    deposited = deposit(client, host)
    assert deposited.code != deposited.code.lower()
    token = start(client, EMAIL.upper(), deposited.code.lower())
    assert len(validation_mails(host)) == 1
    assert submit(client, token, last_code(host)).status_code == 303


def test_code_in_the_wrong_case_does_not_match_when_the_policy_mixes_cases(
    client: Any, host: Any
) -> None:
    deposited = deposit(client, host)  # default policy: upper and lower case both used
    page = lookup(client, EMAIL, deposited.code.swapcase())
    assert page.status_code == 200  # the same neutral page...
    assert validation_mails(host) == []  # ...but nothing was sent


# --------------------------------------------------------------------------- the mail


def test_reloading_the_code_page_sends_no_second_code(client: Any, host: Any) -> None:
    """The lookup's POST redirects to the code entry page (post/redirect/get). Before, a
    reload ran the lookup again: a second mail, and the first code became wrong."""
    deposited = deposit(client, host)
    typed = {"email": EMAIL, "tracking_code": deposited.code}
    posted = post(client, LOOKUP, typed)
    assert posted.status_code == 303 and posted.headers["Location"] == VALIDATE
    first = client.get(VALIDATE)
    again = client.get(VALIDATE)  # the reload, or Back from a later page
    assert first.status_code == again.status_code == 200
    assert token_of(first.text) == token_of(again.text)
    assert "un code de validation vient d'être" in html.unescape(again.text)
    [mail] = validation_mails(host)
    assert submit(client, token_of(again.text), code_in(mail.text)).status_code == 303
    back = client.get(VALIDATE)  # Back from the dossier: not the form of a spent code
    assert back.status_code == 303 and back.headers["Location"] == LOOKUP


def test_the_code_page_without_a_lookup_goes_to_the_lookup_form(client: Any) -> None:
    response = client.get(VALIDATE)
    assert response.status_code == 303 and response.headers["Location"] == LOOKUP


def test_a_resend_redirects_to_the_page_of_the_new_code(client: Any, host: Any, clock: Any) -> None:
    deposited = deposit(client, host)
    token = start(client, EMAIL, deposited.code)
    clock.advance(minutes=2)
    form = {"token": token, "code": "", "action": "resend"}
    posted = post(client, VALIDATE, form)
    assert posted.status_code == 303 and posted.headers["Location"] == VALIDATE
    page = client.get(VALIDATE)
    assert "l'ancien ne sert plus" in html.unescape(page.text)
    client.get(VALIDATE)  # a reload resends nothing
    _first, second = validation_mails(host)
    assert submit(client, token_of(page.text), code_in(second.text)).status_code == 303


def test_a_dossier_out_of_reach_says_how_to_get_in(client: Any, host: Any) -> None:
    """The 403 said only "Vous n'avez pas accès à ce dossier" after a grant ended."""
    deposited = deposit(client, host)
    page = browser(client).get(f"/dossiers/{deposited.dossier_id}")
    assert page.status_code == 403
    assert f'<a href="{LOOKUP}">Suivre un dossier</a>' in page.text
    assert '<a href="/connexion?suivant=' in page.text


class PlainValidationMail:
    """A plugin contributing a validation mail template, chosen in the settings."""

    template = MailTemplate(
        "test.plain", "Modèle sobre (tests)", "test/plain_subject.txt", "test/plain.txt",
        "test/plain.html",
    )  # fmt: skip
    sources: ClassVar[dict[str, str]] = {
        "test/plain_subject.txt": "[Test] Accès à « {{ demarche_title }} »",
        "test/plain.txt": "Modèle sobre.\n\n{{ code }}\n\n"
        "{{ expiry_minutes }} min, {{ lookup_url }}\n",
        "test/plain.html": "<p>Modèle sobre : {{ demarche_title }}</p><p>{{ code }}</p>",
    }

    @hookimpl
    def horscompte_validation_mail_templates(self, host: Any) -> list[MailTemplate]:
        return [self.template]


def add_demarche(host: Any, slug: str, title: str) -> None:
    with Session(host.engine) as session, session.begin():
        session.add(Demarche(slug=slug, title=title, description="", open_without_account=True))


def test_mail_uses_the_template_chosen_in_the_settings(host_factory: Any) -> None:
    plugin = PlainValidationMail()
    host = host_factory(extra_plugins=[plugin])
    host.template_loader = jinja2.ChoiceLoader([jinja2.DictLoader(plugin.sources), TEMPLATES])
    change_settings(host, validation_mail_template=plugin.template.key)
    add_demarche(host, "salle-test", "Salle <b>polyvalente</b>")
    client = create_app(host).test_client()
    deposited = deposit(client, host, slug="salle-test")
    token = start(client, "Lea.Dupont@Exemple.FR", deposited.code)
    [mail] = validation_mails(host)
    assert mail.recipient == EMAIL
    assert mail.subject == "[Test] Accès à « Salle <b>polyvalente</b> »"
    assert mail.text.startswith("Modèle sobre.") and "10 min, http://127.0.0.1:8765/" in mail.text
    assert mail.html is not None
    assert "Modèle sobre : Salle &lt;b&gt;polyvalente&lt;/b&gt;" in mail.html
    assert "<b>" not in mail.html
    assert submit(client, token, code_in(mail.text)).status_code == 303


class BrokenValidationMail(PlainValidationMail):
    """An extension whose template no longer renders (here: a variable nobody passes)."""

    sources: ClassVar[dict[str, str]] = {
        **PlainValidationMail.sources,
        "test/plain.txt": "{{ code }} pour le dossier {{ dossier_number.missing }}\n",
    }


def test_a_chosen_template_that_breaks_falls_back_to_the_default(
    host_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Chosen while it worked, broken since (the extension changed): every lookup still
    mails a code, in the default template, and the log says why (it was a 500 for every
    lookup, matching or not)."""
    plugin = BrokenValidationMail()
    host = host_factory(extra_plugins=[plugin])
    host.template_loader = jinja2.ChoiceLoader([jinja2.DictLoader(plugin.sources), TEMPLATES])
    change_settings(host, validation_mail_template=plugin.template.key)
    client = create_app(host).test_client()
    deposited = deposit(client, host)
    with caplog.at_level(logging.ERROR, logger="opencrm_horscompte.lookup.start"):
        assert lookup(client, EMAIL, "AAAA-BBBB-CCCC").status_code == 200  # a decoy's too
        token = start(client, EMAIL, deposited.code)
    [mail] = validation_mails(host)
    assert not mail.subject.startswith("[Test]") and "Modèle sobre" not in mail.text
    assert submit(client, token, code_in(mail.text)).status_code == 303
    assert [r.getMessage() for r in caplog.records] == [
        "validation mail template 'test.plain' failed; the default template was used instead"
    ] * 2


def test_default_mail_escapes_the_html_part_only(client: Any, host: Any) -> None:
    add_demarche(host, "salle-test", "Salle <b>polyvalente</b>")
    deposited = deposit(client, host, slug="salle-test")
    start(client, EMAIL, deposited.code)
    [mail] = validation_mails(host)
    assert "« Salle <b>polyvalente</b> »" in mail.text and "<b>" in mail.subject
    assert mail.html is not None and "<b>" not in mail.html
    assert "Salle &lt;b&gt;polyvalente&lt;/b&gt;" in mail.html
    assert code_in(mail.text) in mail.html


# --------------------------------------------------------------------------- expiry


@pytest.fixture
def deposited(client: Any, host: Any) -> Deposited:
    return deposit(client, host)


def test_code_is_valid_one_second_before_it_expires(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    token = start(client, EMAIL, deposited.code)
    clock.advance(minutes=10, seconds=-1)
    assert submit(client, token, last_code(host)).status_code == 303


def test_code_is_refused_at_its_expiry_and_after(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    token = start(client, EMAIL, deposited.code)
    code = last_code(host)
    clock.advance(minutes=10)
    response = submit(client, token, code)
    assert response.status_code == 400 and CODE_EXPIRED in response.text
    clock.advance(hours=1)
    response = submit(client, token_of(response.text), code)
    assert response.status_code == 400 and CODE_EXPIRED in response.text
    assert browser(client).get(f"/dossiers/{deposited.dossier_id}").status_code == 403
    # An expired code is not a wrong guess (PostgreSQL locks the guard with 0 failures).
    assert [guard.failures for guard in rows(host, FailureGuard)] in ([], [0])


def test_expiry_follows_the_settings(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    change_settings(host, validation_code_expiry_minutes=1)
    page = lookup(client, EMAIL, deposited.code)
    assert "Il expire dans 1 minute" in page.text
    clock.advance(seconds=60)
    assert submit(client, token_of(page.text), last_code(host)).status_code == 400
    token = start(client, EMAIL, deposited.code)
    assert "dans 1 minute" in validation_mails(host)[-1].text
    clock.advance(seconds=59)
    assert submit(client, token, last_code(host)).status_code == 303


# --------------------------------------------------------------------------- replay


def test_a_code_opens_the_dossier_once(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    token = start(client, EMAIL, deposited.code)
    code = last_code(host)
    assert submit(client, token, code).status_code == 303
    again = submit(browser(client), token, code)
    assert again.status_code == 400 and USED in again.text
    fresh = start(browser(client), EMAIL, deposited.code)
    assert last_code(host) != code  # (a 1 in 10^6 draw would make this test meaningless)
    reused = submit(client, fresh, code)
    assert reused.status_code == 400 and WRONG in reused.text


# --------------------------------------------------------------------------- brute force


def test_five_wrong_codes_kill_the_code(client: Any, host: Any, deposited: Deposited) -> None:
    token = start(client, EMAIL, deposited.code)
    code = last_code(host)
    for tries in range(1, limits.ATTEMPTS_PER_CODE + 1):
        response = submit(client, token, wrong(code))
        assert response.status_code == 400 and WRONG in response.text
        assert 'id="code-error"' in response.text
        text = html.unescape(response.text)
        left = limits.ATTEMPTS_PER_CODE - tries
        if left:  # each wrong try says how many remain; the last one says it was the last
            essais = "essai" if left == 1 else "essais"
            assert f"ce code accepte encore {left} {essais}." in text
        else:
            assert "c'était le dernier essai : il ne sert plus" in text
    response = submit(client, token, code)
    assert response.status_code == 400 and EXHAUSTED in response.text
    assert guard_failures(host) == [limits.ATTEMPTS_PER_CODE]
    assert client.get(f"/dossiers/{deposited.dossier_id}").status_code == 403


def test_failures_survive_a_resend_then_backoff_and_success_resets(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    assert limits.BACKOFF_AFTER_FAILURES == limits.ATTEMPTS_PER_CODE  # the scenario below
    token = start(client, EMAIL, deposited.code)
    for _ in range(limits.BACKOFF_AFTER_FAILURES):
        assert submit(client, token, wrong(last_code(host))).status_code == 400
    clock.advance(seconds=61)
    token = token_of(resend(client, token).text)
    assert guard_failures(host) == [limits.BACKOFF_AFTER_FAILURES]  # not reset by the resend
    code = last_code(host)
    assert submit(client, token, wrong(code)).status_code == 400
    assert guard_failures(host) == [limits.BACKOFF_AFTER_FAILURES + 1]
    waiting = submit(client, token, code)  # the right code, inside the backoff
    assert waiting.status_code == 429 and "patientez" in waiting.text
    assert 'id="code-error"' in waiting.text
    clock.advance(seconds=backoff(limits.BACKOFF_AFTER_FAILURES + 1).total_seconds())
    assert submit(client, token, code).status_code == 303
    assert rows(host, FailureGuard) == []


def test_lock_after_many_failures_then_a_new_code_works_once_it_passes(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    assert limits.LOCK_AFTER_FAILURES < 100
    change_settings(host, validation_code_expiry_minutes=60)
    token = start(client, EMAIL, deposited.code)
    created, used = clock(), 0
    for failure in range(1, limits.LOCK_AFTER_FAILURES + 1):
        if used == limits.ATTEMPTS_PER_CODE or clock() - created > timedelta(minutes=59):
            ready = created + limits.RESEND_COOLDOWN - clock()
            clock.advance(seconds=max(ready.total_seconds(), 0))
            page = resend(client, token)
            assert page.status_code == 200, page.text
            token, created, used = token_of(page.text), clock(), 0
        response = submit(client, token, wrong(last_code(host)))
        assert response.status_code == 400 and WRONG in response.text, failure
        token, used = token_of(response.text), used + 1
        if failure < limits.LOCK_AFTER_FAILURES:
            clock.advance(seconds=backoff(failure).total_seconds() + 1)
    assert guard_failures(host) == [limits.LOCK_AFTER_FAILURES]
    fresh = start(client, EMAIL, deposited.code)  # a new code while locked
    locked = submit(client, fresh, last_code(host))
    assert locked.status_code == 429 and "bloquée" in locked.text
    clock.advance(seconds=limits.LOCK_DURATION.total_seconds())
    token = start(client, EMAIL, deposited.code)
    assert submit(client, token, last_code(host)).status_code == 303
    assert rows(host, FailureGuard) == []


# --------------------------------------------------------------------------- resend


def test_resend_within_the_cooldown_is_refused_and_sends_nothing(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    token = start(client, EMAIL, deposited.code)
    clock.advance(seconds=59)
    response = resend(client, token)
    assert response.status_code == 429
    assert "patientez 2 secondes avant d&#39;en demander un autre" in response.text
    assert "Aucun nouveau code n'a été envoyé" in html.unescape(response.text)
    assert "pas pu être vérifié" not in response.text
    assert len(validation_mails(host)) == 1
    assert submit(client, token, last_code(host)).status_code == 303  # still the live code


def test_resend_after_the_cooldown_mails_a_new_code_and_kills_the_old(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    token = start(client, EMAIL, deposited.code)
    old = last_code(host)
    clock.advance(seconds=60)
    response = resend(client, token)
    assert response.status_code == 200 and "l&#39;ancien ne sert plus" in response.text
    _, second = validation_mails(host)
    assert second.recipient == EMAIL and code_in(second.text) != old
    dead = submit(client, token, old)
    assert dead.status_code == 400 and REPLACED in dead.text
    assert submit(client, token_of(response.text), code_in(second.text)).status_code == 303


def _resend_until_capped(client: Any, host: Any, clock: Any, deposited: Deposited) -> list[Any]:
    """Look up, then resend every 61 s until one resend past the hourly cap: the pages."""
    token = start(client, EMAIL, deposited.code)
    pages = []
    for _ in range(limits.LOOKUP_DOSSIER_MAILS.limit):
        clock.advance(seconds=61)
        page = resend(client, token)
        assert page.status_code == 200
        pages.append(page)
        token = token_of(page.text)
    return pages


def test_resend_past_the_hourly_cap_sends_nothing_but_looks_the_same(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    pages = _resend_until_capped(client, host, clock, deposited)
    assert len(validation_mails(host)) == limits.LOOKUP_DOSSIER_MAILS.limit  # lookup + 4
    assert without_hidden_values(pages[-1].text) == without_hidden_values(pages[-2].text)
    clock.advance(hours=1)
    token = start(client, EMAIL, deposited.code)  # starting again works after the hour
    assert len(validation_mails(host)) == limits.LOOKUP_DOSSIER_MAILS.limit + 1
    assert submit(client, token, last_code(host)).status_code == 303


def test_resend_works_again_once_the_hourly_cap_window_has_passed(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    pages = _resend_until_capped(client, host, clock, deposited)
    clock.advance(hours=1)
    page = resend(client, token_of(pages[-1].text))
    assert len(validation_mails(host)) == limits.LOOKUP_DOSSIER_MAILS.limit + 1
    assert submit(client, token_of(page.text), last_code(host)).status_code == 303


def test_resend_cooldown_cannot_be_skipped_with_an_older_page(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    first_page_token = start(client, EMAIL, deposited.code)
    clock.advance(seconds=61)
    assert resend(client, first_page_token).status_code == 200
    clock.advance(seconds=1)
    # The browser's back button, then "resend": that page's code was replaced, so it
    # can neither wait for nor skip the cooldown; it mails nothing and leads to the newer
    # code's page, which tells that code was already sent (it said "start again").
    newest = token_of(client.get(VALIDATE).text)
    again = resend(client, first_page_token)
    assert again.status_code == 200 and ALREADY_RESENT in again.text
    assert token_of(again.text) == newest
    assert len(validation_mails(host)) == 2


def test_a_double_click_on_resend_mails_once_and_shows_the_new_code_page(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    """The second click's page said "Un code plus récent vous a été envoyé : recommencez la
    recherche" though the first click's code was on its way (outside test finding)."""
    token = start(client, EMAIL, deposited.code)
    clock.advance(seconds=61)
    typed = {"token": token, "code": "", "action": "resend"}
    first, second = post(client, VALIDATE, typed), post(client, VALIDATE, typed)
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"] == VALIDATE
    page = client.get(VALIDATE)
    assert ALREADY_RESENT in page.text and token_of(page.text) != token
    assert len(validation_mails(host)) == 2
    assert submit(client, token_of(page.text), last_code(host)).status_code == 303


def test_a_double_click_on_the_right_code_leads_to_the_dossier_both_times(
    client: Any, host: Any, deposited: Deposited
) -> None:
    token = start(client, EMAIL, deposited.code)
    code = last_code(host)
    first, second = submit(client, token, code), submit(client, token, code)
    assert first.status_code == second.status_code == 303
    assert second.headers["Location"] == first.headers["Location"]
    stranger = new_client(host)  # the grant is this browser's: another one is told "used"
    used = submit(stranger, token, code)
    assert used.status_code == 400 and USED in used.text


def test_a_spent_code_page_can_not_mail_a_new_code(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    """Its resend mailed a new code (verify refused it as "used")."""
    token = start(client, EMAIL, deposited.code)
    assert submit(client, token, last_code(host)).status_code == 303
    clock.advance(seconds=61)
    before = counts(host, *STATE)
    refused = resend(client, token)
    assert refused.status_code == 400 and USED in refused.text
    assert counts(host, *STATE) == before and len(validation_mails(host)) == 1


def test_an_older_code_typed_after_a_resend_shows_the_newer_code_page(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    """The code of the first mail, typed on the first page after a resend from another
    tab: the newer code's page, told to use the last mail (it said "start again")."""
    token = start(client, EMAIL, deposited.code)
    first_code = last_code(host)
    clock.advance(seconds=61)
    newer = token_of(resend(client, token).text)
    page = submit(client, token, first_code)
    assert page.status_code == 400 and token_of(page.text) == newer
    assert "Saisissez le code du dernier courriel reçu" in page.text
    assert submit(client, newer, last_code(host)).status_code == 303


# --------------------------------------------------------------------------- tokens


def _forged_payload(token: str, payload: dict[str, int]) -> str:
    _, timestamp, signature = token.split(".")
    encoded = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode())
    return f"{encoded.decode().rstrip('=')}.{timestamp}.{signature}"


def _flip_inside(token: str) -> str:
    position = len(token) - 10  # inside the signature, away from its padding bits
    replacement = "A" if token[position] != "A" else "B"
    return token[:position] + replacement + token[position + 1 :]


BASE64_URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def _signature_spelt_otherwise(token: str) -> str:
    """``token`` with its signature's last character changed in a bit base64 leaves unused
    (a 20-byte signature is 27 characters: 2 spare bits), so it decodes to the same bytes."""
    assert (6 * len(token.rpartition(".")[2])) % 8 >= 1
    last = BASE64_URL.index(token[-1])
    return token[:-1] + BASE64_URL[last ^ 1]


def _bad_tokens(host: Any, token: str, challenge_id: int) -> dict[str, str]:
    unknown_key_host = SimpleNamespace(secret_keys=[b"unknown-key-" + b"9" * 20], now=host.now)
    payload = {"challenge": challenge_id}
    return {
        "tampered signature": _flip_inside(token),
        "signature spelt otherwise": _signature_spelt_otherwise(token),
        "tampered payload": _forged_payload(token, {"challenge": challenge_id + 1}),
        "truncated": token[: len(token) // 2],
        "empty": "",
        "oversized": token * 40,
        "grant purpose": tokens.sign(host, "dossier-grant", payload),
        "identity purpose": tokens.sign(host, identity.DECLINE_PURPOSE, payload),
        "unknown key": tokens.sign(unknown_key_host, "challenge", payload),
    }


@pytest.mark.parametrize("action", ["verify", "resend"])
def test_bad_challenge_tokens_get_a_clean_400_and_change_nothing(
    client: Any, host: Any, clock: Any, deposited: Deposited, action: str
) -> None:
    token = start(client, EMAIL, deposited.code)
    code = last_code(host)
    [challenge] = rows(host, Challenge)
    assert challenge.id is not None
    clock.advance(seconds=61)  # so that a resend would be allowed
    before = counts(host, *STATE)
    for kind, bad in _bad_tokens(host, token, challenge.id).items():
        response = post(client, VALIDATE, {"token": bad, "code": code, "action": action})
        assert response.status_code == 400, kind
        assert EXPIRED_REQUEST in field_error(response.text, "email"), kind
    assert counts(host, *STATE) == before
    assert rows(host, Challenge)[0].attempts == 0
    assert submit(client, token, code).status_code == 303  # the real one still works


def test_expired_challenge_token_is_refused(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    change_settings(host, validation_code_expiry_minutes=60)
    token = start(client, EMAIL, deposited.code)
    clock.advance(seconds=limits.CHALLENGE_TOKEN_MAX_AGE.total_seconds() + 1)
    before = counts(host, *STATE)
    response = submit(client, token, last_code(host))
    assert response.status_code == 400 and EXPIRED_REQUEST in response.text
    assert counts(host, *STATE) == before


def test_post_without_or_with_a_wrong_csrf_token_is_refused(
    client: Any, host: Any, deposited: Deposited
) -> None:
    token = start(client, EMAIL, deposited.code)
    before = counts(host, *STATE)
    forms = [
        (LOOKUP, {"email": EMAIL, "tracking_code": deposited.code}),
        (VALIDATE, {"token": token, "code": last_code(host), "action": "verify"}),
        (FORGOTTEN, {"email": EMAIL}),
    ]
    for url, form in forms:
        for csrf in ({}, {"csrf_token": "forged"}):
            response = client.post(url, data={**form, **csrf})
            assert response.status_code == 400, url
            assert "Ce formulaire a expiré" in response.text
    assert counts(host, *STATE) == before


ROTATED_KEY = b"rotated-key-" + b"2" * 20


def _host_with_keys(host: Any, keys: list[bytes]) -> Any:
    config = HostConfig(database_url=str(host.config.database_url), secret_keys=keys)
    config.clock = host.config.clock
    return ReferenceHost(config)


def test_key_rotation_keeps_codes_and_grants_until_the_old_key_is_dropped(
    client: Any, host: Any, deposited: Deposited
) -> None:
    granted = start(client, EMAIL, deposited.code)
    assert submit(client, granted, last_code(host)).status_code == 303
    pending = start(client, EMAIL, deposited.code)  # made before the rotation
    pending_code = last_code(host)
    with client.session_transaction() as session:
        browser_state = dict(session)
    rotated = _host_with_keys(host, [*TEST_SECRET_KEYS, ROTATED_KEY])  # newest last
    dropped = _host_with_keys(host, [ROTATED_KEY])
    try:
        after = create_app(rotated).test_client()
        after.set_cookie("session", client.get_cookie("session").value)  # old cookie
        assert after.get(f"/dossiers/{deposited.dossier_id}").status_code == 200
        response = submit(after, pending, pending_code)
        assert response.status_code == 303
        still = start(client, EMAIL, deposited.code)
        still_code = last_code(host)

        gone = create_app(dropped).test_client()
        with gone.session_transaction() as session:
            session.update(browser_state)  # same grant, a session re-signed by the new key
        assert gone.get(f"/dossiers/{deposited.dossier_id}").status_code == 403
        refused = submit(gone, still, still_code)
        assert refused.status_code == 400 and EXPIRED_REQUEST in refused.text
    finally:
        rotated.engine.dispose()
        dropped.engine.dispose()


def test_grant_is_ignored_once_the_plugin_is_disabled(
    client: Any, host: Any, deposited: Deposited
) -> None:
    token = start(client, EMAIL, deposited.code)
    assert submit(client, token, last_code(host)).status_code == 303
    host.set_enabled("horscompte", False, actor="test")
    assert client.get(f"/dossiers/{deposited.dossier_id}").status_code == 403


def test_grant_expires(client: Any, host: Any, clock: Any, deposited: Deposited) -> None:
    token = start(client, EMAIL, deposited.code)
    assert submit(client, token, last_code(host)).status_code == 303
    url = f"/dossiers/{deposited.dossier_id}"
    clock.advance(seconds=limits.GRANT_MAX_AGE.total_seconds() - 1)
    assert client.get(url).status_code == 200
    clock.advance(seconds=2)
    assert client.get(url).status_code == 403


# --------------------------------------------------------------------------- enumeration


class SmtpDown:
    def send(self, message: Any) -> None:
        raise ConnectionRefusedError("SMTP is down")


def test_lookup_reveals_nothing_about_the_pair(client: Any, host: Any, clock: Any) -> None:
    mine = deposit(client, host)
    someone_elses = deposit(client, host, email="autre.personne@exemple.fr")
    lookup(client, STRANGER, mine.code)  # warm up: first-request work is not measured

    def observe(email_typed: str, code_typed: str) -> tuple[int, str, int]:
        with recorded_statements(host) as seen:
            response = lookup(client, email_typed, code_typed)
        return response.status_code, without_hidden_values(response.text), len(seen)

    unknown_email = observe("inconnu.total@exemple.fr", mine.code)
    wrong_code = observe(EMAIL, someone_elses.code)
    right_pair = observe(EMAIL, mine.code)
    mails_before = len(validation_mails(host))
    clock.advance(seconds=limits.REPEAT_WINDOW.total_seconds() + 1)  # not a double click
    smtp_down = observe(EMAIL, mine.code)
    assert deliver_due(host.engine, SmtpDown(), host.now(), SENDER).failed >= 1
    assert unknown_email == wrong_code == right_pair == smtp_down
    assert unknown_email[0] == 200 and unknown_email[2] >= 5  # the statements were seen
    queued = [mail for mail in validation_mails(host) if mail.sent_at is None]
    assert len(validation_mails(host)) == mails_before + 1
    assert queued and all(mail.last_error for mail in queued)


def test_lookup_past_the_email_limit_looks_the_same_and_sends_nothing(
    client: Any, host: Any, deposited: Deposited
) -> None:
    """Wrong lookups past the per-email limit look like any other and mail nothing; they
    do not suppress the owner's mail (issue 8, finding 3): only the dossier's own mail cap,
    which needs the tracking code, bounds a match."""
    first = lookup(client, EMAIL, "ABCD-EFGH-JKLM")
    for index in range(limits.LOOKUP_EMAIL.limit + 5):
        lookup(browser(client), EMAIL, f"ABCD-EFGH-JK{index:02d}")
    past = lookup(client, EMAIL, "ABCD-EFGH-JKLM")
    assert past.status_code == first.status_code == 200
    assert without_hidden_values(past.text) == without_hidden_values(first.text)
    assert validation_mails(host) == []
    refused = [
        json.loads(r.details_json)["scope"]
        for r in rows(host, AuditRecord)
        if r.kind == limits.THROTTLE_REFUSED
    ]
    assert refused.count(limits.LOOKUP_EMAIL.scope) == 1  # audited once, not per request
    owner = lookup(browser(client), EMAIL, deposited.code)  # the right pair, still mailed
    assert without_hidden_values(owner.text) == without_hidden_values(first.text)
    assert len(validation_mails(host)) == 1
    assert submit(client, token_of(owner.text), last_code(host)).status_code == 303


def test_a_stranger_with_the_email_only_cannot_spend_the_dossier_mail_cap(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    """Finding 3: a stranger's lookups (wrong codes) and resends from those pages never
    count against the dossier's hourly mail cap; the owner gets every code they ask for."""
    stranger = browser(client)
    for index in range(limits.LOOKUP_EMAIL.limit):
        token = start(stranger, EMAIL, f"ABCD-EFGH-JK{index:02d}")
        clock.advance(seconds=61)
        assert resend(stranger, token).status_code == 200
    for _ in range(limits.LOOKUP_DOSSIER_MAILS.limit):
        start(client, EMAIL, deposited.code)
        clock.advance(seconds=limits.REPEAT_WINDOW.total_seconds() + 1)
    assert len(validation_mails(host)) == limits.LOOKUP_DOSSIER_MAILS.limit


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Collector:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.contents.append(envelope.content)
        return "250 OK"


def test_smtp_down_keeps_the_code_queued_and_it_works_once_delivered(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    port = _free_port()
    transport = SmtpTransport("127.0.0.1", port, timeout=5)
    deliver_due(host.engine, transport, clock(), SENDER)  # the deposit acknowledgment
    token = start(client, EMAIL, deposited.code)
    assert deliver_due(host.engine, transport, clock(), SENDER).failed >= 1
    collector = Collector()
    controller = Controller(collector, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        clock.advance(seconds=60)
        assert deliver_due(host.engine, transport, clock(), SENDER).sent >= 1
    finally:
        controller.stop()
    received = [
        email.message_from_bytes(raw, policy=email.policy.default) for raw in collector.contents
    ]
    validation = [m for m in received if "code de validation" in str(m["Subject"])]
    assert len(validation) == 1 and validation[0]["To"] == EMAIL
    body = validation[0].get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert submit(client, token, code_in(text)).status_code == 303


# --------------------------------------------------------------------------- bad input

OVERSIZED = "a" * 4990 + "@exemple.fr"


@pytest.mark.parametrize(
    ("email_typed", "code_typed", "field"),
    [
        pytest.param(OVERSIZED, "ABCD-EFGH-JKLM", "email", id="oversized-email"),
        pytest.param(EMAIL, "A" * 5000, "tracking_code", id="oversized-code"),
        pytest.param("lea.dupont\x00@exemple.fr", "ABCD", "email", id="nul-email"),
        pytest.param(EMAIL, "ABCD\x00EFGH", "tracking_code", id="nul-code"),
        pytest.param(f"{EMAIL}\r\nBcc: victime@exemple.fr", "ABCD", "email", id="crlf"),
        pytest.param(f"{EMAIL}%0d%0aBcc:victime@exemple.fr", "ABCD", "email", id="pct-crlf"),
        pytest.param(EMAIL, "ABCD\r\nEFGH", "tracking_code", id="crlf-code"),
        pytest.param("\uff4cea.dupont@exemple.fr", "ABCD", "email", id="fullwidth"),
        pytest.param("' OR 1=1 --", "ABCD", "email", id="sql-email"),
        pytest.param("x' OR '1'='1@exemple.fr", "ABCD", "email", id="sql-email-2"),
        pytest.param("<script>alert(1)</script>@exemple.fr", "ABCD", "email", id="html"),
        pytest.param(EMAIL, "   ", "tracking_code", id="blank-code"),
        pytest.param("", "ABCD", "email", id="blank-email"),
    ],
)
def test_bad_lookup_input_is_refused_next_to_the_field_and_changes_nothing(
    client: Any, host: Any, deposited: Deposited, email_typed: str, code_typed: str, field: str
) -> None:
    client.get(LOOKUP)
    before = counts(host, *STATE)
    response = lookup(client, email_typed, code_typed)
    assert response.status_code == 400
    message = field_error(response.text, field)
    assert message and message[0].isupper() and " " in message  # a French sentence
    assert "<script>alert" not in response.text
    assert counts(host, *STATE) == before


@pytest.mark.parametrize("payload", ["' OR 1=1 --", "<script>alert(1)</script>"])
def test_payloads_in_the_tracking_code_are_refused_and_change_nothing(
    client: Any, host: Any, deposited: Deposited, payload: str
) -> None:
    before = counts(host, *STATE)
    response = lookup(client, EMAIL, payload)
    assert "<script>alert" not in response.text
    assert response.status_code == 400 and field_error(response.text, "tracking_code")
    assert counts(host, *STATE) == before


def test_lookalike_email_never_matches_the_real_address(
    client: Any, host: Any, deposited: Deposited
) -> None:
    cyrillic = EMAIL.replace("a", "\u0430", 1)  # a valid (internationalised) address
    unknown = lookup(client, STRANGER, deposited.code)
    lookalike = lookup(client, cyrillic, deposited.code)
    assert lookalike.status_code == unknown.status_code == 200
    assert without_hidden_values(lookalike.text) == without_hidden_values(unknown.text)
    assert validation_mails(host) == []


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("\uff11\uff12\uff13\uff14\uff15\uff16", id="fullwidth-digits"),
        pytest.param("1" * 5000, id="oversized"),
        pytest.param("123\x00456", id="nul"),
        pytest.param("' OR 1=1 --", id="sql"),
        pytest.param("<script>alert(1)</script>", id="html"),
        pytest.param("", id="empty"),
        pytest.param("123", id="too-short"),
        pytest.param("1234567", id="too-long"),
    ],
)
def test_bad_validation_code_is_refused_without_counting(
    client: Any, host: Any, deposited: Deposited, typed: str
) -> None:
    token = start(client, EMAIL, deposited.code)
    before = counts(host, *STATE)
    response = submit(client, token, typed)
    assert response.status_code == 400
    assert "Le code reçu par courriel compte 6 chiffres" in field_error(response.text, "code")
    assert "<script>alert" not in response.text
    assert counts(host, *STATE) == before
    assert rows(host, Challenge)[0].attempts == 0
    assert submit(client, token, last_code(host)).status_code == 303


def test_validation_code_typed_with_spaces_is_accepted(
    client: Any, host: Any, deposited: Deposited
) -> None:
    token = start(client, EMAIL, deposited.code)
    code = last_code(host)
    assert submit(client, token, f" {code[:3]} {code[3:]} ").status_code == 303


# --------------------------------------------------------------------------- forgotten code


def test_forgotten_code_reply_is_neutral_and_the_mailbox_gets_the_list(
    client: Any, host: Any
) -> None:
    first = deposit(client, host)
    second = deposit(client, host, slug="reservation-salle")
    sent_before = len(mails(host))
    client.get(FORGOTTEN)
    with recorded_statements(host) as known_statements:
        known = post(client, FORGOTTEN, {"email": "Lea.Dupont@EXEMPLE.FR"}, follow_redirects=True)
    with recorded_statements(host) as unknown_statements:
        unknown = post(client, FORGOTTEN, {"email": STRANGER}, follow_redirects=True)
    assert known.status_code == unknown.status_code == 200
    assert without_hidden_values(known.text) == without_hidden_values(unknown.text)
    assert len(known_statements) == len(unknown_statements) >= 4
    [mail] = mails(host)[sent_before:]
    assert mail.recipient == EMAIL
    for expected in ("Signaler un problème de voirie", "Réserver une salle municipale"):
        assert expected in mail.text
    for row in (first, second):
        assert format_tracking_code(row.code) in mail.text
        assert mail.html is not None and format_tracking_code(row.code) in mail.html


def test_forgotten_code_mails_are_capped_per_address(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    sent_before = len(mails(host))
    pages = [post(client, FORGOTTEN, {"email": EMAIL}, follow_redirects=True) for _ in range(4)]
    assert len(mails(host)) - sent_before == limits.FORGOTTEN_EMAIL.limit == 3
    assert {page.status_code for page in pages} == {200}
    assert without_hidden_values(pages[-1].text) == without_hidden_values(pages[0].text)
    clock.advance(days=1)
    post(client, FORGOTTEN, {"email": EMAIL})
    assert len(mails(host)) - sent_before == 4


def test_forgotten_code_lists_the_newest_dossiers_and_says_when_older_ones_exist(
    client: Any, host: Any, clock: Any
) -> None:
    from opencrm_horscompte.lookup.pages import FORGOTTEN_LISTED

    codes = []
    for _ in range(FORGOTTEN_LISTED + 1):
        codes.append(format_tracking_code(deposit(client, host).code))
        clock.advance(minutes=1)
    sent_before = len(mails(host))
    post(client, FORGOTTEN, {"email": EMAIL})
    [mail] = mails(host)[sent_before:]
    assert codes[0] not in mail.text and all(code in mail.text for code in codes[1:])
    assert mail.text.index(codes[1]) < mail.text.index(codes[-1])  # oldest first
    for part in (mail.text, mail.html or ""):
        assert "Seuls les dossiers les plus récents sont listés ici" in part


def test_a_reload_of_the_forgotten_code_reply_mails_nothing(
    client: Any, host: Any, deposited: Deposited
) -> None:
    """The POST rendered its reply: a reload posted the address again and mailed the list
    once more. It now redirects to the page, which shows the reply once."""
    sent_before, sessions_before = len(mails(host)), count(host, HostSession)
    visitor = new_client(host)
    answered = post(visitor, FORGOTTEN, {"email": EMAIL})
    assert answered.status_code == 303 and answered.headers["Location"] == FORGOTTEN
    reply, reloaded = visitor.get(FORGOTTEN), visitor.get(FORGOTTEN)
    assert "vient de lui être envoyée" in reply.text
    assert "vient de lui être envoyée" not in reloaded.text and 'name="email"' in reloaded.text
    assert len(mails(host)) - sent_before == 1
    assert count(host, HostSession) == sessions_before  # the reply needs no session row


def test_forgotten_code_refuses_a_bad_address(client: Any, host: Any) -> None:
    before = counts(host, *STATE)
    response = post(client, FORGOTTEN, {"email": "<script>x</script>@exemple.fr\r\nBcc: a@b.fr"})
    assert response.status_code == 400 and field_error(response.text, "email")
    assert "<script>" not in response.text
    assert counts(host, *STATE) == before


# --------------------------------------------------------------------------- purge


def test_scheduled_purge_removes_old_challenges_and_keeps_live_ones(
    client: Any, host: Any, clock: Any, deposited: Deposited
) -> None:
    used = start(client, EMAIL, deposited.code)
    assert submit(client, used, last_code(host)).status_code == 303
    decoy = start(client, STRANGER, deposited.code)
    assert submit(client, decoy, "000000").status_code == 400  # a guard for the decoy
    clock.advance(days=1, minutes=11)
    live = start(client, EMAIL, deposited.code)
    [task] = [
        task
        for tasks in host.hook.opencrm_scheduled_tasks(host=host)
        for task in tasks
        if task.name == "horscompte.purge"
    ]
    removed = task.run(host)
    assert removed["challenges"] == 2 and removed["guards"] == 1
    [kept] = rows(host, Challenge)
    assert kept.dossier_id == deposited.dossier_id and kept.consumed_at is None
    assert submit(client, live, last_code(host)).status_code == 303


def test_a_refused_lookup_says_so_in_the_page_title(client: Any) -> None:
    page = post(client, LOOKUP, {"email": "pas une adresse", "tracking_code": ""})
    assert page.status_code == 400
    title = page.text.partition("<title>")[2].partition("</title>")[0]
    assert title.startswith("Erreur \u2013 Suivre un dossier") and "<" not in title
    assert page.text.count('class="error-summary"') == 1
