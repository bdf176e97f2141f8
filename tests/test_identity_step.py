"""Identity step: propose logging in when the email of a new dossier has an account.

Everything goes through the reference host over HTTP (Flask's test client).
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ADMIN, CITIZEN, post, through_proposal
from lookup_helpers import accept_login_url, found, rows, token_of
from sqlmodel import Session, select
from werkzeug.test import TestResponse

from opencrm_horscompte.base import limits
from opencrm_horscompte.base.models import (
    AuditRecord,
    DailyStat,
    IdentityChoice,
    ThrottleCounter,
    TrackingCode,
)
from opencrm_horscompte.base.paths import DECLINE_PATH, PROPOSAL_PATH
from opencrm_horscompte.hookspecs.host import hookimpl
from opencrm_horscompte.host_kit.refhost.app import create_app
from opencrm_horscompte.host_kit.refhost.models import Dossier
from opencrm_horscompte.host_kit.refhost.outbox import OutboxMail
from opencrm_horscompte.identity import step as identity
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.store import save_settings

START = "/demarches/signalement-voirie/nouveau"
STRANGER = "inconnu.total@exemple.fr"
ANSWERS = {"subject": "Trottoir abîmé", "message": "Devant le 12.", "action": "deposit"}


def identity_of(email: str) -> dict[str, str]:
    return {"last_name": "Martin", "first_name": "Camille", "email": email}


def submit_identity(client: Any, email: str) -> Any:
    """The first screen: the proposal's page (200), or the redirect to the form (303)."""
    client.get(START)
    return through_proposal(client, post(client, START, identity_of(email)))


def change_settings(host: Any, **changes: Any) -> None:
    with Session(host.engine) as session, session.begin():
        save_settings(host, session, Settings.defaults().replace(**changes), actor=ADMIN[0])


def continue_location(response: TestResponse) -> str:
    assert response.status_code == 303, response.text
    return response.headers["Location"]


def test_existing_account_gets_a_proposal_with_two_choices(client: Any) -> None:
    page = submit_identity(client, CITIZEN[0])
    assert page.status_code == 200
    assert "Un compte existe pour cette adresse électronique" in page.text
    assert 'data-testid="accept-login"' in page.text and 'data-testid="decline-login"' in page.text
    assert "Camille" not in page.text.split("<main", 1)[1]  # nothing about the account shown


@pytest.mark.parametrize(
    "variant",
    ["CAMILLE.MARTIN@EXEMPLE.FR", "  camille.martin@Exemple.fr  ", "camille.martin@EXEMPLE.fr"],
)
def test_case_and_space_variants_match(client: Any, variant: str) -> None:
    assert "Un compte existe" in submit_identity(client, variant).text


@pytest.mark.parametrize(
    "lookalike",
    [
        "camille.martin@exemple.fr".replace("a", "\u0430", 1),  # Cyrillic a
        "\uff43amille.martin@exemple.fr",  # fullwidth c: refused, never folded
        "camille.mart\u0131n@exemple.fr",  # dotless i
    ],
)
def test_unicode_lookalikes_never_match(client: Any, lookalike: str) -> None:
    response = submit_identity(client, lookalike)
    assert "Un compte existe" not in response.text


def test_unknown_email_continues_silently(client: Any) -> None:
    response = submit_identity(client, STRANGER)
    assert response.status_code == 303 and "/brouillons/" in response.headers["Location"]


def test_setting_off_continues_silently(client: Any, host: Any) -> None:
    change_settings(host, check_account_exists=False)
    response = submit_identity(client, CITIZEN[0])
    assert response.status_code == 303


def test_accept_logs_in_keeps_the_draft_and_attaches_the_dossier(client: Any, host: Any) -> None:
    page = submit_identity(client, CITIZEN[0])
    accept_url = accept_login_url(page.text)
    accepted = client.get(accept_url.replace("&amp;", "&"))  # remembered, then the login
    login_url = continue_location(accepted)
    assert login_url.startswith("/connexion?")
    assert rows(host, IdentityChoice)[0].choice == "accepted"
    login_page = client.get(login_url)
    assert login_page.status_code == 200
    next_url = found(r'name="suivant" value="([^"]+)"', login_page.text)
    response = post(
        client, "/connexion", {"email": CITIZEN[0], "password": CITIZEN[1], "suivant": next_url}
    )
    form_url = continue_location(response)
    assert form_url.startswith("/brouillons/")
    form = client.get(form_url)
    assert "Camille" in form.text and CITIZEN[0] in form.text  # typed identity kept
    receipt = client.get(continue_location(post(client, form_url, ANSWERS)))
    assert receipt.status_code == 200
    [dossier] = rows(host, Dossier)
    assert dossier.status == "deposited" and dossier.account_id is not None
    space = client.get("/mon-espace")
    assert "Signaler un problème de voirie" in space.text and "Déposé" in space.text


