"""Agent support over HTTP: a dossier's hors-compte state by number, unlock, resend the
tracking code to the stored address, end active grants. The agent never sees a code,
needs the role, and every view or action leaves exactly one audit event."""

from __future__ import annotations

import html
import json
from datetime import timedelta
from typing import Any

import pytest
from conftest import ADMIN, CITIZEN, login, new_client, post
from lookup_helpers import (
    EMAIL,
    deposit,
    last_code,
    mails,
    rows,
    start,
    submit,
    wrong,
)
from sqlmodel import Session

from opencrm_horscompte.agent.state import guards_of
from opencrm_horscompte.base.hostinfo import moment
from opencrm_horscompte.base.i18n import translate
from opencrm_horscompte.base.limits import (
    AGENT_ACTIONS,
    AGENT_DOSSIER_MAILS,
    ATTEMPTS_PER_CODE,
    LOCK_AFTER_FAILURES,
)
from opencrm_horscompte.base.models import AuditRecord, FailureGuard, TrackingCode
from opencrm_horscompte.host_kit.refhost.seed import AGENT_EMAIL, seed
from opencrm_horscompte.tracking.codes import format_tracking_code

AGENT = (AGENT_EMAIL, "agent-password")
PAGE = "/admin/hors-compte/assistance"


@pytest.fixture
def agent_host(host: Any) -> Any:
    seed(host, CITIZEN[1], ADMIN[1], agent_password=AGENT[1])
    return host


def as_agent(host: Any, who: tuple[str, str] = AGENT) -> Any:
    client = new_client(host)
    client.get("/")
    login(client, who)
    return client


def events(host: Any, prefix: str = "agent.") -> list[AuditRecord]:
    return [r for r in rows(host, AuditRecord) if r.kind.startswith(prefix)]


def act(client: Any, dossier_id: int, action: str) -> Any:
    """The action's POST, and the dossier's page it redirects to once done."""
    done = post(client, PAGE, {"dossier": str(dossier_id), "action": action})
    if done.status_code == 303 and done.headers["Location"] == f"{PAGE}?dossier={dossier_id}":
        return client.get(done.headers["Location"])
    return done


def lock(host: Any, dossier_id: int, *, legacy: bool = False) -> None:
    """Lock the dossier's guard (``legacy``: the one of 0.2, keyed by the dossier)."""
    with Session(host.engine) as session, session.begin():
        code = session.get(TrackingCode, dossier_id)
        assert code is not None
        current, of_0_2 = guards_of(host, code)
        session.add(
            FailureGuard(
                key=of_0_2 if legacy else current,
                failures=LOCK_AFTER_FAILURES,
                not_before=host.now() + timedelta(days=1),
            )
        )


def test_agent_sees_the_state_never_the_code_and_each_view_is_audited(
    client: Any, agent_host: Any
) -> None:
    deposited = deposit(client, agent_host)
    start(client, EMAIL, deposited.code)
    agent = as_agent(agent_host)
    page = agent.get(f"{PAGE}?dossier={deposited.dossier_id}")
    assert page.status_code == 200
    assert "Signaler un problème de voirie" in page.text and "l•••@exemple.fr" in page.text
    assert deposited.code not in page.text
    assert format_tracking_code(deposited.code) not in page.text
    assert last_code(agent_host) not in page.text  # nor the validation code
    assert EMAIL not in page.text
    [viewed] = events(agent_host)
    assert viewed.kind == "agent.view" and viewed.actor == AGENT_EMAIL
    assert json.loads(viewed.details_json) == {"dossier": deposited.dossier_id}
    assert 'data-testid="agent-lock">Aucun' in page.text


def test_unknown_or_malformed_dossier_numbers(agent_host: Any) -> None:
    agent = as_agent(agent_host)
    assert agent.get(f"{PAGE}?dossier=999").status_code == 404
    assert agent.get(f"{PAGE}?dossier=abc").status_code == 400
    assert agent.get(PAGE).status_code == 200
    assert events(agent_host) == []


