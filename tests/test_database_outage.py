"""No bare 500: with the database unavailable (SQLite file that can't be opened, PostgreSQL
refusing connections with its backends terminated), every page answers a clean 503 that says
what was kept, and gives the citizen's typed input back."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import PG_ADMIN_URL, new_client, post
from lookup_helpers import LOOKUP, VALIDATE, deposit, start
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from werkzeug.test import TestResponse

from opencrm_horscompte.base.db import make_engine
from opencrm_horscompte.host_kit.refhost import app as app_module
from opencrm_horscompte.host_kit.refhost import dossiers, sessions

KEPT_NOTICE = "ce qui était déjà enregistré"


@pytest.fixture
def outage(host: Any, tmp_path: Path) -> Callable[[], Any]:
    """``with outage():`` makes the host's database unavailable for the block."""
    restore: list[Callable[[], None]] = []

    @contextmanager
    def down(*, plugin_state_cached: bool = False) -> Iterator[None]:
        """``plugin_state_cached``: the host keeps the plugin switches it read last (its
        TTL), so the first statement to fail is the page's own, not the switches' read."""
        engine = host.engine
        if engine.dialect.name == "sqlite":
            host.engine = make_engine(f"sqlite:///{tmp_path}/missing/folder/crm.sqlite3")
            restore.append(lambda: setattr(host, "engine", engine))
        else:
            database = make_url(engine.url).database
            admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(
                    text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
                )
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": database},
                )

            def back() -> None:
                with admin.connect() as connection:
                    connection.execute(
                        text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
                    )
                admin.dispose()

            restore.append(back)
        if not plugin_state_cached:
            host._state.read_at = float("-inf")  # the plugin switches are read again: fail
        try:
            yield
        finally:
            while restore:
                restore.pop()()

    return down


@pytest.fixture
def web(host: Any) -> Any:
    return new_client(host)


def _hidden(page: str) -> dict[str, str]:
    pairs = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    return {name: html.unescape(value) for name, value in pairs if name != "csrf_token"}


def _assert_clean_503(response: TestResponse) -> str:
    assert response.status_code == 503, response.text
    page = response.text
    assert "Service momentanément indisponible" in page
    assert KEPT_NOTICE in page
    assert "Traceback" not in page
    assert response.headers["Retry-After"]
    return page


def test_lookup(web: Any, host: Any, outage: Any) -> None:
    dossier = deposit(web, host)
    web.get(LOOKUP)
    typed = {"email": dossier.email, "tracking_code": dossier.code}
    with outage():
        response = post(web, LOOKUP, typed)
    page = _assert_clean_503(response)
    assert _hidden(page) == typed  # the retry button sends it again as typed
    assert f'action="{LOOKUP}"' in page
    again = post(web, LOOKUP, _hidden(page), follow_redirects=True)  # database back: works
    assert again.status_code == 200 and "Code de validation" in again.text


def test_lookup_with_the_plugin_switches_cached(web: Any, host: Any, outage: Any) -> None:
    """The lookup's own connection (at driver level) is the first to fail: it gets the
    503 page too (it was a bare 500 on PostgreSQL: the driver's connection error came out
    unwrapped, past the host's handler of SQLAlchemy errors)."""
    dossier = deposit(web, host)
    web.get(LOOKUP)
    typed = {"email": dossier.email, "tracking_code": dossier.code}
    with outage(plugin_state_cached=True):
        response = post(web, LOOKUP, typed)
    assert _hidden(_assert_clean_503(response)) == typed


def test_verify_and_resend(web: Any, host: Any, outage: Any) -> None:
    dossier = deposit(web, host)
    token = start(web, dossier.email, dossier.code)
    for action, code in (("verify", "123456"), ("resend", "")):
        typed = {"token": token, "code": code, "action": action}
        with outage():
            response = post(web, VALIDATE, typed)
        page = _assert_clean_503(response)
        assert _hidden(page) == typed


def test_first_screen_of_a_new_dossier(web: Any, outage: Any) -> None:
    start_url = "/demarches/signalement-voirie/nouveau"
    assert web.get(start_url).status_code == 200
    typed = {"last_name": "Dupont", "first_name": "Léa", "email": "lea.dupont@exemple.fr"}
    with outage():
        response = post(web, start_url, typed)
    page = _assert_clean_503(response)
    assert _hidden(page) == typed


