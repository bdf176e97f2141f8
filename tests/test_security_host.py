"""Issue 8, through the reference host over HTTP, on SQLite and PostgreSQL:

* finding 4: discreet mode does the same work whether or not the address has an account;
* finding 5: logout and a password change end every copy of the session cookie, and the
  dossier grants inside it; cookie flags;
* finding 6: an oversized body gets a 413 page on every route;
* finding 7: synchronised double submissions (decline, settings, plugin switch) never fail;
* finding 12: known open-redirect payloads are refused by the host and by the plugin;
* finding 13: a foreign ``Origin`` / ``Sec-Fetch-Site`` is refused even with a valid CSRF
  token; security headers on every response; no inline script or style in the pages;
* red team: a number beyond any id, or a control character, in a URL or a form is no page
  or a clear refusal, never a 500 or the outage page.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any, cast

import pytest
from conftest import (
    ADMIN,
    CITIZEN,
    browser,
    csrf_token,
    login,
    observed_work,
    post,
    quiet,
    through_proposal,
)
from lookup_helpers import ANSWERS, EMAIL, deposit, last_code, start, submit, token_of
from processes import all_at_once
from sqlalchemy.exc import DataError
from sqlmodel import Session, select
from werkzeug.routing import Rule

from opencrm_horscompte.base.db import writer
from opencrm_horscompte.base.models import IdentityChoice, SettingRow
from opencrm_horscompte.base.paths import DECLINE_PATH, is_local_path
from opencrm_horscompte.base.tokens import sign
from opencrm_horscompte.hookspecs import host as host_specs
from opencrm_horscompte.hookspecs.host import Request, Response
from opencrm_horscompte.host_kit.refhost.app import SECURITY_HEADERS, create_app
from opencrm_horscompte.host_kit.refhost.models import Account, Dossier, PluginState
from opencrm_horscompte.host_kit.refhost.sessions import change_password
from opencrm_horscompte.identity import step as identity
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.store import load_settings, save_settings

ROUNDS = 30
START = "/demarches/signalement-voirie/nouveau"


def copy_of(client: Any) -> Any:
    """Another browser holding a copy of ``client``'s session cookie."""
    other = browser(client)
    cookie = client.get_cookie("session")
    assert cookie is not None
    other.set_cookie("session", cookie.value)
    return other


# --------------------------------------------------------------------------- finding 4