@pytest.mark.parametrize("action", ["unlock", "resend", "end_grants"])
def test_without_the_role_nothing_is_shown_or_done(
    client: Any, agent_host: Any, action: str
) -> None:
    deposited = deposit(client, agent_host)
    lock(agent_host, deposited.dossier_id)
    before = len(mails(agent_host))
    anonymous = new_client(agent_host)
    anonymous.get("/")
    assert anonymous.get(f"{PAGE}?dossier={deposited.dossier_id}").status_code == 302
    assert act(anonymous, deposited.dossier_id, action).status_code == 302
    citizen = as_agent(agent_host, CITIZEN)
    assert citizen.get(f"{PAGE}?dossier={deposited.dossier_id}").status_code == 403
    refused = act(citizen, deposited.dossier_id, action)
    assert refused.status_code == 403 and "réservée aux agents" in refused.text
    assert events(agent_host) == [] and len(mails(agent_host)) == before
    assert len(rows(agent_host, FailureGuard)) == 1


def test_unlock_lets_the_citizen_validate_again(client: Any, agent_host: Any) -> None:
    deposited = deposit(client, agent_host)
    token = start(client, EMAIL, deposited.code)
    lock(agent_host, deposited.dossier_id)
    assert submit(client, token, last_code(agent_host)).status_code == 429  # locked
    agent = as_agent(agent_host)
    page = agent.get(f"{PAGE}?dossier={deposited.dossier_id}")
    assert "Bloqué jusqu" in page.text
    done = act(agent, deposited.dossier_id, "unlock")
    assert done.status_code == 200 and "Dossier débloqué" in done.text
    assert rows(agent_host, FailureGuard) == []
    assert [e.kind for e in events(agent_host)] == ["agent.view", "agent.unlock"]
    assert submit(client, token, last_code(agent_host)).status_code == 303


def test_a_lock_counted_before_the_upgrade_is_shown_and_unlocked(
    client: Any, agent_host: Any
) -> None:
    deposited = deposit(client, agent_host)
    lock(agent_host, deposited.dossier_id, legacy=True)
    agent = as_agent(agent_host)
    assert "Bloqué jusqu" in agent.get(f"{PAGE}?dossier={deposited.dossier_id}").text
    done = act(agent, deposited.dossier_id, "unlock")
    assert done.status_code == 200 and "Dossier débloqué" in done.text
    assert rows(agent_host, FailureGuard) == []


def test_resend_mails_the_stored_address_only_and_is_capped(client: Any, agent_host: Any) -> None:
    deposited = deposit(client, agent_host)
    agent = as_agent(agent_host)
    before = len(mails(agent_host))
    form = {"dossier": str(deposited.dossier_id), "action": "resend", "email": "x@pirate.fr"}
    done = post(agent, PAGE, form, follow_redirects=True)
    assert done.status_code == 200 and "Le code de suivi a été envoyé" in done.text
    assert deposited.code not in done.text and format_tracking_code(deposited.code) not in done.text
    [mail] = mails(agent_host)[before:]
    assert mail.recipient == EMAIL and format_tracking_code(deposited.code) in mail.text
    for _ in range(AGENT_DOSSIER_MAILS.limit - 1):
        act(agent, deposited.dossier_id, "resend")
    capped = act(agent, deposited.dossier_id, "resend")
    assert "la limite d&#39;envois" in capped.text
    assert len(mails(agent_host)) == before + AGENT_DOSSIER_MAILS.limit
    resent = [e for e in events(agent_host) if e.kind == "agent.resend"]
    assert len(resent) == AGENT_DOSSIER_MAILS.limit + 1
    assert json.loads(resent[-1].details_json) == {"dossier": deposited.dossier_id, "sent": False}


def test_times_are_the_citizens_and_a_code_killed_by_wrong_tries_says_so(
    client: Any, agent_host: Any
) -> None:
    """The page showed UTC times ("16:50 UTC") where the citizen's receipt and mails say
    17:50, and a code killed by its wrong tries as "en attente"."""
    deposited = deposit(client, agent_host)
    token = start(client, EMAIL, deposited.code)
    code = last_code(agent_host)
    for _ in range(ATTEMPTS_PER_CODE):
        submit(client, token, wrong(code))
    agent = as_agent(agent_host)
    page = html.unescape(agent.get(f"{PAGE}?dossier={deposited.dossier_id}").text)
    with Session(agent_host.engine) as session:
        tracking = session.get(TrackingCode, deposited.dossier_id)
    assert tracking is not None
    assert translate(moment(agent_host, tracking.issued_at), "fr") in page
    assert "UTC" not in page
    assert "trop d'essais erronés" in page and "en attente" not in page
    assert "1 demande de code pour ce dossier, la plus récente en premier" in page


