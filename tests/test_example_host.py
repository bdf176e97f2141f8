"""The second host (examples/wsgi_host, bare WSGI, written from docs/integrating.md only),
driven through its WSGI callable on both backends, its mail delivered to a real SMTP server
on loopback: admin settings, deposit, identity step (accept and decline), lookup with the
validation code read from the delivered mail, "code oublié", and an embedded extension
plugin (digits-only codes, its own validation mail template) taking effect once enabled."""

from __future__ import annotations

import html
import io
import re
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from http.cookies import SimpleCookie
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import pytest
from conftest import TEST_SECRET_KEYS, Clock
from lookup_helpers import code_in
from smtp_server import Collector, body_text
from sqlalchemy import select

from opencrm_horscompte.hookspecs.host import ScheduledTask
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.tracking.codes import format_tracking_code

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from wsgi_host import ville
from wsgi_host.host import App, ExampleHost, deliver_mails, dossiers, run_scheduled_tasks

ADMIN = ("admin@exemple.fr", "admin-secret")
CITIZEN = ("camille.martin@exemple.fr", "citizen-secret")
STRANGER = "lea.dupont@exemple.fr"
SENDER = "ne-pas-repondre@exemple.invalid"
SLUG = "signalement"
ACCEPT_LINK = re.compile(r'href="(/hors-compte/identite/connexion\?[^"]+)"')
HIDDEN_TOKEN = re.compile(r'name="token" value="([^"]+)"')
TRACKING_CODE = re.compile(r'data-testid="tracking-code"><strong>([^<]+)</strong>')


class Page:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status_code = int(status.split()[0])
        self.headers = dict(headers)
        self.text = body.decode("utf-8")

    @property
    def location(self) -> str:
        return self.headers["Location"]


