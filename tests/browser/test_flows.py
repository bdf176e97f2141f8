"""Every flow of the plugin in a real browser, at desktop and phone widths, with axe-core
checking each page (error states included) and a screenshot of each significant page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import ADMIN, CITIZEN
from playwright.sync_api import expect
from sqlmodel import Session, select

from opencrm_horscompte.base.models import TrackingCode
from opencrm_horscompte.host_kit.refhost.models import Dossier

from .helpers import (
    DEMARCHE,
    SUBJECT,
    deposit_without_account,
    fill_form_and_deposit,
    fill_identity,
    log_in,
    main_menu,
    start_demarche,
    tracking_code_on,
    validation_code,
    wrong,
)

pytestmark = pytest.mark.browser

STRANGER = "lea.dupont@exemple.fr"


def h1(page: Any) -> Any:
    return page.get_by_role("heading", level=1)


def test_admin_changes_the_tracking_code_settings(
    page: Any, new_page: Any, live: Any, shoot: Any, check_a11y: Any
) -> None:
    page.goto("/")
    check_a11y(page)
    shoot(page, "home")
    main_menu(page).get_by_role("link", name="Se connecter").click()
    log_in(page, (ADMIN[0], "wrong-password"))
    expect(page.get_by_role("alert")).to_contain_text("mot de passe incorrect")
    check_a11y(page)
    shoot(page, "login-error")
    log_in(page, ADMIN)

    main_menu(page).get_by_role("link", name="Administration").click()
    expect(h1(page)).to_have_text("Administration")
    check_a11y(page)
    page.get_by_role("link", name="Accès sans compte").click()
    expect(h1(page)).to_have_text("Accès sans compte")
    check_a11y(page)
    shoot(page, "admin")

    length = page.locator("#tracking_code_length")
    length.fill("5")
    page.get_by_role("button", name="Enregistrer").click()
    expect(page.locator("#erreurs")).to_be_visible()
    expect(page.locator("#tracking_code_length")).to_have_attribute("aria-invalid", "true")
    check_a11y(page)
    shoot(page, "admin-error")

    page.locator("#tracking_code_length").fill("16")
    page.get_by_label("Avec des chiffres").check()
    for label in ["Avec des lettres", "Avec des minuscules", "Avec des caractères spéciaux"]:
        page.get_by_label(label).uncheck()
    page.get_by_role("button", name="Prévisualiser").click()
    expect(page.get_by_test_id("tracking-sample")).to_have_text(
        re.compile(r"^\d{4}-\d{4}-\d{4}-\d{4}$")
    )
    check_a11y(page)
    page.get_by_role("button", name="Enregistrer").click()
    expect(page.get_by_role("status").first).to_be_visible()
    expect(page.locator("#tracking_code_length")).to_have_value("16")
    expect(page.get_by_label("Avec des lettres")).not_to_be_checked()
    check_a11y(page)
    shoot(page, "admin-saved")

    visitor = new_page()
    code = deposit_without_account(visitor, STRANGER)
    assert re.fullmatch(r"\d{4}-\d{4}-\d{4}-\d{4}", code), code
    shoot(visitor, "receipt-16-digits")
    [ack] = live.deliver()
    assert ack.to == STRANGER and code in ack.text


def test_citizen_accepts_the_login_proposal(
    page: Any, live: Any, shoot: Any, check_a11y: Any
) -> None:
    start_demarche(page)
    check_a11y(page)
    shoot(page, "identity")
    page.get_by_role("button", name="Continuer").click()  # everything empty
    expect(page.get_by_role("alert")).to_contain_text("Le formulaire contient des erreurs")
    expect(page.locator("#email")).to_have_attribute("aria-invalid", "true")
    check_a11y(page)
    shoot(page, "identity-errors")

    fill_identity(page, "Martin-Leroy", "Camille", CITIZEN[0])
    expect(h1(page)).to_have_text("Un compte existe pour cette adresse électronique")
    check_a11y(page)
    shoot(page, "proposal")
    page.get_by_role("link", name="Me connecter et continuer").click()
    log_in(page, CITIZEN)

    expect(h1(page)).to_have_text("Votre demande")
    expect(page.locator("main")).to_contain_text(
        f"Demande au nom de Camille Martin-Leroy ({CITIZEN[0]})"
    )
    page.get_by_role("button", name="Déposer le dossier").click()  # subject missing
    expect(page.locator("#subject")).to_have_attribute("aria-invalid", "true")
    check_a11y(page)
    shoot(page, "form-errors")
    page.get_by_label("Objet de votre demande").fill(SUBJECT)
    page.get_by_role("button", name="Enregistrer le brouillon").click()
    expect(page.get_by_role("status")).to_contain_text("Brouillon enregistré")
    check_a11y(page)
    fill_form_and_deposit(page)
    check_a11y(page)
    shoot(page, "receipt-with-account")

    main_menu(page).get_by_role("link", name="Mon espace").click()
    expect(h1(page)).to_have_text("Mes dossiers")
    row = page.get_by_role("row").filter(has_text=DEMARCHE)
    expect(row).to_contain_text("Déposé")
    check_a11y(page)
    shoot(page, "my-space")
    with Session(live.host.engine) as session:
        [dossier] = session.exec(select(Dossier)).all()
    assert dossier.status == "deposited" and dossier.account_id is not None
    assert (dossier.first_name, dossier.last_name) == ("Camille", "Martin-Leroy")


def test_citizen_declines_and_deposits_without_account(
    page: Any, live: Any, shoot: Any, check_a11y: Any
) -> None:
    start_demarche(page)
    fill_identity(page, "Martin", "Camille", CITIZEN[0])
    expect(h1(page)).to_have_text("Un compte existe pour cette adresse électronique")
    page.get_by_role("button", name="Continuer sans compte").click()
    fill_form_and_deposit(page)
    code = tracking_code_on(page)
    assert re.fullmatch(r"[^-]{4}-[^-]{4}-[^-]{4}", code), code  # 12 characters by default
    expect(page.get_by_role("main").get_by_role("link", name="Suivre un dossier")).to_be_visible()
    check_a11y(page)
    shoot(page, "receipt")
    with Session(live.host.engine) as session:
        [dossier] = session.exec(select(Dossier)).all()
        assert dossier.account_id is None
        assert session.get(TrackingCode, dossier.id) is not None
    [ack] = live.deliver()
    assert ack.to == CITIZEN[0] and code in ack.text


def test_lookup_with_the_validation_code_from_the_mail(
    page: Any, live: Any, shoot: Any, check_a11y: Any
) -> None:
    code = deposit_without_account(page, STRANGER)
    live.deliver()  # the acknowledgment

    page.goto("/")
    page.get_by_role("main").get_by_role("link", name="Suivre un dossier", exact=True).click()
    expect(h1(page)).to_have_text("Suivre un dossier déposé sans compte")
    check_a11y(page)
    shoot(page, "lookup")
    page.get_by_label("Adresse électronique").fill("pas-une-adresse")
    page.get_by_label("Code de suivi").fill(code)
    page.get_by_role("button", name="Recevoir un code de validation").click()
    expect(page.locator("#email")).to_have_attribute("aria-invalid", "true")
    check_a11y(page)
    shoot(page, "lookup-bad-email")

    page.get_by_label("Adresse électronique").fill(STRANGER)
    page.get_by_label("Code de suivi").fill(code.replace("-", " "))  # separators are optional
    page.get_by_role("button", name="Recevoir un code de validation").click()
    expect(h1(page)).to_have_text("Saisissez le code de validation")
    check_a11y(page)
    shoot(page, "validate")
    secret = validation_code(live.deliver(), STRANGER)

    page.get_by_label("Code de validation reçu par courriel").fill(wrong(secret))
    page.get_by_role("button", name="Accéder à mon dossier").click()
    expect(page.get_by_role("alert")).to_contain_text("Ce code n'est pas le bon")
    expect(page.locator("#code")).to_have_attribute("aria-invalid", "true")
    check_a11y(page)
    shoot(page, "validate-wrong")

    page.get_by_label("Code de validation reçu par courriel").fill(secret)
    page.get_by_role("button", name="Accéder à mon dossier").click()
    expect(h1(page)).to_have_text(DEMARCHE)
    expect(page.get_by_test_id("dossier-status")).to_have_text("Déposé, en cours d'instruction")
    expect(page.locator("main")).to_contain_text(SUBJECT)
    check_a11y(page)
    shoot(page, "dossier")


def test_expired_validation_code(page: Any, live: Any, shoot: Any, check_a11y: Any) -> None:
    code = deposit_without_account(page, STRANGER)
    page.goto("/hors-compte/suivi")
    page.get_by_label("Adresse électronique").fill(STRANGER)
    page.get_by_label("Code de suivi").fill(code)
    page.get_by_role("button", name="Recevoir un code de validation").click()
    expect(h1(page)).to_have_text("Saisissez le code de validation")
    secret = validation_code(live.deliver(), STRANGER)

    live.clock.advance(minutes=11)  # the default expiry is 10 minutes
    page.get_by_label("Code de validation reçu par courriel").fill(secret)
    page.get_by_role("button", name="Accéder à mon dossier").click()
    expect(page.get_by_role("alert")).to_contain_text("Ce code a expiré")
    check_a11y(page)
    shoot(page, "validate-expired")

    page.get_by_role("button", name="Recevoir un nouveau code").click()
    expect(page.get_by_role("status")).to_contain_text("un nouveau code vient d'être envoyé")
    check_a11y(page)
    fresh = validation_code(live.deliver(), STRANGER)
    page.get_by_label("Code de validation reçu par courriel").fill(fresh)
    page.get_by_role("button", name="Accéder à mon dossier").click()
    expect(h1(page)).to_have_text(DEMARCHE)


def test_forgotten_tracking_code_mail(page: Any, live: Any, shoot: Any, check_a11y: Any) -> None:
    code = deposit_without_account(page, STRANGER)
    live.deliver()

    page.goto("/hors-compte/suivi")
    page.get_by_role("link", name="J'ai perdu mon code de suivi").click()
    expect(h1(page)).to_have_text("J'ai perdu mon code de suivi")
    check_a11y(page)
    shoot(page, "forgotten")
    page.get_by_label("Adresse électronique").fill("lea.dupont@")
    page.get_by_role("button", name="Recevoir mes codes de suivi").click()
    expect(page.locator("#email")).to_have_attribute("aria-invalid", "true")
    check_a11y(page)
    shoot(page, "forgotten-bad-email")
    page.get_by_label("Adresse électronique").fill(STRANGER.upper())
    page.get_by_role("button", name="Recevoir mes codes de suivi").click()
    expect(page.get_by_role("status")).to_contain_text("la liste de ces dossiers")
    check_a11y(page)
    shoot(page, "forgotten-sent")

    [mail] = live.deliver()
    assert mail.to == STRANGER
    assert DEMARCHE in mail.text and code in mail.text
    assert f"{live.url}/hors-compte/suivi" in mail.text