def test_discreet_mode_does_the_same_work_with_or_without_an_account(
    host: Any, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Session(host.engine) as session, session.begin():
        settings = Settings.defaults().replace(identity_discreet_mode=True)
        save_settings(host, session, settings, actor=ADMIN[0])
    quiet(host, monkeypatch)

    def observe(email: str) -> tuple[list[str], list[str]]:
        who = browser(client)
        who.get(START)
        identity_form = {"last_name": "Martin", "first_name": "Camille", "email": email}
        with observed_work(host) as work:
            response = post(who, START, identity_form)
        assert response.status_code == 303
        # The draft's own insert differs only in values; its statement text is the same.
        return work.shape()

    observe("echauffement@exemple.fr")  # warm-up
    with_account = observe(CITIZEN[0])
    without = observe("personne.sans.compte@exemple.fr")
    assert with_account == without
    assert with_account[1], "the invitation is rendered in both cases"


# --------------------------------------------------------------------------- finding 5


def test_logout_ends_every_copy_of_the_session(client: Any) -> None:
    login(client, CITIZEN)
    assert client.get("/mon-espace").status_code == 200
    stolen = copy_of(client)
    assert stolen.get("/mon-espace").status_code == 200
    assert post(client, "/deconnexion", {}).status_code == 303
    response = stolen.get("/mon-espace")
    assert response.status_code in (302, 303) and "/connexion" in response.headers["Location"]


def test_a_dossier_grant_dies_with_its_session(client: Any, host: Any) -> None:
    deposited = deposit(browser(client), host)
    login(client, CITIZEN)
    token = start(client, EMAIL, deposited.code)
    assert submit(client, token, last_code(host)).status_code == 303
    page = f"/dossiers/{deposited.dossier_id}"
    assert client.get(page).status_code == 200
    stolen = copy_of(client)
    assert stolen.get(page).status_code == 200
    post(client, "/deconnexion", {})
    assert stolen.get(page).status_code == 403


def test_ending_access_on_a_shared_computer_ends_every_copy(client: Any, host: Any) -> None:
    deposited = deposit(browser(client), host)
    token = start(client, EMAIL, deposited.code)
    assert submit(client, token, last_code(host)).status_code == 303
    page = f"/dossiers/{deposited.dossier_id}"
    assert "fin-acces" in client.get(page).text
    stolen = copy_of(client)
    assert stolen.get(page).status_code == 200
    assert post(client, f"{page}/fin-acces", {}).status_code == 200
    assert client.get(page).status_code == 403
    assert stolen.get(page).status_code == 403  # the copied cookie died with the session


def test_a_password_change_ends_every_session_of_the_account(client: Any, host: Any) -> None:
    login(client, CITIZEN)
    laptop = browser(client)
    login(laptop, CITIZEN)
    stolen = copy_of(client)
    with Session(host.engine) as session:
        account = session.exec(select(Account).where(Account.email == CITIZEN[0])).one()
    assert account.id is not None
    change_password(host, account.id, "a-new-long-password")
    for who in (client, laptop, stolen):
        assert who.get("/mon-espace").status_code in (302, 303)
    fresh = browser(client)
    login(fresh, (CITIZEN[0], "a-new-long-password"))
    assert fresh.get("/mon-espace").status_code == 200


def test_session_cookie_flags(host_factory: Any) -> None:
    for base_url, secure in (("http://127.0.0.1:8765", False), ("https://crm.exemple.fr", True)):
        app = create_app(host_factory(base_url=base_url))
        client = app.test_client()
        client.get("/")
        response = post(client, "/connexion", {"email": CITIZEN[0], "password": CITIZEN[1]})
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert ("Secure" in cookie) is secure


# --------------------------------------------------------------------------- finding 6


def _concrete(rule: Rule) -> str:
    values = {"slug": "signalement-voirie", "draft_key": "x", "dossier_id": "1", "locale": "fr"}
    path = rule.rule
    for name in rule.arguments:
        path = re.sub(rf"<(?:[a-z]+:)?{name}>", values.get(name, "x"), path)
    return path


def test_an_oversized_body_gets_a_413_page_on_every_route(client: Any) -> None:
    client.get("/")
    body = {"csrf_token": csrf_token(client), "message": "x" * (70 * 1024)}
    paths = sorted({_concrete(rule) for rule in client.application.url_map.iter_rules()})
    assert len(paths) > 10
    for path in paths:
        response = client.post(path, data=body)
        assert response.status_code == 413, (path, response.status_code)
        assert "trop volumineuses" in response.text, path


def test_an_oversized_body_without_a_length_gets_a_413_page(client: Any) -> None:
    client.get("/")
    response = client.post(
        "/hors-compte/suivi",
        input_stream=io.BytesIO(b"csrf_token=x&message=" + b"x" * (70 * 1024)),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413 and "trop volumineuses" in response.text


# --------------------------------------------------------------------------- finding 7


def _request(host: Any, form: dict[str, str]) -> Request:
    return Request(method="POST", path="/hors-compte/identite/continuer", form=form)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_double_clicks_on_continue_without_account_never_fail(host: Any) -> None:
    for round_ in range(ROUNDS):
        token = sign(host, identity.DECLINE_PURPOSE, {"draft": f"draft-{round_}", "next": "/b"})

        def decline(token: str = token) -> Response:
            return identity.decline(host, _request(host, {"token": token}))

        responses = all_at_once(2, decline)
        assert [r.status for r in responses] == [303, 303]
    with Session(host.engine) as session:
        assert len(list(session.exec(select(IdentityChoice)))) == ROUNDS


def test_simultaneous_settings_saves_never_fail(host: Any) -> None:
    for round_ in range(ROUNDS):
        length = 10 + round_ % 5

        def save(length: int = length) -> None:
            with Session(writer(host.engine)) as session, session.begin():
                current = load_settings(session)
                new = current.replace(tracking_code_length=length, validation_code_length=8)
                save_settings(host, session, new, actor=ADMIN[0])

        all_at_once(2, save)
    with Session(host.engine) as session:
        saved = {row.key: row.value_json for row in session.exec(select(SettingRow))}
    assert saved["validation_code_length"] == "8"


SPECIAL_ONLY = {
    "tracking_code_digits": False,
    "tracking_code_uppercase": False,
    "tracking_code_lowercase": False,
    "tracking_code_special": True,
    "tracking_code_length": 16,
}
LETTERS_AND_DIGITS = {
    "tracking_code_digits": True,
    "tracking_code_uppercase": True,
    "tracking_code_lowercase": True,
    "tracking_code_special": False,
    "tracking_code_length": 8,
}


def _stored(host: Any) -> dict[str, Any]:
    """The settings as stored, defaults for what is not (never repaired by the loader)."""
    with Session(host.engine) as session:
        rows = {row.key: json.loads(row.value_json) for row in session.exec(select(SettingRow))}
    return {**Settings.defaults().as_dict(), **rows}


def test_two_admins_saving_different_forms_at_once_store_one_or_the_other(host: Any) -> None:
    """Each save read the settings unlocked, then wrote the keys it found changed: on
    PostgreSQL two saves mixed into a combination neither admin sent, with no character
    class at all (13 rounds of 30, red-team finding)."""
    forms = (SPECIAL_ONLY, LETTERS_AND_DIGITS)
    for round_ in range(ROUNDS):
        with Session(writer(host.engine)) as session, session.begin():  # from the defaults
            save_settings(host, session, Settings.defaults(), actor=ADMIN[0])
        saves = iter(forms if round_ % 2 else forms[::-1])

        def save(saves: Iterator[dict[str, Any]] = saves) -> None:
            mine = next(saves)
            with Session(writer(host.engine)) as session, session.begin():
                save_settings(host, session, Settings.defaults().replace(**mine), actor=ADMIN[0])

        all_at_once(2, save)
        stored = {key: _stored(host)[key] for key in SPECIAL_ONLY}
        assert stored in (SPECIAL_ONLY, LETTERS_AND_DIGITS), stored


def test_a_save_repairs_an_invalid_stored_combination(host: Any) -> None:
    """A stored combination the loader must replace (no class at all) showed as the
    defaults; a save of "digits only" then compared with those, wrote nothing for the
    classes, said it was saved, and changed nothing in force."""
    with Session(writer(host.engine)) as session, session.begin():
        for key in ("digits", "uppercase", "lowercase", "special"):
            session.merge(
                SettingRow(
                    key=f"tracking_code_{key}",
                    value_json="false",
                    updated_at=host.now(),
                    updated_by="corruption",
                )
            )
    digits_only = {**LETTERS_AND_DIGITS, "tracking_code_uppercase": False}
    digits_only["tracking_code_lowercase"] = False
    with Session(writer(host.engine)) as session, session.begin():
        save_settings(host, session, Settings.defaults().replace(**digits_only), actor=ADMIN[0])
    assert {key: _stored(host)[key] for key in digits_only} == digits_only
    with Session(host.engine) as session:
        in_force = load_settings(session)
    assert (in_force.tracking_code_digits, in_force.tracking_code_uppercase) == (True, False)


def test_simultaneous_plugin_switches_never_fail(host: Any) -> None:
    for round_ in range(ROUNDS):
        enabled = bool(round_ % 2)
        with Session(host.engine) as session, session.begin():
            state = session.get(PluginState, "horscompte")
            if state is not None:
                session.delete(state)

        def switch(enabled: bool = enabled) -> None:
            host.set_enabled("horscompte", enabled, ADMIN[0])

        all_at_once(2, switch)
    with Session(host.engine) as session:
        assert len(list(session.exec(select(PluginState)))) == 1


# --------------------------------------------------------------------------- finding 12

OPEN_REDIRECTS = [
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "/\\/evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "/ /evil.example",
    " //evil.example",
    "/%2F/evil.example",
    "/%2f%2fevil.example",
    "/%5Cevil.example",
    "/%5cevil.example",
    "/%09/evil.example",
    "/%0a/evil.example",
    "/%00/evil.example",
    "/\x00/evil.example",
    "/\u2028/evil.example",
    "/\u3000/evil.example",
    "https://evil.example",
    "http:/evil.example",
    "https:evil.example",
    "HTTPS://evil.example",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.example",
    "@evil.example",
    "",
    "/%E0%A4%A/evil",
]
SAFE = ["/", "/mon-espace", "/demarches/signalement-voirie/nouveau?a=b#c", "/hors-compte/suivi"]


@pytest.mark.parametrize("payload", OPEN_REDIRECTS)
def test_open_redirect_payloads_are_refused_by_the_shared_check(payload: str) -> None:
    assert not is_local_path(payload)


@pytest.mark.parametrize("url", SAFE)
def test_same_site_paths_pass(url: str) -> None:
    assert is_local_path(url)


def test_the_host_never_redirects_off_site(client: Any) -> None:
    for payload in OPEN_REDIRECTS:
        response = client.get("/langue/fr", query_string={"suivant": payload})
        assert response.headers["Location"] == "/", payload
    for url in SAFE:
        response = client.get("/langue/fr", query_string={"suivant": url})
        assert response.headers["Location"] == url


def test_the_plugin_never_proposes_an_off_site_continuation(host: Any) -> None:
    from opencrm_horscompte.host_kit.refhost.models import Demarche

    with Session(host.engine) as session:
        demarche = session.exec(select(Demarche)).first()
    assert demarche is not None
    procedure = cast(host_specs.Demarche, demarche)  # as the plugin reads it (stored: id set)
    request = Request(method="POST", path=START, client_addr="203.0.113.9")
    for payload in OPEN_REDIRECTS:
        identity_form = {"email": CITIZEN[0], "draft": "d", "continue_url": payload}
        assert identity.identity_step(host, request, procedure, identity_form) is None, payload
    good = {"email": CITIZEN[0], "draft": "d", "continue_url": "/brouillons/d"}
    assert identity.identity_step(host, request, procedure, good) is not None


# --------------------------------------------------------------------------- finding 13


def test_a_valid_csrf_token_from_a_foreign_origin_is_refused(client: Any) -> None:
    client.get("/")
    form = {"email": EMAIL, "tracking_code": "ABCD-EFGH-JKLM"}
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        response = post(client, "/hors-compte/suivi", form, headers=headers)
        assert response.status_code == 400 and "ne vient pas de ce site" in response.text
    for headers in (
        {"Origin": "http://localhost"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {},
    ):
        assert post(client, "/hors-compte/suivi", form, headers=headers).status_code == 303


def test_security_headers_on_every_response(client: Any) -> None:
    for path in ("/", "/hors-compte/suivi", "/static/style.css", "/nulle-part", "/connexion"):
        response = client.get(path)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (path, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    # Inline style *attributes* only (the sandboxed preview of an HTML mail); never inline
    # script, nor style elements.
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert "'unsafe-inline'" not in directives["script-src"] + directives["style-src"]


def test_pages_have_no_inline_script_or_style(client: Any) -> None:
    login(client, ADMIN)
    # A script file of the site (``<script src=...>``) is allowed by the policy; inline
    # script, style elements and attributes, event handlers and javascript: URLs are not.
    inline = re.compile(
        r"<script(?![^>]*\ssrc=)|<style|\sstyle=|\son[a-z]+=|javascript:", re.IGNORECASE
    )
    for path in (
        "/",
        START,
        "/hors-compte/suivi",
        "/hors-compte/code-oublie",
        "/admin",
        "/admin/hors-compte",
        "/admin/plugins",
        "/admin/courriels",
        "/mon-espace",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        # A mail preview (srcdoc of a sandboxed iframe) may style its elements, as mails do.
        page = re.sub(r'srcdoc="[^"]*"', "", response.text)
        assert not inline.search(page), (path, inline.search(page))


# --------------------------------------------------------------------------- red team


BEYOND_ANY_ID = ["2147483648", "9223372036854775808", "1" + "0" * 23, "9" * 5000]


@pytest.mark.parametrize("number", BEYOND_ANY_ID)
def test_a_number_beyond_any_id_is_no_page_never_an_error(client: Any, number: str) -> None:
    """SQLite raised OverflowError (500) and PostgreSQL a data error, shown as the outage
    page (503) and logged as one: the number names no row, and is said so."""
    assert client.get(f"/dossiers/{number}").status_code == 404
    login(client, ADMIN)
    agent = client.get(f"/admin/hors-compte/assistance?dossier={number}")
    assert agent.status_code in (400, 404), agent.text
    assert "Aucun dossier" in agent.text or "des chiffres uniquement" in agent.text
    retry = post(client, "/admin/courriels", {"mail": number})
    assert retry.status_code == 400 and "ne peut pas être renvoyé" in retry.text


@pytest.mark.parametrize(
    "path",
    [
        "/brouillons/%00",
        "/brouillons/%00/recu",
        "/brouillons/a%00b/coordonnees",
        "/demarches/%00/nouveau",
        "/demarches/x%01y/nouveau",
        "/brouillons/" + "a" * 65,
    ],
)
def test_a_control_character_in_a_path_is_no_page(client: Any, path: str) -> None:
    assert client.get(path).status_code == 404


def test_a_value_the_database_refuses_is_the_requests_fault_not_an_outage(
    host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(host)
    app.config["TESTING"] = True

    @app.get("/essai/valeur-refusee")
    def refused() -> Any:
        raise DataError("SELECT 1", {}, ValueError("integer out of range"))

    with caplog.at_level(logging.WARNING):
        response = app.test_client().get("/essai/valeur-refusee")
    assert response.status_code == 400
    assert "ne peut pas lire" in response.text and "base de données" not in response.text
    assert [record.levelno for record in caplog.records] == [logging.WARNING]


def _dossier(host: Any, draft_key: str) -> Dossier:
    with Session(host.engine) as session:
        return session.exec(select(Dossier).where(Dossier.draft_key == draft_key)).one()


def _start_draft(client: Any, email: str) -> str:
    """A new draft under ``email``, declining the login proposal if one comes."""
    client.get(START)
    identity = {"last_name": "Dupont", "first_name": "Léa", "email": email}
    response = through_proposal(client, post(client, START, identity))
    if response.status_code == 200:  # the address has an account: go on without
        response = post(client, DECLINE_PATH, {"token": token_of(response.text)})
    assert response.status_code == 303, response.text
    return str(response.headers["Location"]).rsplit("/", 1)[-1]


def _deposit(client: Any, email: str) -> str:
    draft = _start_draft(client, email)
    response = post(client, f"/brouillons/{draft}", {**ANSWERS, "action": "deposit"})
    assert response.status_code == 303, response.text
    return draft


def test_logging_in_on_a_shared_browser_takes_nobody_elses_dossier(client: Any, host: Any) -> None:
    """Logging in carried over every dossier of the browser session to the account, and
    kept the list: an anonymous deposit became the account's, and an account's draft
    opened for the next account to log in (red-team finding). A deposited dossier joins an
    account through the claim flow only."""
    other = _deposit(client, "someone.else@exemple.fr")
    mine = _deposit(client, CITIZEN[0])  # deposited already: the claim flow's business
    login(client, CITIZEN)
    for draft_key in (other, mine):
        row = _dossier(host, draft_key)
        assert row.account_id is None
        assert client.get(f"/dossiers/{row.id}").status_code != 200
        assert client.get(f"/brouillons/{draft_key}/recu").status_code == 404
    draft = _start_draft(client, CITIZEN[0])
    assert _dossier(host, draft).account_id is not None
    login(client, ADMIN)  # another account in the same browser, without logging out
    assert client.get(f"/brouillons/{draft}").status_code == 404
    assert _dossier(host, draft).account_id != _account_id(host, ADMIN[0])


def test_logging_in_continues_this_browsers_drafts_not_deposited_yet(
    client: Any, host: Any
) -> None:
    """The drafts of this browser session go on under the account, whatever address they
    were started under (the integrator's guide: the citizen just proved they own the
    account, and the drafts were made in their browser); another browser's do not."""
    draft = _start_draft(client, CITIZEN[0].upper())  # the address as typed, in capitals
    other_address = _start_draft(client, "autre.adresse@exemple.fr")
    stranger = browser(client)
    strangers_draft = _start_draft(stranger, "quelquun@exemple.fr")
    login(client, CITIZEN)
    for mine in (draft, other_address):
        assert _dossier(host, mine).account_id == _account_id(host, CITIZEN[0])
        assert client.get(f"/brouillons/{mine}").status_code == 200
    assert _dossier(host, strangers_draft).account_id is None


def _account_id(host: Any, email: str) -> int:
    with Session(host.engine) as session:
        account = session.exec(select(Account).where(Account.email == email)).one()
        assert account.id is not None
        return account.id


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_a_method_a_page_does_not_take_is_405_not_an_expired_form(client: Any, method: str) -> None:
    """The CSRF check ran before routing, so PUT on a plugin page answered 400 "Ce formulaire
    a expiré" (outside test finding): the method is refused as such, and nothing is done."""
    client.get("/hors-compte/suivi")
    for path in ("/hors-compte/suivi", "/hors-compte/code-oublie", "/admin/hors-compte"):
        response = client.open(path, method=method, data={"csrf_token": csrf_token(client)})
        assert response.status_code == 405, (path, response.status_code)
    assert client.open("/nulle-part", method=method).status_code == 404
