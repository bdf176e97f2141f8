"""Steps shared by the browser tests: what a person does on the reference host's pages."""

from __future__ import annotations

from typing import Any

from lookup_helpers import CODE_LINE
from playwright.sync_api import expect

START = "/demarches/signalement-voirie/nouveau"
DEMARCHE = "Signaler un problème de voirie"
SUBJECT = "Lampadaire éteint rue des Lilas"
# A validation code stands alone on its line in the validation mail.


def main_menu(page: Any, name: str = "Menu principal") -> Any:
    """The header's menu; on a phone it sits behind the "Menu" button, opened first."""
    page.wait_for_load_state("load")  # the stylesheet decides which menu shows
    summary = page.locator("details.menu-compact > summary")
    if summary.is_visible() and page.locator("details.menu-compact[open]").count() == 0:
        summary.click()
    return page.get_by_role("navigation", name=name)


def log_in(page: Any, who: tuple[str, str]) -> None:
    """On the login page: type the credentials and submit."""
    expect(page.get_by_role("heading", level=1)).to_have_text("Connexion")
    page.get_by_label("Adresse électronique").fill(who[0])
    page.get_by_label("Mot de passe").fill(who[1])
    page.get_by_role("button", name="Se connecter").click()


def start_demarche(page: Any) -> None:
    """From the home page, open the "signalement voirie" démarche."""
    page.goto("/")
    page.get_by_role("link", name=f"Commencer la démarche « {DEMARCHE} »").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Vos coordonnées")


def fill_identity(page: Any, last_name: str, first_name: str, email: str) -> None:
    page.locator("#last_name").fill(last_name)
    page.locator("#first_name").fill(first_name)
    page.locator("#email").fill(email)
    page.get_by_role("button", name="Continuer").click()


def fill_form_and_deposit(page: Any, subject: str = SUBJECT) -> None:
    expect(page.get_by_role("heading", level=1)).to_have_text("Votre demande")
    page.get_by_label("Objet de votre demande").fill(subject)
    page.get_by_label("Précisions").fill("Depuis lundi soir, devant le numéro 12.")
    page.get_by_role("button", name="Déposer le dossier").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Votre dossier a bien été déposé")


def tracking_code_on(page: Any) -> str:
    """The tracking code shown on the receipt, as displayed (grouped)."""
    return str(page.get_by_test_id("tracking-code").inner_text()).strip()


def deposit_without_account(page: Any, email: str, first_name: str = "Léa") -> str:
    """A whole deposit by a visitor without account; the grouped tracking code."""
    start_demarche(page)
    fill_identity(page, "Dupont", first_name, email)
    fill_form_and_deposit(page)
    return tracking_code_on(page)


def validation_code(mails: list[Any], to: str) -> str:
    """The code in the last validation mail sent to ``to``."""
    codes = [m for m in mails if m.to == to and CODE_LINE.search(m.text)]
    assert codes, [m.subject for m in mails]
    match = CODE_LINE.search(codes[-1].text)
    assert match
    return match.group(1)


def wrong(code: str) -> str:
    """A code of the same length that is certainly not ``code``."""
    return "".join(str((int(digit) + 1) % 10) for digit in code)
