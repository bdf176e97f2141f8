"""Keyboard only: the deposit flow (login proposal declined), the lookup flow and the admin's
settings, driven with ``page.keyboard`` alone (Tab, Enter, Space, typing), the focus visible
and on screen at every step."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import ADMIN, CITIZEN
from playwright.sync_api import expect
from sqlmodel import Session

from opencrm_horscompte.settings.store import load_settings

from .helpers import DEMARCHE, SUBJECT, tracking_code_on, validation_code, wrong

pytestmark = pytest.mark.browser

FOCUSED = """() => { const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  const box = el.getBoundingClientRect();
  const text = el.tagName === 'INPUT' || el.tagName === 'TEXTAREA' ? el.value : el.textContent;
  return {tag: el.tagName.toLowerCase(), id: el.id, text: text.replace(/\\s+/g, ' ').trim(),
          outline: style.outlineStyle, outlineWidth: parseFloat(style.outlineWidth),
          onScreen: box.width > 0 && box.height > 0 && box.left >= 0
                    && box.right <= document.documentElement.clientWidth + 1}; }"""


def focused(page: Any) -> dict[str, Any]:
    """The focused element, checked to show its focus: an outline, on screen."""
    state = page.evaluate(FOCUSED)
    assert state is not None, f"Tab left the page on {page.url}"
    assert state["outline"] != "none" and state["outlineWidth"] > 0, f"focus not visible: {state}"
    assert state["onScreen"], f"focused element off screen: {state}"
    return dict(state)


def _is_target(state: dict[str, Any] | None, text: str | None, id: str | None) -> bool:
    if state is None:
        return False
    return (id is not None and state["id"] == id) or (text is not None and text in state["text"])


def tab_to(page: Any, *, text: str | None = None, id: str | None = None, limit: int = 30) -> None:
    """Press Tab until the focus is on the element with this id or this visible text (no
    Tab when the page put the focus on that id itself)."""
    if id is not None and _is_target(page.evaluate(FOCUSED), None, id):
        focused(page)
        return
    seen = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        state = focused(page)
        seen.append(state["id"] or state["text"])
        if (id is not None and state["id"] == id) or (text is not None and text in state["text"]):
            return
    raise AssertionError(f"never reached {id or text!r} by Tab on {page.url}: {seen}")


def type_into(page: Any, id: str, value: str) -> None:
    tab_to(page, id=id)
    page.keyboard.type(value)


def open_menu(page: Any) -> None:
    """On a phone the header's links sit behind "Menu": Tab to it, Enter opens it."""
    page.wait_for_load_state("load")
    if page.locator("details.menu-compact > summary").is_visible():
        tab_to(page, text="Menu")
        page.keyboard.press("Enter")
        expect(page.locator("details.menu-compact")).to_have_attribute("open", "")


def press_enter_and_wait(page: Any) -> None:
    with page.expect_navigation():
        page.keyboard.press("Enter")


def test_deposit_then_lookup_with_the_keyboard_only(page: Any, live: Any, shoot: Any) -> None:
    page.goto("/")
    page.keyboard.press("Tab")
    assert focused(page)["text"] == "Aller au contenu"  # the skip link shows when focused
    shoot(page, "skip-link")
    page.keyboard.press("Enter")
    tab_to(page, text=f"Commencer la démarche « {DEMARCHE} »")
    press_enter_and_wait(page)

    expect(page.get_by_role("heading", level=1)).to_have_text("Vos coordonnées")
    type_into(page, "last_name", "Martin")
    type_into(page, "first_name", "Camille")
    type_into(page, "email", CITIZEN[0])
    tab_to(page, text="Continuer")
    shoot(page, "identity-focus")
    press_enter_and_wait(page)

    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Un compte existe pour cette adresse électronique"
    )
    tab_to(page, text="Continuer sans compte")
    press_enter_and_wait(page)

    expect(page.get_by_role("heading", level=1)).to_have_text("Votre demande")
    type_into(page, "subject", SUBJECT)
    type_into(page, "message", "Devant le numéro 12.")
    tab_to(page, text="Déposer le dossier")
    press_enter_and_wait(page)

    expect(page.get_by_role("heading", level=1)).to_have_text("Votre dossier a bien été déposé")
    code = tracking_code_on(page)
    assert re.fullmatch(r"[^-]{4}-[^-]{4}-[^-]{4}", code), code
    live.deliver()  # the acknowledgment

    tab_to(page, text="Suivre un dossier")  # the link under the tracking code
    press_enter_and_wait(page)
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Suivre un dossier déposé sans compte"
    )
    type_into(page, "email", CITIZEN[0])
    type_into(page, "tracking_code", code)
    tab_to(page, text="Recevoir un code de validation")
    press_enter_and_wait(page)

    expect(page.get_by_role("heading", level=1)).to_have_text("Saisissez le code de validation")
    expect(page.locator("#code")).to_be_focused()  # the page puts it there (autofocus)
    assert focused(page)["id"] == "code"
    secret = validation_code(live.deliver(), CITIZEN[0])
    page.keyboard.type(wrong(secret))
    press_enter_and_wait(page)
    expect(page.locator("#erreurs")).to_be_focused()  # after an error: the summary
    assert focused(page)["id"] == "erreurs"
    tab_to(page, text="Ce code n'est pas le bon")  # its link leads to the field
    page.keyboard.press("Enter")
    expect(page.locator("#code")).to_be_focused()
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type(secret)
    shoot(page, "validate-focus")
    press_enter_and_wait(page)  # Enter in the field submits with the first button: verify

    expect(page.get_by_role("heading", level=1)).to_have_text(DEMARCHE)
    expect(page.get_by_test_id("dossier-status")).to_have_text("Déposé, en cours d'instruction")


def test_admin_settings_with_the_keyboard_only(page: Any, live: Any, shoot: Any) -> None:
    page.goto("/")
    open_menu(page)
    tab_to(page, text="Se connecter")
    press_enter_and_wait(page)
    type_into(page, "email", ADMIN[0])
    type_into(page, "password", ADMIN[1])
    press_enter_and_wait(page)  # Enter in the password field submits
    open_menu(page)
    tab_to(page, text="Administration")
    press_enter_and_wait(page)
    tab_to(page, text="Accès sans compte")
    press_enter_and_wait(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Accès sans compte")

    tab_to(page, id="tracking_code_length")
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type("16")
    for checkbox in ["tracking_code_uppercase", "tracking_code_lowercase", "tracking_code_special"]:
        tab_to(page, id=checkbox)
        page.keyboard.press("Space")
    shoot(page, "checkbox-focus")
    tab_to(page, text="Enregistrer")
    press_enter_and_wait(page)

    expect(page.get_by_role("status").first).to_contain_text("Paramètres enregistrés")
    with Session(live.host.engine) as session:
        settings = load_settings(session)
    assert settings.tracking_code_length == 16
    assert settings.tracking_code_digits and not settings.tracking_code_uppercase
    assert not settings.tracking_code_lowercase and not settings.tracking_code_special
