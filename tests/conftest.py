"""Shared fixtures: a real database per test (SQLite file, and PostgreSQL), a controllable clock.

PostgreSQL: one database is created per test run (``horscompte_test_<random>``) on the local
server and dropped at the end; each test gets an emptied ``public`` schema. An unreachable
server makes the PostgreSQL tests fail, never skip.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from smtp_server import Collector, free_port, start_smtp
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from opencrm_horscompte.base import rendering
from opencrm_horscompte.base.db import make_engine
from opencrm_horscompte.base.paths import PROPOSAL_PATH as PROPOSAL
from opencrm_horscompte.host_kit.refhost import host as host_module

PG_ADMIN_URL = os.environ.get(
    "HORSCOMPTE_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


class Clock:
    """A clock tests can move: ``clock()`` is now, ``clock.advance(seconds=...)`` moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"horscompte_test_{secrets.token_hex(6)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'crm.sqlite3'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend: SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        yield _sqlite_url(tmp_path)
        return
    url = request.getfixturevalue("pg_database_url")
    yield url
    empty_public_schema(url)


def empty_public_schema(url: str) -> None:
    """Drop everything in the PostgreSQL database's ``public`` schema (a test's cleanup)."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return _sqlite_url(tmp_path)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


# --------------------------------------------------------------------------- reference host

TEST_SECRET_KEYS = [b"old-test-key-" + b"0" * 19, b"new-test-key-" + b"1" * 19]
ADMIN = ("admin@demoville.fr", "admin-password")
CITIZEN = ("camille.martin@exemple.fr", "citizen-password")


@pytest.fixture
def host_factory(database_url: str, clock: Clock) -> Iterator[Any]:
    """Build a reference host on the test database, the plugin enabled and demo data seeded.

    ``host_factory(extra_plugins=[...])`` registers test plugins beside the real one.
    """
    from opencrm_horscompte.host_kit.refhost.host import HostConfig, ReferenceHost
    from opencrm_horscompte.host_kit.refhost.seed import seed

    hosts: list[ReferenceHost] = []

    def build(**overrides: Any) -> ReferenceHost:
        config = HostConfig(
            database_url=database_url, secret_keys=TEST_SECRET_KEYS, clock=clock, **overrides
        )
        host = ReferenceHost(config)
        seed(host, citizen_password=CITIZEN[1], admin_password=ADMIN[1])
        hosts.append(host)
        return host

    yield build
    for host in hosts:
        host.engine.dispose()


@pytest.fixture
def host(host_factory: Any) -> Any:
    return host_factory()


def new_client(host: Any) -> Any:
    """A browser on ``host``'s site (the reference app, in testing mode), with its own cookies."""
    from opencrm_horscompte.host_kit.refhost.app import create_app

    app = create_app(host)
    app.config["TESTING"] = True
    return app.test_client()


@pytest.fixture
def client(host: Any) -> Any:
    return new_client(host)


def csrf_token(client: Any) -> str:
    """The session's CSRF token (a GET first makes the host issue one)."""
    with client.session_transaction() as session:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return cast(str, session["csrf"])


def post(client: Any, url: str, data: dict[str, str], **kwargs: Any) -> Any:
    return client.post(url, data={"csrf_token": csrf_token(client), **data}, **kwargs)


def through_proposal(client: Any, response: Any) -> Any:
    """The identity step's answer to a first screen: the login proposal's page when it
    redirects there (post/redirect/get), else the answer itself (on to the form)."""
    if response.status_code == 303 and response.headers.get("Location") == PROPOSAL:
        return client.get(PROPOSAL)
    return response


def login(client: Any, who: tuple[str, str]) -> None:
    response = post(client, "/connexion", {"email": who[0], "password": who[1]})
    assert response.status_code == 303, response.text


@contextmanager
def recorded_statements(host: Any) -> Iterator[list[str]]:
    """Every SQL statement sent on ``host.engine`` inside the block, whitespace folded,
    except the host's periodic re-read of the plugin switches (time-based, unrelated to
    the request being measured)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "host_plugin_state" not in statement:
            seen.append(" ".join(statement.split()))

    event.listen(host.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(host.engine, "before_cursor_execute", record)


MAIL_OR_AUDIT_INSERT = re.compile(r"^INSERT INTO (host_mail_outbox|horscompte_audit_event) .*")


@dataclass
class Work:
    """What a request did that a stranger could time: its SQL statements and the fragments
    it rendered. ``shape()`` folds the mail and audit inserts into one statement, so a mail
    that is sent and an audit line that is written instead compare equal."""

    statements: list[str]
    rendered: list[str]

    def shape(self) -> tuple[list[str], list[str]]:
        folded = [MAIL_OR_AUDIT_INSERT.sub("INSERT <mail or audit>", s) for s in self.statements]
        return folded, self.rendered


@contextmanager
def observed_work(host: Any) -> Iterator[Work]:
    """The ``Work`` done inside the block on ``host``, for "same work with or without an
    account/dossier" checks (enumeration by timing)."""
    original = rendering.render_fragment
    rendered: list[str] = []

    def counting(host_: Any, template: str, *args: Any, **kwargs: Any) -> str:
        rendered.append(template)
        return original(host_, template, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch, recorded_statements(host) as statements:
        patch.setattr(rendering, "render_fragment", counting)
        yield Work(statements, rendered)


def browser(client: Any) -> Any:
    """Another browser on the same site (its own cookies)."""
    return client.application.test_client()


def quiet(host: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``host`` with its plugin switches read now and not again during the test: their
    periodic re-read (an ORM session, time-based) stays out of what is counted."""
    monkeypatch.setattr(host_module, "PLUGIN_STATE_TTL_SECONDS", 3600.0)
    host._state.read_at = float("-inf")
    host.disabled_names()
    return host


@pytest.fixture
def quiet_host(host: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    return quiet(host, monkeypatch)


@pytest.fixture
def smtp() -> Iterator[tuple[int, Collector]]:
    """A real SMTP server (aiosmtpd) on a free loopback port, and what it received."""
    port = free_port()
    controller, collector = start_smtp(port)
    try:
        yield port, collector
    finally:
        controller.stop()