class Client:
    """A browser for a WSGI app: one cookie jar, the CSRF token read from the session."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.cookies: dict[str, str] = {}

    def request(self, method: str, url: str, data: dict[str, str] | None = None) -> Page:
        parts = urlsplit(url)
        body = urlencode(data or {}).encode()
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "REMOTE_ADDR": "192.0.2.10",
            "HTTP_ACCEPT_LANGUAGE": "fr-FR,fr;q=0.9",
            "HTTP_COOKIE": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
            "wsgi.input": io.BytesIO(body),
        }
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            captured.update(status=status, headers=headers)

        chunks = b"".join(self.app(environ, start_response))
        for name, value in captured["headers"]:
            if name == "Set-Cookie":
                cookie = SimpleCookie(value)
                self.cookies.update({key: morsel.value for key, morsel in cookie.items()})
        return Page(captured["status"], captured["headers"], chunks)

    def get(self, url: str) -> Page:
        return self.request("GET", url)

    def post(self, url: str, data: dict[str, str]) -> Page:
        if not self.cookies:
            self.get("/")  # the host issues the session and its CSRF token
        token = self.app.sessions.loads(self.cookies["exsession"])["csrf"]
        return self.request("POST", url, {"csrf_token": token, **data})


@pytest.fixture
def example(database_url: str) -> Iterator[ExampleHost]:
    host = ExampleHost(
        database_url,
        TEST_SECRET_KEYS,
        base_url="http://ville.invalid",
        clock=Clock(),
        extra_plugins=[(ville, ville.MANIFEST)],
    )
    host.set_enabled("horscompte", True)
    host.add_account(*ADMIN, "Admin", role="admin")
    host.add_account(*CITIZEN, "Camille Martin")
    host.add_demarche(SLUG, "Signaler un problème de voirie")
    yield host
    host.engine.dispose()


def delivered(host: ExampleHost, smtp: tuple[int, Collector]) -> list[EmailMessage]:
    port, collector = smtp
    deliver_mails(host, "127.0.0.1", port, SENDER)
    return collector.messages()


def login(client: Client, who: tuple[str, str], next_url: str = "/") -> Page:
    page = client.post("/connexion", {"email": who[0], "password": who[1], "suivant": next_url})
    assert page.status_code == 303, page.text
    return page


def start_dossier(client: Client, email: str) -> Page:
    identity = {"email": email, "first_name": "Léa", "last_name": "Dupont"}
    return client.post(f"/demarches/{SLUG}/nouveau", identity)


def deposit(client: Client, email: str = STRANGER) -> str:
    """Deposit a dossier; the tracking code on the receipt (grouped)."""
    page = start_dossier(client, email)
    assert page.status_code == 303, page.text
    form_url = page.location
    page = client.post(form_url, {"message": "Lampadaire éteint depuis lundi."})
    assert page.status_code == 303, page.text
    receipt = client.get(page.location)
    assert receipt.status_code == 200, receipt.text
    code: str
    [code] = TRACKING_CODE.findall(receipt.text)
    return code


def settings_form(**changes: Any) -> dict[str, str]:
    values = Settings.defaults().replace(**changes).as_dict()
    form = {key: str(value) for key, value in values.items() if not isinstance(value, bool)}
    form.update({key: "on" for key, value in values.items() if value is True})
    return {**form, "action": "save"}


# --------------------------------------------------------------------------- the flows


def test_every_flow_through_the_example_host(
    example: ExampleHost, smtp: tuple[int, Collector]
) -> None:
    app = App(example)

    # -- admin settings: the plugin's page, behind the host's login and permission
    admin = Client(app)
    assert admin.get("/admin/hors-compte").status_code == 303  # to the login
    login(admin, ADMIN)
    page = admin.get("/admin/hors-compte")
    assert page.status_code == 200 and "Accès sans compte" in page.text
    saved = admin.post("/admin/hors-compte", settings_form(tracking_code_length=16))
    assert saved.status_code == 303, saved.text
    citizen = Client(app)
    assert citizen.get("/admin/hors-compte").status_code == 303
    login(citizen, CITIZEN)
    assert citizen.get("/admin/hors-compte").status_code == 403

    # -- deposit without an account: 16 characters, on the receipt and in the mail
    anonymous = Client(app)
    grouped = deposit(anonymous)
    code = grouped.replace("-", "")
    assert len(code) == 16
    [ack] = delivered(example, smtp)
    assert ack["To"] == STRANGER and grouped in body_text(ack, "plain")

    # -- identity step: an address with an account is proposed to log in...
    browser = Client(app)
    asked = start_dossier(browser, CITIZEN[0])  # post/redirect/get: to the proposal
    assert asked.status_code == 303 and asked.location == "/hors-compte/identite"
    proposal = browser.get(asked.location)
    assert proposal.status_code == 200, proposal.text
    assert ACCEPT_LINK.search(proposal.text)
    [decline_token] = HIDDEN_TOKEN.findall(proposal.text)
    # ... and declines: the same draft goes on, without account
    declined = browser.post("/hors-compte/identite/continuer", {"token": decline_token})
    assert declined.status_code == 303 and declined.location.startswith("/brouillons/")
    assert browser.get(declined.location).status_code == 200
    # another one accepts: the host attaches the draft to the account at login
    accepting = Client(app)
    proposal = accepting.get(start_dossier(accepting, CITIZEN[0]).location)
    accept_link = ACCEPT_LINK.search(proposal.text)
    assert accept_link is not None
    to_login = accepting.get(html.unescape(accept_link.group(1)))  # the plugin counts it
    assert to_login.status_code == 303
    assert to_login.location.startswith("/connexion?suivant=%2Fbrouillons%2F")
    continue_url = unquote(to_login.location.partition("suivant=")[2])
    back = login(accepting, CITIZEN, next_url=continue_url)
    assert back.location == continue_url
    draft_key = continue_url.rsplit("/", 1)[-1]
    with example.engine.connect() as connection:
        row = connection.execute(select(dossiers).where(dossiers.c.draft_key == draft_key)).one()
    assert row.account_id is not None

    # -- lookup: email + tracking code, the validation code read from the delivered mail
    visitor = Client(app)
    posted = visitor.post("/hors-compte/suivi", {"email": STRANGER, "tracking_code": grouped})
    assert posted.status_code == 303 and posted.location == "/hors-compte/validation"
    looked_up = visitor.get(posted.location)  # post/redirect/get: the code entry page
    assert looked_up.status_code == 200, looked_up.text
    [challenge] = HIDDEN_TOKEN.findall(looked_up.text)
    [mail] = [m for m in delivered(example, smtp) if "code de validation" in str(m["Subject"])]
    validation_code = code_in(body_text(mail, "plain"))
    entered = visitor.post(
        "/hors-compte/validation",
        {"token": challenge, "code": validation_code, "action": "verify"},
    )
    assert entered.status_code == 303 and entered.location.startswith("/dossiers/")
    dossier_page = visitor.get(entered.location)
    assert dossier_page.status_code == 200 and "Lampadaire éteint" in dossier_page.text
    assert Client(app).get(entered.location).status_code == 403  # another browser

    # -- "code oublié": the list of dossiers and their codes, by mail
    stranger = Client(app)
    forgot = stranger.post("/hors-compte/code-oublie", {"email": STRANGER})
    assert forgot.status_code == 303 and forgot.location == "/hors-compte/code-oublie"
    assert "vient de lui être envoyée" in stranger.get(forgot.location).text
    [listing] = [m for m in delivered(example, smtp) if grouped in body_text(m, "plain")][1:]
    assert listing["To"] == STRANGER

    assert run_scheduled_tasks(example) == ["horscompte.purge"]


def test_a_failing_scheduled_task_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The guide: "A failing task must not stop the others"; the example's cron did."""

    def fail(host: Any) -> None:
        raise RuntimeError("task failed")

    ran: list[str] = []
    tasks = [
        [ScheduledTask("autre.failing", 60, fail)],
        [ScheduledTask("horscompte.purge", 3600, lambda host: ran.append("purge"))],
    ]
    host = SimpleNamespace(hook=SimpleNamespace(opencrm_scheduled_tasks=lambda host: tasks))
    assert run_scheduled_tasks(host) == ["horscompte.purge"]  # type: ignore[arg-type]
    assert ran == ["purge"]
    assert "scheduled task autre.failing failed" in caplog.text


