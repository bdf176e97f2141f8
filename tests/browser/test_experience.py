"""Issue 12 in a real browser: each point of the citizen's and the administrator's experience,
at desktop and phone widths, in French and in English, axe-core on every state.

Labels are looked up in the catalog of the page's language, so the same steps run in both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from conftest import ADMIN, CITIZEN
from playwright.sync_api import expect
from sqlmodel import Session, select

from opencrm_horscompte.base.i18n import translations
from opencrm_horscompte.base.models import TrackingCode
from opencrm_horscompte.host_kit.refhost.models import Dossier

from .conftest import ARTIFACTS, VIEWPORTS
from .helpers import DEMARCHE, validation_code, wrong

pytestmark = pytest.mark.browser

STRANGER = "lea.dupont@exemple.fr"
# The test clock starts at 2026-11-28 09:00 UTC: 10:00 in Paris (winter time).
DEPOSITED_AT = {"fr": "28 novembre 2026 à 10:00", "en": "November 28, 2026 at 10:00\u202fAM"}
STALE = re.compile(r"UTC|\b1 minutes\b|ABCD-EFGH-JK")


@pytest.fixture(params=["fr", "en"])
def lang(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def t(lang: str) -> Callable[[str], str]:
    """The page's wording: a French msgid in the test's language."""
    return translations(lang).gettext


def h1(page: Any) -> Any:
    return page.get_by_role("heading", level=1)


def speak(page: Any, lang: str) -> None:
    page.goto(f"/langue/{lang}?suivant=/")


def no_stale_text(page: Any) -> None:
    found = STALE.findall(page.locator("body").inner_text())
    assert not found, f"{found} on {page.url}"


def header_menu(page: Any, t: Callable[[str], str]) -> Any:
    """The main menu; on a phone, opened from its "Menu" button first."""
    page.wait_for_load_state("load")  # the stylesheet decides which menu shows
    summary = page.locator("details.menu-compact > summary")
    if summary.is_visible():
        if page.locator("details.menu-compact[open]").count() == 0:
            summary.click()
        return page.locator("details.menu-compact").get_by_role("navigation")
    return page.get_by_role("navigation", name=t("Menu principal"))


def deposit(page: Any, t: Callable[[str], str], email: str, subject: str) -> None:
    """From the home page, file the "voirie" démarche (no login proposal for ``email``)."""
    page.goto("/")
    page.get_by_role("link", name=re.compile(re.escape(DEMARCHE))).click()
    if page.locator("#last_name").count():
        page.locator("#last_name").fill("Dupont")
        page.locator("#first_name").fill("Léa")
        page.locator("#email").fill(email)
        page.get_by_role("button", name=t("Continuer"), exact=True).click()
    page.get_by_label(t("Objet de votre demande")).fill(subject)
    page.get_by_role("button", name=t("Déposer le dossier")).click()
    expect(h1(page)).to_have_text(t("Votre dossier a bien été déposé"))


def test_citizen_without_account(
    page: Any, live: Any, shoot: Any, check_a11y: Any, lang: str, t: Any, device: str
) -> None:
    speak(page, lang)
    # 11. "Suivre un dossier" in the header, at both widths; 6. a compact menu on phones.
    banner = page.get_by_role("banner")
    expect(banner.get_by_role("link", name=t("Suivre un dossier"))).to_be_visible()
    header_height = banner.bounding_box()["height"]
    if device == "phone":
        assert header_height < 110, header_height
        page.locator("details.menu-compact > summary").click()
        expect(header_menu(page, t).get_by_role("link", name=t("Se connecter"))).to_be_visible()
        check_a11y(page)
        shoot(page, f"menu-open-{lang}")
        page.locator("details.menu-compact > summary").click()
    else:
        assert header_height < 60, header_height
    check_a11y(page)
    shoot(page, f"home-{lang}")

    # 10. One term, with the DSFR hint, on the identity screen.
    page.get_by_role("link", name=re.compile(re.escape(t("Commencer la démarche")))).last.click()
    expect(page.get_by_text(t("Format attendu : nom@domaine.fr"))).to_be_visible()
    page.go_back()
    deposit(page, t, STRANGER, "Lampadaire éteint")

    # 1. The receipt: the host's time zone, the locale's format; 4. copy and print.
    expect(page.get_by_test_id("deposited-at")).to_have_text(DEPOSITED_AT[lang])
    with Session(live.host.engine) as session:
        dossier = session.exec(select(Dossier)).one()
        row = session.get(TrackingCode, dossier.id)
        assert row is not None
    expect(page.get_by_test_id("dossier-number")).to_have_text(str(dossier.id))
    code = page.get_by_test_id("tracking-code").inner_text().strip()
    family = page.get_by_test_id("tracking-code").evaluate("e => getComputedStyle(e).fontFamily")
    assert "mono" in family.lower(), family
    no_stale_text(page)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name=t("Copier le code")).click()
    expect(page.get_by_role("status").filter(has_text=t("Code copié."))).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == code
    check_a11y(page)
    shoot(page, f"receipt-{lang}")
    page.emulate_media(media="print")
    expect(page.locator(".site-header")).to_be_hidden()
    expect(page.get_by_role("button", name=t("Copier le code"))).to_be_hidden()
    expect(page.locator(".print-only")).to_contain_text(f"{live.url}/hors-compte/suivi")
    shoot(page, f"receipt-print-{lang}")
    page.emulate_media(media="screen")

    # 9. The acknowledgment restates démarche, date, number; styled, signed, in the language.
    [ack] = live.deliver()
    assert DEPOSITED_AT[lang] in ack.text and str(dossier.id) in ack.text
    assert code in ack.text and live.host.config.site_name in ack.text
    assert ack.html is not None and f'<html lang="{lang}">' in ack.html
    assert "monospace" in ack.html and code in ack.html
    assert ack.sender.startswith(f"{live.host.config.site_name} <")
    page.set_content(ack.html)
    shoot(page, f"ack-mail-{lang}")

    # 3. The lookup, from the header: the hint matches real codes, the field reads like one.
    page.goto("/")
    page.get_by_role("banner").get_by_role("link", name=t("Suivre un dossier")).click()
    expect(h1(page)).to_have_text(t("Suivre un dossier déposé sans compte"))
    hint = page.get_by_test_id("code-hint")
    expect(hint).to_contain_text(t("Respectez les majuscules et les minuscules."))
    example = hint.locator("code").inner_text()
    assert re.fullmatch(r"[^-]{4}-[^-]{4}-[^-]{4}", example), example
    field = page.locator("#tracking_code")
    for name, value in [("autocapitalize", "off"), ("spellcheck", "false")]:
        expect(field).to_have_attribute(name, value)
    expect(field).to_have_attribute("autocomplete", "off")
    assert "mono" in field.evaluate("e => getComputedStyle(e).fontFamily").lower()
    no_stale_text(page)
    check_a11y(page)
    shoot(page, f"lookup-{lang}")
    page.get_by_label(t("Adresse électronique")).fill(STRANGER)
    field.fill(code)
    page.get_by_role("button", name=t("Recevoir un code de validation")).click()

    # 7. The validation page: where the code went (masked), how many digits, focus.
    expect(h1(page)).to_have_text(t("Saisissez le code de validation"))
    expect(page.locator("#code")).to_be_focused()
    help_text = page.get_by_test_id("code-help")
    expect(help_text).to_contain_text("l***@exemple.fr")
    expect(help_text).to_contain_text("6")
    no_stale_text(page)
    check_a11y(page)
    shoot(page, f"validate-{lang}")
    [mail] = live.deliver()
    secret = validation_code([mail], STRANGER)
    assert not mail.text.rstrip().splitlines()[-1].startswith("http")
    assert mail.html is not None and f'<html lang="{lang}">' in mail.html
    page.locator("#code").fill(wrong(secret))
    page.get_by_role("button", name=t("Accéder à mon dossier")).click()
    summary = page.locator("#erreurs")
    expect(summary).to_be_focused()
    expect(summary.get_by_role("heading", level=2)).to_have_text(
        t("Le code n'a pas pu être vérifié")
    )
    check_a11y(page)
    shoot(page, f"validate-error-{lang}")

    # 12. The dossier page: a styled list, and "Terminer l'accès" on a shared computer.
    page.locator("#code").fill(secret)
    page.get_by_role("button", name=t("Accéder à mon dossier")).click()
    expect(h1(page)).to_have_text(DEMARCHE)
    assert page.locator("dl.summary-list").evaluate("e => getComputedStyle(e).display") == "grid"
    expect(page.locator("main")).to_contain_text(DEPOSITED_AT[lang])
    no_stale_text(page)
    check_a11y(page)
    shoot(page, f"dossier-{lang}")
    page.get_by_role("button", name=t("Terminer l'accès")).click()
    expect(h1(page)).to_have_text(t("Accès terminé"))
    check_a11y(page)
    page.goto(f"/dossiers/{dossier.id}")
    expect(h1(page)).to_have_text(t("Vous n'avez pas accès à ce dossier."))


def test_citizen_with_an_account(
    page: Any, live: Any, shoot: Any, check_a11y: Any, lang: str, t: Any, device: str
) -> None:
    speak(page, lang)
    page.get_by_role("link", name=re.compile(re.escape(t("Commencer la démarche")))).last.click()
    page.locator("#last_name").fill("Martin")
    page.locator("#first_name").fill("Camille")
    page.locator("#email").fill(CITIZEN[0])
    page.get_by_role("button", name=t("Continuer"), exact=True).click()

    # 8. The proposal names the address that matched and the step.
    expect(h1(page)).to_have_text(t("Un compte existe pour cette adresse électronique"))
    expect(page.get_by_test_id("matched-address")).to_contain_text(CITIZEN[0])
    step = t("Étape %(step)s sur %(steps)s") % {"step": 1, "steps": 2}
    expect(page.get_by_test_id("step")).to_have_text(step)
    check_a11y(page)
    shoot(page, f"proposal-{lang}")

    # 8. The login page: context, the address prefilled, password help, way back.
    page.get_by_role("link", name=t("Me connecter et continuer")).click()
    expect(h1(page)).to_have_text(t("Connexion"))
    expect(page.get_by_test_id("login-context")).to_contain_text(DEMARCHE)
    expect(page.get_by_label(t("Adresse électronique"))).to_have_value(CITIZEN[0])
    expect(page.locator("#password")).to_be_focused()
    check_a11y(page)
    shoot(page, f"login-from-proposal-{lang}")
    page.get_by_role("link", name=t("Mot de passe oublié ?")).click()
    expect(h1(page)).to_have_text(t("Mot de passe oublié"))
    expect(page.locator("main")).to_contain_text(live.host.config.service_contact)
    check_a11y(page)
    page.go_back()
    page.get_by_test_id("continue-without-account").click()
    expect(h1(page)).to_have_text(t("Votre demande"))
    page.go_back()
    page.locator("#password").fill(CITIZEN[1])
    page.get_by_role("button", name=t("Se connecter")).click()

    # 5. An account's dossier: no tracking code, "Mon espace" instead, in page and mail.
    page.get_by_label(t("Objet de votre demande")).fill("Nid-de-poule rue Haute")
    page.get_by_role("button", name=t("Déposer le dossier")).click()
    expect(h1(page)).to_have_text(t("Votre dossier a bien été déposé"))
    expect(page.get_by_test_id("tracking-code")).to_have_count(0)
    expect(page.get_by_test_id("account-follow")).to_be_visible()
    check_a11y(page)
    shoot(page, f"receipt-account-{lang}")
    [ack] = live.deliver()
    with Session(live.host.engine) as session:
        assert session.exec(select(TrackingCode)).first() is None
        first = session.exec(select(Dossier)).one()
    assert f"/dossiers/{first.id}" in ack.text
    assert t("Votre code de suivi :") not in ack.text

    # 6. "Mes dossiers": rows told apart by number and subject; stacked on a phone.
    deposit(page, t, CITIZEN[0], "Trottoir abîmé place du Marché")
    header_menu(page, t).get_by_role("link", name=t("Mon espace")).click()
    expect(h1(page)).to_have_text(t("Mes dossiers"))
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="Nid-de-poule rue Haute")).to_contain_text(str(first.id))
    expect(rows.filter(has_text="Trottoir abîmé place du Marché")).to_have_count(1)
    display = rows.first.locator("td").first.evaluate("e => getComputedStyle(e).display")
    assert display == ("block" if device == "phone" else "table-cell"), display
    no_stale_text(page)
    check_a11y(page)
    shoot(page, f"my-space-{lang}")


def test_administrator(
    page: Any, live: Any, shoot: Any, check_a11y: Any, lang: str, t: Any, device: str
) -> None:
    page.goto(f"/connexion?suivant=/langue/{lang}%3Fsuivant%3D/admin/hors-compte")
    page.locator("#email").fill(ADMIN[0])
    page.locator("#password").fill(ADMIN[1])
    page.locator("#password").press("Enter")
    expect(h1(page)).to_have_text(t("Accès sans compte"))

    # 14. Plain words first, bits in a detail with the locale's decimal separator.
    strength = page.get_by_test_id("tracking-strength")
    expect(strength).to_contain_text(t("Très robuste"))
    assert strength.inner_text().startswith(t("Très robuste"))
    bits = page.get_by_test_id("tracking-bits")
    expect(bits).to_be_hidden()
    strength.locator("summary").click()
    expect(bits).to_contain_text("65,0" if lang == "fr" else "65.0")
    expect(page.get_by_test_id("tracking-sample")).to_have_text(
        re.compile(r"^[^-]{4}-[^-]{4}-[^-]{4}$")
    )

    # 17. The template select fits the phone; the HTML preview shows the mail.
    select = page.locator("#validation_mail_template")
    box, width = select.bounding_box(), page.viewport_size["width"]
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, (box, width)
    frame = page.frame_locator("iframe.mail-html").first
    expect(frame.locator("body")).to_contain_text(t("Bonjour,"))
    assert page.locator("iframe.mail-html").first.bounding_box()["height"] > 300
    page.locator("iframe.mail-html").first.screenshot(
        path=str(ARTIFACTS / f"administrator--mail-iframe-{lang}--{device}.png")
    )

    # 15. A refused value: focus on the error summary.
    page.locator("#tracking_code_length").fill("17")
    page.get_by_role("button", name=t("Enregistrer")).click()
    expect(page.locator("#erreurs")).to_be_focused()
    check_a11y(page)
    shoot(page, f"admin-error-{lang}")

    # 13. The preview where the eye is: scrolled to, focused.
    page.locator("#tracking_code_length").fill("16")
    page.get_by_role("button", name=t("Prévisualiser")).click()
    preview = page.locator("#apercu")
    expect(preview).to_be_focused()
    expect(preview).to_be_in_viewport()
    check_a11y(page)
    shoot(page, f"admin-preview-{lang}")
    preview.screenshot(path=str(ARTIFACTS / f"administrator--preview-{lang}--{device}.png"))

    # 16. The history names which code changed; its rows stack on a phone.
    page.get_by_role("button", name=t("Enregistrer")).click()
    expect(page.get_by_role("status").first).to_be_visible()
    history = page.locator("table.stacked tbody tr").first
    label = f"{t('Code de suivi')} \u2013 {t('Longueur du code')}"
    expect(history).to_contain_text(label)
    expect(history).to_contain_text("12 → 16")
    display = history.locator("td").last.evaluate("e => getComputedStyle(e).display")
    assert display == ("block" if device == "phone" else "table-cell"), display
    no_stale_text(page)
    check_a11y(page)
    shoot(page, f"admin-history-{lang}")
    section = page.locator("section[aria-labelledby=historique-titre]")
    section.screenshot(path=str(ARTIFACTS / f"administrator--history-{lang}--{device}.png"))
    select.screenshot(path=str(ARTIFACTS / f"administrator--select-{lang}--{device}.png"))


def test_copy_code_without_javascript(browser: Any, live: Any, device: str) -> None:
    """4. "Copier le code" is a progressive enhancement: without JavaScript the same control
    shows the code in a field, selected with one tap, to copy by hand."""
    context = browser.new_context(
        viewport=VIEWPORTS[device], base_url=live.url, locale="fr-FR", java_script_enabled=False
    )
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        t = translations("fr").gettext
        deposit(page, t, STRANGER, "Lampadaire éteint")
        code = page.get_by_test_id("tracking-code").inner_text().strip()
        expect(page.get_by_role("button", name=t("Copier le code"))).to_have_count(0)
        page.get_by_text(t("Copier le code"), exact=True).click()
        field = page.get_by_label(re.compile(re.escape(t("Sélectionnez le code"))))
        expect(field).to_have_value(code)
        expect(field).to_have_attribute("readonly", "")
        page.screenshot(
            path=str(ARTIFACTS / f"copy_code_without_javascript--receipt--{device}.png"),
            full_page=True,
        )
    finally:
        context.close()


def test_axe_positive_control(page: Any, check_a11y: Any) -> None:
    """The accessibility check does fail on a page with a known violation, so its 0 on
    every other page means something."""
    page.goto("/")
    check_a11y(page)
    page.evaluate(
        "document.querySelector('main').insertAdjacentHTML('beforeend',"
        " '<input type=text id=sans-etiquette><img src=x.png>')"
    )
    with pytest.raises(AssertionError, match=r"label|image-alt"):
        check_a11y(page)