def test_pages_without_input(web: Any, outage: Any) -> None:
    with outage():
        for url in ("/", "/demarches/signalement-voirie/nouveau", LOOKUP):
            page = _assert_clean_503(web.get(url))
            assert 'type="hidden" name="email"' not in page


def test_deposit_error_path_keeps_the_answers_in_the_form(
    web: Any, host: Any, outage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database goes away between loading the draft and depositing it: the deposit fails,
    saving the answers fails too, and the form comes back with them filled in."""
    start_url = "/demarches/signalement-voirie/nouveau"
    web.get(start_url)
    identity = {"last_name": "Dupont", "first_name": "Léa", "email": "lea.dupont@exemple.fr"}
    form_url = post(web, start_url, identity).headers["Location"]
    real_deposit = dossiers.deposit  # what app.py imports and calls as ``deposit``
    states: list[Any] = []

    def deposit_during_outage(*args: Any, **kwargs: Any) -> Any:
        state = outage()
        state.__enter__()
        states.append(state)
        return real_deposit(*args, **kwargs)

    monkeypatch.setattr(app_module, "deposit", deposit_during_outage)
    answers = {"subject": "Lampadaire éteint rue des Lilas", "message": "Depuis lundi soir."}
    try:
        response = post(web, form_url, {**answers, "action": "deposit"})
    finally:
        for state in states:
            state.__exit__(None, None, None)
    assert response.status_code == 503, response.text
    page = response.text
    assert "vos réponses n'ont pas pu être" in html.unescape(page)
    for value in answers.values():
        assert html.escape(value, quote=False) in page or value in html.unescape(page)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_session_store_unreachable_gives_a_503_not_a_404_and_keeps_the_cookie(
    web: Any, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """Only the session's check fails (a backend killed under it) and the next statement
    works: the visitor's own draft must not look like someone else's (it was a 404), and
    the browser's cookie, with its drafts, must survive the outage."""
    start_url = "/demarches/signalement-voirie/nouveau"
    web.get(start_url)
    identity = {"last_name": "Dupont", "first_name": "Léa", "email": "lea.dupont@exemple.fr"}
    form_url = post(web, start_url, identity).headers["Location"]
    cookie_before = web.get_cookie("session").value

    def unreachable(self: Any, sid: str) -> bool:
        raise OperationalError("SELECT host_session", {}, Exception("server closed"))

    typed = {"subject": "Lampadaire éteint", "message": "Depuis lundi.", "action": "save"}
    with monkeypatch.context() as patched:
        patched.setattr(sessions.RevocableSessionInterface, "_alive", unreachable)
        response = web.get(form_url) if method == "GET" else post(web, form_url, typed)
    page = _assert_clean_503(response)
    assert "Set-Cookie" not in response.headers
    assert web.get_cookie("session").value == cookie_before
    if method == "POST":
        assert _hidden(page) == typed
    assert web.get(form_url).status_code == 200  # store back: the same draft, still ours


@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("table", ["horscompte_throttle", "horscompte_tracking_code"])
def test_lock_timeout_gives_a_503_with_the_input(
    table: str,
    web: Any,
    host: Any,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another transaction holds a lock the lookup needs: past the lock timeout (shortened
    here) the page is a clean 503 with the typed input, not a hang and not a 500. The
    error in the log names the statement, not its parameters (the address was there)."""
    dossier = deposit(web, host)
    web.get(LOOKUP)
    monkeypatch.setattr(
        host, "engine", make_engine(database_url, connect_args={"options": "-c lock_timeout=300"})
    )
    blocker = make_engine(database_url)
    typed = {"email": dossier.email, "tracking_code": dossier.code}
    try:
        with blocker.begin() as connection:
            connection.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            response = post(web, LOOKUP, typed)
    finally:
        host.engine.dispose()
        blocker.dispose()
    page = _assert_clean_503(response)
    assert _hidden(page) == typed
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "database unavailable on POST /hors-compte/suivi" in logged
    assert dossier.email.split("@")[0] not in logged and dossier.code not in logged