def test_an_embedded_extension_plugin_takes_effect_once_enabled(
    example: ExampleHost, smtp: tuple[int, Collector]
) -> None:
    app = App(example)
    [record] = [record for record in example.plugins if record.name == "ville"]
    assert record.registered and record.compatible and record.error is None
    # registered but disabled: the default codes, the default template only
    assert not deposit(Client(app)).replace("-", "").isdigit()
    admin = Client(app)
    login(admin, ADMIN)
    assert ville.TEMPLATE_KEY not in admin.get("/admin/hors-compte").text

    example.set_enabled("ville", True)
    grouped = deposit(Client(app))
    assert grouped.replace("-", "").isdigit() and len(grouped.replace("-", "")) == 12
    assert format_tracking_code(grouped.replace("-", "")) == grouped
    page = admin.get("/admin/hors-compte")
    assert ville.TEMPLATE_KEY in page.text
    chosen = settings_form(validation_mail_template=ville.TEMPLATE_KEY)
    assert admin.post("/admin/hors-compte", chosen).status_code == 303

    delivered(example, smtp)  # the acknowledgments
    visitor = Client(app)
    visitor.post("/hors-compte/suivi", {"email": STRANGER, "tracking_code": grouped})
    [mail] = [m for m in delivered(example, smtp) if str(m["Subject"]).startswith("Ville")]
    assert mail["Subject"] == "Ville d'Exemple : votre code"
    assert "Votre code pour « Signaler un problème de voirie » :" in body_text(mail, "plain")
    assert code_in(body_text(mail, "plain")).isdigit()

    # disabled again: its hooks no longer run, its routes would answer 404
    example.set_enabled("ville", False)
    assert not deposit(Client(app)).replace("-", "").isdigit()


def test_logging_in_takes_nobody_elses_dossier(example: ExampleHost) -> None:
    """The example host follows the reference host: a login attaches the session's drafts
    not deposited yet, never a deposited dossier, and an account's draft opens for that
    account only (red-team finding on the reference host)."""
    client = Client(App(example))
    deposit(client, STRANGER)  # someone's deposit, in the same browser
    draft = start_dossier(client, "quelquun@exemple.fr").location
    login(client, CITIZEN)
    with example.engine.connect() as connection:
        owners = {row.email: row.account_id for row in connection.execute(select(dossiers))}
    assert owners[STRANGER] is None and owners["quelquun@exemple.fr"] is not None
    assert client.get(draft).status_code == 200  # goes on under the account
    login(client, ADMIN)  # another account, without logging out
    assert client.get(draft).status_code == 404