def test_decline_continues_without_account_and_is_remembered(client: Any, host: Any) -> None:
    page = submit_identity(client, CITIZEN[0])
    form_url = continue_location(post(client, DECLINE_PATH, {"token": token_of(page.text)}))
    assert rows(host, IdentityChoice)[0].choice == "declined"
    edit = client.get(form_url + "/coordonnees")
    again = post(client, edit.headers["Location"], identity_of(CITIZEN[0]))
    assert continue_location(again) == form_url  # not asked again for this draft
    client.get(form_url)
    receipt = client.get(continue_location(post(client, form_url, ANSWERS)))
    [dossier] = rows(host, Dossier)
    assert dossier.account_id is None
    [code] = rows(host, TrackingCode)
    assert code.dossier_id == dossier.id and "Votre code de suivi" in receipt.text


def test_decline_with_a_tampered_or_foreign_token_is_refused(client: Any, host: Any) -> None:
    page = submit_identity(client, CITIZEN[0])
    token = token_of(page.text)
    for forged in [token[:-2] + "xx", token[:20], "", "x" * 5000]:
        response = post(client, DECLINE_PATH, {"token": forged})
        assert response.status_code == 400 and "expiré" in response.text
    assert rows(host, IdentityChoice) == []


def test_decline_token_expires(client: Any, host: Any, clock: Any) -> None:
    page = submit_identity(client, CITIZEN[0])
    clock.advance(seconds=identity.DECLINE_MAX_AGE_SECONDS + 1)
    response = post(client, DECLINE_PATH, {"token": token_of(page.text)})
    assert response.status_code == 400


def test_throttled_behaves_as_no_account_and_is_audited(client: Any, host: Any) -> None:
    for _ in range(limits.IDENTITY_SESSION.limit):
        assert submit_identity(client, CITIZEN[0]).status_code == 200
    throttled = submit_identity(client, CITIZEN[0])
    unknown = submit_identity(client, STRANGER)
    assert throttled.status_code == unknown.status_code == 303
    assert throttled.headers["Location"].startswith("/brouillons/")
    audit = [r for r in rows(host, AuditRecord) if r.kind == limits.THROTTLE_REFUSED]
    assert len(audit) == 1  # once per window, not once per request
    stored = " ".join(row.key for row in rows(host, ThrottleCounter))
    assert "127.0.0.1" not in stored


def test_throttle_per_client_address_spans_sessions(host: Any) -> None:
    app = create_app(host)
    for _ in range(limits.IDENTITY_CLIENT.limit):
        fresh = app.test_client()  # a new browser session each time
        assert submit_identity(fresh, CITIZEN[0]).status_code == 200
    assert submit_identity(app.test_client(), CITIZEN[0]).status_code == 303


def test_window_reopens_after_an_hour(client: Any, clock: Any) -> None:
    for _ in range(limits.IDENTITY_SESSION.limit + 1):
        submit_identity(client, CITIZEN[0])
    clock.advance(hours=1, seconds=1)
    assert submit_identity(client, CITIZEN[0]).status_code == 200


@pytest.mark.parametrize(
    "email",
    [
        "x" * 300 + "@exemple.fr",
        "camille.martin@exemple.fr\r\nBcc: victime@exemple.fr",
        "camille.martin@exemple.fr%0d%0aBcc:victime@exemple.fr",
        "pas une adresse",
        "camille@@exemple.fr",
        "camille\x00@exemple.fr",
        "<script>alert(1)</script>@exemple.fr",
    ],
)
def test_bad_emails_get_a_clear_error_and_change_nothing(
    client: Any, host: Any, email: str
) -> None:
    response = submit_identity(client, email)
    assert response.status_code == 400
    assert 'id="email-error"' in response.text and "<script>alert" not in response.text
    assert rows(host, Dossier) == [] and rows(host, ThrottleCounter) == []