def test_reloading_after_a_resend_mails_nothing_more(client: Any, agent_host: Any) -> None:
    """The action redirects to the dossier's page (post/redirect/get): a reload used to
    post the action again and mail the citizen a second time."""
    deposited = deposit(client, agent_host)
    agent = as_agent(agent_host)
    before = len(mails(agent_host))
    form = {"dossier": str(deposited.dossier_id), "action": "resend"}
    posted = post(agent, PAGE, form)
    assert posted.status_code == 303
    assert posted.headers["Location"] == f"{PAGE}?dossier={deposited.dossier_id}"
    shown = agent.get(posted.headers["Location"])
    assert "Le code de suivi a été envoyé" in shown.text
    reloaded = agent.get(posted.headers["Location"])
    assert reloaded.status_code == 200 and "Le code de suivi a été envoyé" not in reloaded.text
    assert len(mails(agent_host)) == before + 1
    assert [e.kind for e in events(agent_host)] == ["agent.resend", "agent.view"]
    with Session(agent_host.engine) as session:
        tracking = session.get(TrackingCode, deposited.dossier_id)
    assert tracking is not None  # the date as "code oublié" writes it (it was 03/12/2026)
    day = translate(moment(agent_host, tracking.issued_at, "date"), "fr")
    assert f"(déposé le {day}) :" in mails(agent_host)[-1].text


def test_end_grants_takes_back_the_citizens_access(client: Any, agent_host: Any) -> None:
    deposited = deposit(client, agent_host)
    citizen = new_client(agent_host)
    citizen.get("/")
    token = start(citizen, EMAIL, deposited.code)
    assert submit(citizen, token, last_code(agent_host)).status_code == 303
    assert citizen.get(f"/dossiers/{deposited.dossier_id}").status_code == 200
    agent = as_agent(agent_host)
    page = agent.get(f"{PAGE}?dossier={deposited.dossier_id}")
    assert "Oui, accordé le" in page.text
    done = act(agent, deposited.dossier_id, "end_grants")
    assert "Les accès en cours à ce dossier sont terminés" in done.text
    assert 'data-testid="agent-grants">Aucun' in done.text
    assert citizen.get(f"/dossiers/{deposited.dossier_id}").status_code == 403
    assert [e.kind for e in events(agent_host)] == ["agent.view", "agent.end_grants"]
    # a new validation gives a new, working grant
    token = start(citizen, EMAIL, deposited.code)
    assert submit(citizen, token, last_code(agent_host)).status_code == 303
    assert citizen.get(f"/dossiers/{deposited.dossier_id}").status_code == 200


def test_agent_actions_are_throttled(client: Any, agent_host: Any) -> None:
    deposited = deposit(client, agent_host)
    agent = as_agent(agent_host)
    for _ in range(AGENT_ACTIONS.limit):
        assert agent.get(f"{PAGE}?dossier={deposited.dossier_id}").status_code == 200
    refused = act(agent, deposited.dossier_id, "unlock")
    assert refused.status_code == 429
    assert len(events(agent_host)) == AGENT_ACTIONS.limit
    assert [e.kind for e in events(agent_host, "throttle.")] == ["throttle.refused"]


def test_admin_is_an_agent_and_the_dossier_page_links_to_the_agent_page(
    client: Any, agent_host: Any
) -> None:
    deposited = deposit(client, agent_host)
    for who in (AGENT, ADMIN):
        staff = as_agent(agent_host, who)
        page = staff.get(f"/dossiers/{deposited.dossier_id}")
        assert page.status_code == 200
        link = f'href="{PAGE}?dossier={deposited.dossier_id}"'
        assert link in page.text and "Assistance usagers" in page.text
        assert "fin-acces" not in page.text  # the citizen's "shared computer" box is not theirs
        assert f'href="{PAGE}"' in staff.get("/").text  # header menu
    citizen = as_agent(agent_host, CITIZEN)
    assert citizen.get(f"/dossiers/{deposited.dossier_id}").status_code == 403
    assert "Assistance usagers" not in citizen.get("/").text
