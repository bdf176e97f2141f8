"""The lookup at driver level, on SQLite and PostgreSQL: with a host that queues mail on a
driver connection (``queue_mail_on_connection``) and audit sinks that all take one
(``takes_driver_connection``), ``start_lookup`` writes without a SQLAlchemy transaction or an
ORM session; otherwise it takes the session path, running the same statements. Either way
its write transaction is all or nothing.

Lookups are run by ``start_lookup`` itself where what is watched is the lookup alone (engine
``begin`` events, ORM sessions), through the host's pages where the existing statement
comparison of match and miss is reused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, cast

import pluggy
import pytest
from conftest import quiet
from lookup_helpers import EMAIL, Deposited, deposit, lookup, mails, rows, validation_mails
from sqlalchemy import Integer, String, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.pool import QueuePool
from test_security_lookup import _observe_lookup

from opencrm_horscompte.base.db import (
    DriverConnection,
    DriverStatement,
    driver_connection,
    writer,
)
from opencrm_horscompte.base.emails import email_key
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.limits import (
    LOOKUP_DOSSIER_MAILS,
    LOOKUP_EMAIL,
    REPEAT_WINDOW,
    THROTTLE_REFUSED,
)
from opencrm_horscompte.base.models import AuditRecord, Challenge, DailyStat, ThrottleCounter
from opencrm_horscompte.hookspecs.horscompte import takes_driver_connection
from opencrm_horscompte.hookspecs.host import PROJECT, ConnectionMailHost
from opencrm_horscompte.host_kit.refhost.app import create_app
from opencrm_horscompte.host_kit.refhost.host import ReferenceHost
from opencrm_horscompte.lookup.start import (
    LOOKUP_MISS,
    LookupInput,
    read_settings_and_candidates,
    start_lookup,
)

hookimpl = pluggy.HookimplMarker(PROJECT)

CLIENT = "198.51.100.7"
WRONG_CODE = "ZZZZ-YYYY-XXXX"
DAY = date(2026, 11, 28)  # the test clock's day (UTC)


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def ref_host(host: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    return quiet(host, monkeypatch)


@pytest.fixture
def deposited(client: Any, ref_host: Any) -> Deposited:
    return deposit(client, ref_host)


class SessionMailHost(ReferenceHost):
    """The reference host without the optional ``queue_mail_on_connection`` (a host written
    before 0.2): the attribute is absent, as ``getattr`` and ``hasattr`` see it. Records
    what ``queue_mail`` receives."""

    mail_targets: list[object]

    def __getattribute__(self, name: str) -> Any:
        if name == "queue_mail_on_connection":
            raise AttributeError(name)
        return super().__getattribute__(name)

    def queue_mail(self, session: Any, message: Any) -> None:
        self.mail_targets.append(session)
        super().queue_mail(session, message)


def session_mail_host(host_factory: Any, monkeypatch: pytest.MonkeyPatch) -> SessionMailHost:
    """A second host on the test database (``host_factory``'s), made a :class:`SessionMailHost`."""
    host = host_factory()
    host.__class__ = SessionMailHost
    host.mail_targets = []
    return cast(SessionMailHost, quiet(host, monkeypatch))


@dataclass
class Watched:
    """What a block did besides its statements: engine ``begin`` events (a SQLAlchemy
    transaction) and ORM sessions that began a transaction."""

    begins: int = 0
    sessions: list[OrmSession] = field(default_factory=list)


@contextmanager
def watched(host: Any) -> Iterator[Watched]:
    seen = Watched()

    def on_begin(_connection: Any) -> None:
        seen.begins += 1

    def on_transaction(session: OrmSession, _transaction: Any) -> None:
        if session not in seen.sessions:
            seen.sessions.append(session)

    event.listen(host.engine, "begin", on_begin)
    event.listen(OrmSession, "after_transaction_create", on_transaction)
    try:
        yield seen
    finally:
        event.remove(OrmSession, "after_transaction_create", on_transaction)
        event.remove(host.engine, "begin", on_begin)


def look_up(host: Any, email: str, code: str) -> int:
    return start_lookup(host, LookupInput(email, code), CLIENT, "fr").challenge_id


def audit_records(host: Any, kind: str) -> list[AuditRecord]:
    return [record for record in rows(host, AuditRecord) if record.kind == kind]


def daily_stat(host: Any) -> DailyStat:
    [stat] = [row for row in rows(host, DailyStat) if row.day == DAY]
    return stat


_PROBE_TABLE = "horscompte_test_probe"
_PROBE_PUT = DriverStatement(
    text(f"INSERT INTO {_PROBE_TABLE} (kind, challenge) VALUES (:kind, :challenge)")
)
_PROBE_ROWS = DriverStatement(
    text(f"SELECT kind, challenge FROM {_PROBE_TABLE} ORDER BY kind, challenge").columns(
        kind=String, challenge=Integer
    )
)
_CHALLENGE = DriverStatement(
    text("SELECT id FROM horscompte_challenge WHERE id = :id").columns(id=Integer)
)


def create_probe_table(engine: Engine) -> None:
    with writer(engine).begin() as connection:
        connection.execute(
            text(f"CREATE TABLE {_PROBE_TABLE} (kind VARCHAR(64) NOT NULL, challenge INTEGER)")
        )


def probe_rows(engine: Engine) -> list[tuple[str, int | None]]:
    with engine.connect() as connection:
        return [(row.kind, row.challenge) for row in _PROBE_ROWS.all(connection)]


class UnmarkedSink:
    """A ``horscompte_audit_event`` implementation written for sessions only."""

    def __init__(self) -> None:
        self.received: list[tuple[str, object]] = []

    @hookimpl
    def horscompte_audit_event(self, host: Any, session: Any, event: Any) -> None:
        self.received.append((event.kind, session))


class MarkedSink:
    """A ``horscompte_audit_event`` implementation that takes a driver connection: it writes
    a probe row on it, and looks whether the lookup's challenge is visible there (its own
    transaction) and from another pooled connection (committed)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, object]] = []
        self.challenge_visible: list[tuple[bool, bool]] = []

    @hookimpl
    @takes_driver_connection
    def horscompte_audit_event(self, host: Any, session: Any, event: Any) -> None:
        self.received.append((event.kind, session))
        challenge = event.details.get("challenge")
        _PROBE_PUT.execute(session, {"kind": event.kind, "challenge": challenge}).close()
        if challenge is not None and isinstance(session, DriverConnection):
            inside = _CHALLENGE.first(session, {"id": challenge}) is not None
            with host.engine.connect() as other:  # rolled back when it goes back to the pool
                outside = _CHALLENGE.first(other, {"id": challenge}) is not None
            self.challenge_visible.append((inside, outside))


class FailingMarkedSink:
    @hookimpl
    @takes_driver_connection
    def horscompte_audit_event(self, host: Any, session: Any, event: Any) -> None:
        assert isinstance(session, DriverConnection)
        raise RuntimeError("the audit sink failed")


@contextmanager
def registered(host: Any, plugin: object, name: str) -> Iterator[object]:
    host.pm.register(plugin, name=name)
    try:
        yield plugin
    finally:
        host.pm.unregister(plugin=plugin, name=name)


# --------------------------------------------------------------------------- 1. driver level


def test_the_reference_host_looks_up_at_driver_level(ref_host: Any, deposited: Deposited) -> None:
    """A match and a miss open no SQLAlchemy transaction and no ORM session; the match
    queues exactly one validation mail, the miss its audit record and no mail."""
    host: ReferenceHost = ref_host
    assert isinstance(host, ConnectionMailHost)
    assert PluginHooks(host).driver_level_writes()
    mails_before = mails(host)
    validation_before = validation_mails(host)

    with watched(host) as seen:
        matched = look_up(host, EMAIL, deposited.code)
    assert (seen.begins, seen.sessions) == (0, [])
    new_mails = mails(host)[len(mails_before) :]
    assert len(new_mails) == 1 and new_mails[0].recipient == deposited.email
    assert len(validation_mails(host)) == len(validation_before) + 1
    assert audit_records(host, LOOKUP_MISS) == []

    outbox = [mail.id for mail in mails(host)]
    with watched(host) as seen:
        missed = look_up(host, EMAIL, WRONG_CODE)
    assert (seen.begins, seen.sessions) == (0, [])
    assert [mail.id for mail in mails(host)] == outbox  # no mail
    [record] = audit_records(host, LOOKUP_MISS)
    assert json.loads(record.details_json) == {"challenge": missed}
    assert missed != matched
    assert {challenge.id for challenge in rows(host, Challenge)} >= {matched, missed}
    assert cast(QueuePool, host.engine.pool).checkedout() == 0


# --------------------------------------------------------------------------- 2. session path


def test_a_host_without_queue_mail_on_connection_takes_the_session_path(
    ref_host: Any,
    deposited: Deposited,
    host_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    clock: Any,
) -> None:
    """``queue_mail`` gets an ORM session, the mail is queued, the miss audited; the
    statements of a match and a miss are the driver path's, shape for shape."""
    older = session_mail_host(host_factory, monkeypatch)
    assert getattr(older, "queue_mail_on_connection", None) is None  # what the plugin looks at
    assert not PluginHooks(older).driver_level_writes()
    assert PluginHooks(ref_host).driver_level_writes()

    validation_before = len(validation_mails(older))
    with watched(older) as seen:
        look_up(older, EMAIL, deposited.code)
    [target] = older.mail_targets
    assert isinstance(target, OrmSession)
    assert seen.begins == 1 and seen.sessions == [target]  # the watch sees this path
    assert len(validation_mails(older)) == validation_before + 1

    with watched(older) as seen:
        missed = look_up(older, EMAIL, WRONG_CODE)
    assert len(older.mail_targets) == 1  # no mail for a miss
    assert seen.begins == 1 and len(seen.sessions) == 1
    [record] = audit_records(older, LOOKUP_MISS)
    assert json.loads(record.details_json) == {"challenge": missed}

    # Match and miss, through the pages of each host: one set of statement shapes.
    # Two new browsers, one per host, so that the host's own work is the same for both.
    hosts = {"driver": ref_host, "session": older}
    browsers = {path: create_app(host).test_client() for path, host in hosts.items()}
    for browser in browsers.values():
        lookup(browser, "echauffement@exemple.fr", "AAAA-BBBB-CCCC")  # warm-up
    observed = {}
    for path, browser in browsers.items():
        for kind, code in [("match", deposited.code), ("miss", "WWWW-VVVV-UUUU")]:
            clock.advance(seconds=REPEAT_WINDOW.total_seconds() + 1)  # each a new lookup
            observed[path, kind] = _observe_lookup(hosts[path], browser, EMAIL, code, monkeypatch)
    reference = observed["driver", "match"]
    assert all(seen == reference for seen in observed.values()), observed
    statements = reference[0]
    assert any("horscompte_throttle" in sql for sql in statements), statements
    assert statements.count("INSERT <mail or audit>") == 1, statements
    assert len(older.mail_targets) == 2  # the session path's match above went through it


# --------------------------------------------------------------------------- 3. audit sinks


def test_an_unmarked_audit_sink_switches_to_the_session_path(
    ref_host: Any, deposited: Deposited
) -> None:
    host = ref_host
    sink = UnmarkedSink()
    with registered(host, sink, "unmarked-sink"):
        assert not PluginHooks(host).driver_level_writes()
        with watched(host) as seen:
            missed = look_up(host, EMAIL, WRONG_CODE)
        assert seen.begins == 1 and len(seen.sessions) == 1
    [(kind, session)] = sink.received
    assert kind == LOOKUP_MISS and isinstance(session, OrmSession)
    assert session is seen.sessions[0]
    [record] = audit_records(host, LOOKUP_MISS)  # the plugin's own sink ran too
    assert json.loads(record.details_json) == {"challenge": missed}
    assert PluginHooks(host).driver_level_writes()  # unregistered: back to the driver


def test_a_sink_enabled_during_a_driver_level_lookup_waits_for_the_next_one(
    ref_host: Any, deposited: Deposited, monkeypatch: pytest.MonkeyPatch, clock: Any
) -> None:
    """The lookup reads the enabled plugins once: an unmarked sink that an admin enables
    between the choice of the driver path and the audit gets no driver connection."""
    host = ref_host
    sink = UnmarkedSink()
    with registered(host, sink, "unmarked-sink"):
        reads = iter([frozenset({"unmarked-sink"})])
        monkeypatch.setattr(host, "disabled_names", lambda: next(reads, frozenset()))
        with watched(host) as seen:
            look_up(host, EMAIL, WRONG_CODE)  # disabled when it chose; enabled right after
        assert seen.begins == 0 and seen.sessions == []
        assert sink.received == []
        clock.advance(seconds=REPEAT_WINDOW.total_seconds() + 1)  # a new lookup, not a repeated one
        look_up(host, EMAIL, WRONG_CODE)  # the next lookup sees it: the session path
    [(kind, session)] = sink.received
    assert kind == LOOKUP_MISS and isinstance(session, OrmSession)


def test_a_marked_audit_sink_keeps_the_driver_path_and_commits_with_the_lookup(
    ref_host: Any, deposited: Deposited
) -> None:
    host = ref_host
    create_probe_table(host.engine)
    sink = MarkedSink()
    with registered(host, sink, "marked-sink"):
        assert PluginHooks(host).driver_level_writes()
        with watched(host) as seen:
            missed = look_up(host, EMAIL, WRONG_CODE)
        assert (seen.begins, seen.sessions) == (0, [])
    [(kind, connection)] = sink.received
    assert kind == LOOKUP_MISS and isinstance(connection, DriverConnection)
    # Inside the lookup's transaction: its challenge visible there, not yet elsewhere.
    assert sink.challenge_visible == [(True, False)]
    assert probe_rows(host.engine) == [(LOOKUP_MISS, missed)]  # committed with it
    [record] = audit_records(host, LOOKUP_MISS)
    assert json.loads(record.details_json) == {"challenge": missed}
    assert host.engine.pool.checkedout() == 0


# --------------------------------------------------------------------------- 4. refusal audit


@pytest.mark.parametrize("which", ["miss", "match"])
def test_the_first_refusal_is_audited_and_counted_at_driver_level(
    ref_host: Any, deposited: Deposited, which: str, clock: Any
) -> None:
    """Misses past ``LOOKUP_EMAIL`` (each with its own typed code: only the email's limit is
    reached), or matches past the dossier's mail cap: the first refused lookup records
    ``throttle.refused`` and bumps ``throttle_refusals``, at driver level; the next refused
    one records no second refusal."""
    host = ref_host
    if which == "miss":
        limit, codes = LOOKUP_EMAIL, [f"ZZZZ-YYYY-{n:04d}" for n in range(LOOKUP_EMAIL.limit + 2)]
    else:
        limit, codes = LOOKUP_DOSSIER_MAILS, [deposited.code] * (LOOKUP_DOSSIER_MAILS.limit + 2)
    allowed, refused, again = codes[: limit.limit], codes[limit.limit], codes[limit.limit + 1]
    validation_before = len(validation_mails(host))
    for code in allowed:
        look_up(host, EMAIL, code)
        clock.advance(
            seconds=REPEAT_WINDOW.total_seconds() + 1
        )  # each a new lookup, not a repeated one
    assert audit_records(host, THROTTLE_REFUSED) == []
    assert daily_stat(host).throttle_refusals == 0

    with watched(host) as seen:
        look_up(host, EMAIL, refused)
    assert (seen.begins, seen.sessions) == (0, [])
    [record] = audit_records(host, THROTTLE_REFUSED)
    assert json.loads(record.details_json) == {"scope": limit.scope}
    stat = daily_stat(host)
    assert (stat.throttle_refusals, stat.lookups) == (1, limit.limit + 1)

    clock.advance(seconds=REPEAT_WINDOW.total_seconds() + 1)
    look_up(host, EMAIL, again)
    assert len(audit_records(host, THROTTLE_REFUSED)) == 1
    stat = daily_stat(host)
    assert (stat.throttle_refusals, stat.lookups) == (1, limit.limit + 2)
    sent = len(validation_mails(host)) - validation_before
    assert sent == (limit.limit if which == "match" else 0)
    assert stat.codes_sent == sent
    # every refused lookup stands in as a miss: its audit record, no mail
    assert len(audit_records(host, LOOKUP_MISS)) == len(codes) - sent


# --------------------------------------------------------------------------- 5. connections

_ONE = DriverStatement(text("SELECT 1 AS one").columns(one=Integer))
_BEGIN = DriverStatement(text("BEGIN"))


def test_driver_connection_transaction_state_and_pool(engine: Engine) -> None:
    """Outside a transaction a read leaves SQLite in autocommit and PostgreSQL in its
    implicit transaction (``commit()`` ends it); ``transaction()`` holds one; the block
    returns the connection with nothing open."""
    sqlite = engine.dialect.name == "sqlite"
    with driver_connection(engine) as connection:
        assert cast(QueuePool, engine.pool).checkedout() == 1
        assert not connection.in_transaction()
        assert _ONE.first(connection) == (1,)
        assert connection.in_transaction() is (not sqlite)
        if not sqlite:
            connection.commit()
            assert not connection.in_transaction()
        with connection.transaction() as same:
            assert same is connection
            # SQLite: BEGIN IMMEDIATE has run; PostgreSQL begins with the first statement
            assert connection.in_transaction() is sqlite
            assert _ONE.first(connection) == (1,)
            assert connection.in_transaction()
        assert not connection.in_transaction()
    assert cast(QueuePool, engine.pool).checkedout() == 0

    # A transaction left open is rolled back when the connection goes back to the pool.
    with driver_connection(engine) as connection:
        if sqlite:
            _BEGIN.execute(connection).close()
        assert _ONE.first(connection) == (1,)
        assert connection.in_transaction()
        left_open = connection.dbapi_connection
    assert cast(QueuePool, engine.pool).checkedout() == 0
    with driver_connection(engine) as connection:
        assert connection.dbapi_connection is left_open  # the same pooled connection
        assert not connection.in_transaction()
    assert cast(QueuePool, engine.pool).checkedout() == 0


# --------------------------------------------------------------------------- 6. all or nothing


@pytest.mark.parametrize("level", ["driver", "sqlalchemy"])
def test_the_lookup_read_leaves_no_transaction_open(
    ref_host: Any, deposited: Deposited, level: str
) -> None:
    """Between its read and its write transaction a lookup draws its code and fills its
    mail: its connection must not sit in a transaction meanwhile (PostgreSQL begins one
    implicitly for a read at driver level, which a SQLAlchemy Connection doesn't see)."""
    key = email_key(EMAIL)
    if level == "driver":
        with driver_connection(ref_host.engine) as connection:
            _settings, candidates = read_settings_and_candidates(connection, key)
            assert not connection.in_transaction()
    else:
        with writer(ref_host.engine).connect() as connection:
            _settings, candidates = read_settings_and_candidates(connection, key)
            driver = DriverConnection(connection.engine, connection.connection)
            assert not connection.in_transaction() and not driver.in_transaction()
    assert [row.dossier_id for row in candidates] == [deposited.dossier_id]


def snapshot(host: Any) -> dict[str, Any]:
    """Every row a lookup writes: throttle counts, challenges, daily stats, outbox, audit."""
    return {
        "throttle": sorted((row.key, row.count) for row in rows(host, ThrottleCounter)),
        "challenges": sorted(
            (row.id, row.guard_key, row.code_hmac, row.expires_at) for row in rows(host, Challenge)
        ),
        "stats": sorted(tuple(row.model_dump().items()) for row in rows(host, DailyStat)),
        "outbox": [mail.id for mail in mails(host)],
        "audit": [(row.id, row.kind) for row in rows(host, AuditRecord)],
    }


@pytest.mark.parametrize("failure", ["mail", "audit"])
def test_a_failure_in_the_driver_write_transaction_keeps_nothing(
    ref_host: Any,
    deposited: Deposited,
    clock: Any,
    failure: str,
) -> None:
    """The host's ``queue_mail_on_connection`` (a match) or a marked audit sink (a miss)
    raises inside the write transaction: no throttle count, challenge, statistic, mail or
    audit record of that lookup is kept, and the pool serves the next lookup."""
    host = ref_host
    code = deposited.code if failure == "mail" else WRONG_CODE
    look_up(host, EMAIL, code)  # the rows the failed lookup would change exist
    clock.advance(
        seconds=REPEAT_WINDOW.total_seconds() + 1
    )  # not a repeated lookup: one that replaces the code
    before = snapshot(host)
    assert before["throttle"] and before["challenges"] and before["stats"]

    received: list[object] = []

    def failing_mail(connection: Any, message: Any) -> None:
        received.append(connection)
        raise RuntimeError("the host's outbox failed")

    if failure == "mail":
        host.queue_mail_on_connection = failing_mail  # this instance only
        try:
            with pytest.raises(RuntimeError, match="outbox failed"):
                look_up(host, EMAIL, code)
        finally:
            del host.queue_mail_on_connection
        [connection] = received
        assert isinstance(connection, DriverConnection)
    else:
        with registered(host, FailingMarkedSink(), "failing-sink"):
            assert PluginHooks(host).driver_level_writes()  # a marked sink: still the driver
            with pytest.raises(RuntimeError, match="audit sink failed"):
                look_up(host, EMAIL, code)

    assert snapshot(host) == before
    assert host.engine.pool.checkedout() == 0
    assert PluginHooks(host).driver_level_writes()
    look_up(host, EMAIL, code)  # the pool's connection writes again
    after = snapshot(host)
    counts_before = dict(before["throttle"])
    increments = [count - counts_before.get(key, 0) for key, count in after["throttle"]]
    # one more on each of the lookup's three keys: the failed lookup counted nowhere
    assert sorted(increments)[-3:] == [1, 1, 1] and sum(increments) == 3
    [today] = [dict(stat) for stat in after["stats"] if dict(stat)["day"] == DAY]
    [earlier] = [dict(stat) for stat in before["stats"] if dict(stat)["day"] == DAY]
    assert today["lookups"] == earlier["lookups"] + 1
    if failure == "mail":
        assert len(after["outbox"]) == len(before["outbox"]) + 1
    else:
        assert len(after["audit"]) == len(before["audit"]) + 1
    assert host.engine.pool.checkedout() == 0