class LdapDirectory:
    """Stands for an LDAP/Keycloak plugin: knows one address the host does not."""

    @hookimpl
    def horscompte_account_exists(self, host: Any, email: str) -> bool | None:
        return email == "agent.ldap@demoville.fr" or None


class DenyAll:
    @hookimpl
    def horscompte_account_exists(self, host: Any, email: str) -> bool | None:
        return False


def test_account_source_hook_overrides_the_default(host_factory: Any) -> None:
    host = host_factory(extra_plugins=[LdapDirectory()])
    client = create_app(host).test_client()
    assert "Un compte existe" in submit_identity(client, "agent.ldap@demoville.fr").text
    assert "Un compte existe" in submit_identity(client, CITIZEN[0]).text  # falls through


def test_a_false_answer_stops_the_chain(host_factory: Any) -> None:
    host = host_factory(extra_plugins=[DenyAll()])
    client = create_app(host).test_client()
    assert submit_identity(client, CITIZEN[0]).status_code == 303


def test_discreet_mode_shows_nothing_and_mails_an_invitation(client: Any, host: Any) -> None:
    change_settings(host, identity_discreet_mode=True)
    found = submit_identity(client, CITIZEN[0])
    unknown = submit_identity(client, STRANGER)
    assert found.status_code == unknown.status_code == 303
    [mail] = rows(host, OutboxMail)
    assert mail.recipient == CITIZEN[0]
    assert "compte" in mail.subject.lower() and "/connexion" in mail.text
    # what logging in does, and how a dossier already deposited joins the account (the
    # mail promised "tous vos dossiers au même endroit", which logging in alone did not do)
    assert "connectez-vous avant de la déposer, dans le même navigateur" in mail.text
    assert "/connexion?suivant=%2Fhors-compte%2Frattacher" in mail.text
    assert "retrouvez tous vos dossiers" not in mail.text


def test_discreet_invitations_are_capped_per_address(client: Any, host: Any) -> None:
    change_settings(host, identity_discreet_mode=True)
    for _ in range(limits.IDENTITY_INVITATION.limit + 3):
        submit_identity(client, CITIZEN[0])
    assert len(rows(host, OutboxMail)) == limits.IDENTITY_INVITATION.limit


def test_logged_in_citizen_is_not_asked(client: Any) -> None:
    from conftest import login

    login(client, CITIZEN)
    assert submit_identity(client, CITIZEN[0]).status_code == 303


def test_admin_page_explains_the_discreet_mode(client: Any) -> None:
    from conftest import login

    login(client, ADMIN)
    page = client.get("/admin/hors-compte")
    assert "Mode discret" in page.text and "personne d&#39;autre" in page.text.replace("'", "&#39;")


def test_a_reload_or_back_on_the_proposal_checks_and_counts_nothing_more(
    client: Any, host: Any
) -> None:
    """The proposal answered the first screen's POST: a reload posted it again (one more
    account check against the hourly limit, one more proposal counted), and Back after
    "Continuer sans compte" gave the browser's resubmission page (outside experience
    finding). The POST now redirects to the proposal's page, which the session describes;
    once the draft's choice is made, that page leads on to the form."""
    assert client.get(PROPOSAL_PATH).headers["Location"] == "/"  # nothing proposed yet
    client.get(START)
    asked = post(client, START, identity_of(CITIZEN[0]))
    assert asked.status_code == 303 and asked.headers["Location"] == PROPOSAL_PATH
    pages = [client.get(PROPOSAL_PATH) for _ in range(3)]  # the redirect, then reloads
    assert {page.status_code for page in pages} == {200}
    assert CITIZEN[0] in pages[-1].text
    with Session(host.engine) as session:
        [stat] = session.exec(select(DailyStat)).all()
        checks = [row.count for row in session.exec(select(ThrottleCounter))]
    assert stat.proposals_shown == 1 and set(checks) == {1}  # one check, counted once

    declined = post(client, DECLINE_PATH, {"token": token_of(pages[-1].text)})
    form_url = continue_location(declined)
    back = client.get(PROPOSAL_PATH)  # Back after the choice: on to the form
    assert back.status_code == 303 and back.headers["Location"] == form_url
    assert client.get(PROPOSAL_PATH).headers["Location"] == "/"  # done with
