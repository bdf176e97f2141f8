"""axe-core on the pages and states the flows do not pass through: the host's other pages
(modules, outbox with a failing mail, errors 403/404, an empty "Mon espace"), and the
plugin's remaining states (expired decline link, resend too soon, weak-code warning)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ADMIN, CITIZEN
from playwright.sync_api import expect
from smtp_server import free_port
from sqlmodel import Session, select

from opencrm_horscompte.host_kit.refhost.models import Dossier
from opencrm_horscompte.host_kit.refhost.outbox import SmtpTransport, deliver_due, pending_summary

from .helpers import (
    deposit_without_account,
    fill_identity,
    log_in,
    main_menu,
    start_demarche,
)

pytestmark = pytest.mark.browser


def h1(page: Any) -> Any:
    return page.get_by_role("heading", level=1)


def test_other_host_pages_and_error_states(
    page: Any, new_page: Any, live: Any, shoot: Any, check_a11y: Any
) -> None:
    page.goto("/nulle-part")
    expect(h1(page)).to_have_text("Cette page n'existe pas.")
    check_a11y(page)

    deposit_without_account(page, "lea.dupont@exemple.fr")
    with Session(live.host.engine) as session:
        dossier = session.exec(select(Dossier)).one()
    stranger = new_page()
    stranger.goto(f"/dossiers/{dossier.id}")
    expect(h1(stranger)).to_have_text("Vous n'avez pas accès à ce dossier.")
    check_a11y(stranger)

    # The acknowledgment cannot be delivered: the outbox page lists it.
    report = deliver_due(
        live.host.engine,
        SmtpTransport("127.0.0.1", free_port(), timeout=2),
        live.host.now(),
        live.host.config.mail_sender,
    )
    assert report.failed == 1 and len(pending_summary(live.host.engine)) == 1

    admin = new_page()
    admin.goto("/connexion?suivant=/admin/courriels")
    log_in(admin, ADMIN)
    expect(h1(admin)).to_have_text("Courriels en attente")
    expect(admin.get_by_role("table")).to_contain_text("lea.dupont@exemple.fr")
    check_a11y(admin)
    shoot(admin, "outbox")
    admin.goto("/admin/plugins")
    expect(h1(admin)).to_have_text("Modules installés")
    check_a11y(admin)
    shoot(admin, "plugins")
    admin.get_by_role("button", name="Désactiver horscompte").click()
    expect(admin.get_by_role("status")).to_contain_text("désactivé")
    check_a11y(admin)
    admin.get_by_role("button", name="Activer horscompte").click()
    expect(admin.get_by_role("status")).to_contain_text("activé")

    # Weak tracking code: the preview warns.
    admin.goto("/admin/hors-compte")
    admin.locator("#tracking_code_length").fill("8")
    for label in ["Avec des lettres", "Avec des minuscules", "Avec des caractères spéciaux"]:
        admin.get_by_label(label).uncheck()
    admin.get_by_role("button", name="Prévisualiser").click()
    expect(admin.get_by_test_id("tracking-weak")).to_be_visible()
    check_a11y(admin)
    # No character class at all: the error is tied to the group of checkboxes.
    admin.get_by_label("Avec des chiffres").uncheck()
    admin.get_by_role("button", name="Enregistrer").click()
    expect(admin.locator("#erreurs")).to_be_visible()
    check_a11y(admin)
    shoot(admin, "admin-no-class")


def test_citizen_pages_and_plugin_states(
    page: Any, new_page: Any, live: Any, shoot: Any, check_a11y: Any
) -> None:
    # A démarche reserved to accounts sends to the login page; an empty "Mon espace".
    page.goto("/demarches/carte-stationnement-resident/nouveau")
    log_in(page, CITIZEN)
    expect(h1(page)).to_have_text("Vos coordonnées")
    check_a11y(page)
    main_menu(page).get_by_role("link", name="Mon espace").click()
    expect(page.get_by_text("Vous n'avez pas encore de dossier.")).to_be_visible()
    check_a11y(page)
    shoot(page, "my-space-empty")

    # The decline link has expired (6 hours later): the plugin's message page.
    visitor = new_page()
    start_demarche(visitor)
    fill_identity(visitor, "Martin", "Camille", CITIZEN[0])
    live.clock.advance(hours=7)
    visitor.get_by_role("button", name="Continuer sans compte").click()
    expect(h1(visitor)).to_have_text("Ce lien a expiré")
    check_a11y(visitor)
    shoot(visitor, "decline-expired")

    # Asking for a new validation code too soon: the error state of the validation page.
    other = new_page()
    code = deposit_without_account(other, "lea.dupont@exemple.fr")
    other.goto("/hors-compte/suivi")
    other.get_by_label("Adresse électronique").fill("lea.dupont@exemple.fr")
    other.get_by_label("Code de suivi").fill(code)
    other.get_by_role("button", name="Recevoir un code de validation").click()
    other.get_by_role("button", name="Recevoir un nouveau code").click()
    expect(other.get_by_role("alert")).to_contain_text("patientez")
    check_a11y(other)
