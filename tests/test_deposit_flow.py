"""The new-dossier flow of the reference host with the plugin: identity screen, form, deposit,
receipt with the tracking code, acknowledgment mail queued in the same transaction."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import ADMIN, login, post
from lookup_helpers import deposit
from lookup_helpers import rows as all_rows
from sqlmodel import Session
from werkzeug.test import TestResponse

from opencrm_horscompte.base.models import TrackingCode
from opencrm_horscompte.hookspecs.host import hookimpl
from opencrm_horscompte.host_kit.refhost.models import Dossier
from opencrm_horscompte.host_kit.refhost.outbox import OutboxMail
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.store import save_settings
from opencrm_horscompte.tracking.codes import (
    CodePolicy,
    format_tracking_code,
    normalize_tracking_code,
)

IDENTITY = {"last_name": "Dupont", "first_name": "Léa", "email": "lea.dupont@exemple.fr"}
ANSWERS = {"subject": "Lampadaire éteint rue des Lilas", "message": "Depuis lundi."}


def start_draft(client: Any, slug: str = "signalement-voirie") -> str:
    assert client.get(f"/demarches/{slug}/nouveau").status_code == 200
    response: TestResponse = post(client, f"/demarches/{slug}/nouveau", IDENTITY)
    assert response.status_code == 303, response.text
    return response.headers["Location"]


def test_deposit_shows_and_mails_the_tracking_code(client: Any, host: Any) -> None:
    receipt = deposit(client, host).receipt
    assert receipt.status_code == 200
    [code_row] = all_rows(host, TrackingCode)
    [dossier] = all_rows(host, Dossier)
    assert dossier.status == "deposited" and code_row.dossier_id == dossier.id
    grouped = format_tracking_code(code_row.code)
    assert re.search(r"[0-9A-Za-z!$*=@]{4}-[0-9A-Za-z!$*=@]{4}-[0-9A-Za-z!$*=@]{4}", grouped)
    assert grouped in receipt.text
    assert "/hors-compte/suivi" in receipt.text
    [mail] = all_rows(host, OutboxMail)
    assert mail.recipient == IDENTITY["email"]
    assert grouped in mail.text and "http://127.0.0.1:8765/hors-compte/suivi" in mail.text
    assert mail.html is not None and grouped in mail.html
    assert "Signaler un problème de voirie" in mail.subject


def test_code_follows_the_settings_in_force(client: Any, host: Any) -> None:
    digits_only = Settings.defaults().replace(
        tracking_code_length=16,
        tracking_code_uppercase=False,
        tracking_code_lowercase=False,
        tracking_code_special=False,
    )
    with Session(host.engine) as session, session.begin():
        save_settings(host, session, digits_only, actor=ADMIN[0])
    deposit(client, host)
    [row] = all_rows(host, TrackingCode)
    assert re.fullmatch(r"[0-9]{16}", row.code)
    policy = CodePolicy.from_settings(digits_only)
    assert normalize_tracking_code(format_tracking_code(row.code), policy) == row.code


def test_bad_identity_is_refused_next_to_the_field(client: Any, host: Any) -> None:
    url = "/demarches/signalement-voirie/nouveau"
    client.get(url)
    for email in ["pas-une-adresse", "a@b.fr\r\nBcc: x@y.fr", "x" * 300 + "@exemple.fr", ""]:
        response = post(client, url, {**IDENTITY, "email": email})
        assert response.status_code == 400
        assert 'id="email-error"' in response.text
    response = post(client, url, {**IDENTITY, "last_name": ""})
    assert response.status_code == 400 and 'id="last_name-error"' in response.text
    assert all_rows(host, Dossier) == []


def test_deposit_needs_a_subject_and_keeps_the_draft(client: Any, host: Any) -> None:
    form_url = start_draft(client)
    response = post(client, form_url, {"subject": "", "message": "x", "action": "deposit"})
    assert response.status_code == 400 and 'id="subject-error"' in response.text
    saved = post(client, form_url, {"subject": "", "message": "brouillon", "action": "save"})
    assert saved.status_code == 200 and "Brouillon enregistré" in saved.text
    assert "depuis ce navigateur seulement" in saved.text  # no account: where it lives
    [dossier] = all_rows(host, Dossier)
    assert dossier.status == "draft" and dossier.answers["message"] == "brouillon"
    assert all_rows(host, TrackingCode) == []


def test_a_draft_belongs_to_its_browser(client: Any, host: Any) -> None:
    form_url = start_draft(client)
    other = client.application.test_client()
    assert other.get(form_url).status_code == 404
    assert other.get(form_url + "/recu").status_code == 404


class FailingPlugin:
    @hookimpl(trylast=True)
    def opencrm_deposit(self, host: Any, session: Any, dossier: Any) -> None:
        raise RuntimeError("a later step of the deposit failed")


def test_failing_deposit_leaves_no_code_no_mail_and_keeps_the_draft(host_factory: Any) -> None:
    from opencrm_horscompte.host_kit.refhost.app import create_app

    host = host_factory(extra_plugins=[FailingPlugin()])
    client = create_app(host).test_client()
    form_url = start_draft(client)
    response = post(client, form_url, {**ANSWERS, "action": "deposit"})
    assert response.status_code == 503
    assert "brouillon est conservé" in response.text
    [dossier] = all_rows(host, Dossier)
    assert dossier.status == "draft" and dossier.answers["subject"] == ANSWERS["subject"]
    assert all_rows(host, TrackingCode) == []
    assert all_rows(host, OutboxMail) == []


def test_disabled_plugin_gives_no_code_and_hides_its_pages(client: Any, host: Any) -> None:
    host.set_enabled("horscompte", False, actor=ADMIN[0])
    response = post(client, start_draft(client), {**ANSWERS, "action": "deposit"})
    assert response.status_code == 303, response.text
    receipt = client.get(response.headers["Location"])
    assert receipt.status_code == 200 and "code de suivi" not in receipt.text.lower()
    assert all_rows(host, TrackingCode) == []
    login(client, ADMIN)
    assert client.get("/admin/hors-compte").status_code == 404
    assert 'href="/admin/hors-compte"' not in client.get("/admin").text


def test_admin_enables_and_disables_on_the_plugin_page(client: Any, host: Any) -> None:
    login(client, ADMIN)
    page = client.get("/admin/plugins")
    assert page.status_code == 200 and "Accès sans compte" in page.text
    response = post(client, "/admin/plugins", {"plugin": "horscompte", "action": "disable"})
    assert response.status_code == 200 and "désactivé" in response.text
    assert not host.is_enabled("horscompte")
    response = post(client, "/admin/plugins", {"plugin": "horscompte", "action": "enable"})
    assert response.status_code == 200 and host.is_enabled("horscompte")
    response = post(client, "/admin/plugins", {"plugin": "inconnu", "action": "enable"})
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["//evil.example/", "https://evil.example/", "javascript:x"])
def test_login_never_redirects_off_site(client: Any, path: str) -> None:
    client.get("/connexion")
    response = post(
        client, "/connexion", {"email": ADMIN[0], "password": ADMIN[1], "suivant": path}
    )
    assert response.headers["Location"] == "/"
