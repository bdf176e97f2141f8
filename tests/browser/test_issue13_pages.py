"""Browser flows of the pages added by issue 13, at desktop and phone widths, axe-core
finding no WCAG 2.1 A/AA violation on each state: statistics (admin), agent support,
claiming a dossier later ("Rattacher un dossier"), the retention settings."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import ADMIN, CITIZEN
from playwright.sync_api import expect
from sqlmodel import Session, select

from opencrm_horscompte.host_kit.refhost.models import Dossier
from opencrm_horscompte.host_kit.refhost.seed import AGENT_EMAIL, seed
from opencrm_horscompte.settings.store import load_settings, save_settings
from opencrm_horscompte.stats.counters import count

from .helpers import deposit_without_account, log_in, main_menu, validation_code, wrong

pytestmark = pytest.mark.browser
AGENT = (AGENT_EMAIL, "agent-password")


def h1(page: Any) -> Any:
    return page.get_by_role("heading", level=1)


def only_dossier(live: Any) -> Dossier:
    with Session(live.host.engine) as session:
        return session.exec(select(Dossier).where(Dossier.status == "deposited")).one()


def test_statistics_page(page: Any, live: Any, shoot: Any, check_a11y: Any) -> None:
    with Session(live.host.engine) as session, session.begin():
        count(session, live.host.now(), deposits=4, lookups=40, codes_sent=12, locks=1)
        count(session, live.host.now(), validations_ok=10, validations_failed=3)
    page.goto("/connexion?suivant=/admin/hors-compte")
    log_in(page, ADMIN)
    expect(
        page.get_by_role("group", name="Conservation des données personnelles (RGPD)")
    ).to_be_visible()
    check_a11y(page)
    page.get_by_role("link", name="Statistiques").click()
    expect(h1(page)).to_have_text("Statistiques de l'accès sans compte")
    expect(page.get_by_role("img", name="Activité par jour, 30 derniers jours")).to_be_visible()
    expect(page.get_by_test_id("stats-unmatched")).to_have_text("28")
    expect(page.get_by_test_id("stats-hints")).to_contain_text("70")
    check_a11y(page)
    shoot(page, "stats-days")
    page.get_by_role("link", name="Par semaine (1 an)").click()
    expect(
        page.get_by_role("img", name="Activité par semaine, 52 dernières semaines")
    ).to_be_visible()
    check_a11y(page)
    with page.expect_download() as download:
        page.get_by_role("link", name="Télécharger les chiffres (CSV)").click()
    assert download.value.suggested_filename == "horscompte-statistiques-semaines.csv"


def test_agent_support(page: Any, new_page: Any, live: Any, shoot: Any, check_a11y: Any) -> None:
    seed(live.host, CITIZEN[1], ADMIN[1], agent_password=AGENT[1])
    tracking = deposit_without_account(page, "lea.dupont@exemple.fr")
    live.deliver()
    dossier = only_dossier(live)
    agent = new_page()
    agent.goto(f"/connexion?suivant=/dossiers/{dossier.id}")
    log_in(agent, AGENT)
    expect(h1(agent)).to_have_text("Signaler un problème de voirie")
    actions = agent.get_by_role("navigation", name="Actions des services")
    actions.get_by_role("link", name="Assistance usagers").click()
    expect(h1(agent)).to_have_text("Assistance aux usagers sans compte")
    expect(agent.get_by_test_id("agent-state")).to_contain_text("l•••@exemple.fr")
    assert tracking not in agent.content()
    check_a11y(agent)
    shoot(agent, "agent-state")
    agent.get_by_role("button", name="Débloquer le dossier").click()
    expect(agent.get_by_role("status")).to_contain_text("Dossier débloqué")
    check_a11y(agent)
    agent.get_by_role("button", name="Renvoyer le code de suivi à l'usager").click()
    expect(agent.get_by_role("status")).to_contain_text("Le code de suivi a été envoyé")
    [mail] = live.deliver()
    assert mail.to == "lea.dupont@exemple.fr" and tracking in mail.text
    agent.get_by_role("button", name="Mettre fin aux accès en cours").click()
    expect(agent.get_by_test_id("agent-grants")).to_contain_text("Aucun")
    check_a11y(agent)
    shoot(agent, "agent-actions")
    agent.get_by_label("Numéro du dossier").fill("abc")
    agent.get_by_role("button", name="Afficher").click()
    expect(agent.locator("#dossier")).to_have_attribute("aria-invalid", "true")
    check_a11y(agent)
    # the header menu leads agents there too; citizens never see it
    expect(main_menu(agent).get_by_role("link", name="Assistance usagers")).to_be_visible()


def test_claim_a_dossier_later(
    page: Any, new_page: Any, live: Any, shoot: Any, check_a11y: Any
) -> None:
    with Session(live.host.engine) as session, session.begin():
        settings = load_settings(session).replace(check_account_exists=False)
        save_settings(live.host, session, settings, actor=ADMIN[0])
    # deposited from another browser: logging in here must not attach it by the session
    tracking = deposit_without_account(new_page(), CITIZEN[0], first_name="Camille")
    live.deliver()
    page.goto("/connexion?suivant=/mon-espace")
    log_in(page, CITIZEN)
    expect(h1(page)).to_have_text("Mes dossiers")
    check_a11y(page)
    page.get_by_role("link", name="Rattacher un dossier").click()
    expect(h1(page)).to_have_text("Rattacher un dossier à mon compte")
    check_a11y(page)
    shoot(page, "claim-start")
    page.get_by_role("button", name="Recevoir un code de validation").click()  # empty
    expect(page.locator("#tracking_code")).to_have_attribute("aria-invalid", "true")
    check_a11y(page)
    page.get_by_label("Code de suivi").fill(tracking)
    page.get_by_role("button", name="Recevoir un code de validation").click()
    expect(page.get_by_role("status")).to_contain_text("code de validation")
    check_a11y(page)
    code = validation_code(live.deliver(), CITIZEN[0])
    page.get_by_label("Code de validation reçu par courriel").fill(wrong(code))
    page.get_by_role("button", name="Rattacher le dossier").click()
    expect(page.get_by_role("alert")).to_contain_text("pas le bon")
    check_a11y(page)
    shoot(page, "claim-wrong")
    page.get_by_label("Code de validation reçu par courriel").fill(code)
    page.get_by_role("button", name="Rattacher le dossier").click()
    expect(page).to_have_url(re.compile(r"/dossiers/\d+$"))
    page.goto("/mon-espace")
    expect(page.get_by_role("table")).to_contain_text("Signaler un problème de voirie")
    check_a11y(page)
    shoot(page, "claim-done")
