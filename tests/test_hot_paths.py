"""What the lean hot paths keep: settings cached per process yet changed everywhere at once,
the deposit's work (code and acknowledgment mail) prepared outside the transaction yet
checked inside, statements run at driver speed yet seen by statement recorders and raising
SQLAlchemy's errors, mails filled from a skeleton yet the same as a direct render."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast
from zoneinfo import ZoneInfo

import jinja2
import pytest
from conftest import ADMIN, recorded_statements
from sqlalchemy import Engine, Integer, bindparam, event, exc, literal_column, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.pool import QueuePool
from sqlmodel import Session, col, select

from opencrm_horscompte.base import mail_skeleton, rendering
from opencrm_horscompte.base.db import (
    DriverStatement,
    UTCDateTime,
    driver_transaction,
    make_engine,
    writer,
)
from opencrm_horscompte.base.models import TrackingCode
from opencrm_horscompte.base.rendering import render_mail
from opencrm_horscompte.host_kit.refhost.dossiers import create_draft, deposit, update_identity
from opencrm_horscompte.host_kit.refhost.models import Account, Demarche
from opencrm_horscompte.host_kit.refhost.outbox import OutboxMail
from opencrm_horscompte.settings.mail_templates import DEFAULT_VALIDATION_TEMPLATE
from opencrm_horscompte.settings.store import load_settings, save_settings
from opencrm_horscompte.tracking import deposit as tracking_deposit
from opencrm_horscompte.tracking.codes import format_tracking_code

IDENTITY = {"last_name": "Dupont", "first_name": "Léa", "email": "lea.dupont@exemple.fr"}
ANSWERS = {"subject": "Lampadaire", "message": "Depuis lundi."}


def a_demarche(host: Any) -> Demarche:
    with Session(host.engine, expire_on_commit=False) as session:
        return session.exec(select(Demarche).where(Demarche.slug == "signalement-voirie")).one()


def settings_of(host: Any) -> Any:
    with Session(host.engine) as session:
        return load_settings(session)


def test_a_saved_change_reaches_a_process_that_cached_the_settings(host_factory: Any) -> None:
    """Two hosts on one database stand for two worker processes: the second keeps its parsed
    settings until the first saves a change, then sees it on its next read."""
    first, second = host_factory(), host_factory()
    cached = settings_of(second)
    assert settings_of(second) is cached  # parsed once, not on every request
    with Session(writer(first.engine)) as session, session.begin():
        save_settings(first, session, cached.replace(tracking_code_length=14), actor=ADMIN[0])
    assert settings_of(second).tracking_code_length == 14


def test_reading_the_settings_is_one_statement(host: Any) -> None:
    settings_of(host)
    with recorded_statements(host) as seen:
        settings_of(host)
    data = [sql for sql in seen if not sql.startswith("BEGIN")]
    assert len(data) == 1 and "horscompte_settings_version" in data[0], seen


def deposit_with_prepare(host: Any, email: str | None = None) -> tuple[Any, str, OutboxMail]:
    draft = create_draft(host, a_demarche(host), IDENTITY, None)
    settings_of(host)  # what a running process has: the settings loaded once
    if email is not None:  # the draft changes between the preparation and the deposit
        host.hook.opencrm_deposit_prepare(host=host, dossier=draft)
        update_identity(host, draft.draft_key, {**IDENTITY, "email": email})
        dossier = deposit(host, draft.draft_key, ANSWERS)
    else:
        dossier = deposit(host, draft.draft_key, ANSWERS, draft)
    with Session(host.engine) as session:
        row = session.get(TrackingCode, dossier.id)
        mail = session.exec(select(OutboxMail).order_by(col(OutboxMail.id).desc())).first()
    assert row is not None and mail is not None
    code = row.code
    return dossier, code, mail


def test_the_prepared_code_and_mail_are_the_ones_deposited(
    host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[str] = []
    original = tracking_deposit._candidate

    def counting(host: Any, settings: Any, policy: Any) -> str:
        drawn.append(original(host, settings, policy))
        return drawn[-1]

    monkeypatch.setattr(tracking_deposit, "_candidate", counting)
    _, code, mail = deposit_with_prepare(host)
    assert drawn == [code]  # drawn once, before the transaction
    assert mail.recipient == IDENTITY["email"] and format_tracking_code(code) in mail.text
    assert tracking_deposit._prepared == {}


def test_a_draft_changed_after_its_preparation_gets_a_fresh_mail(host: Any) -> None:
    _, code, mail = deposit_with_prepare(host, email="autre.adresse@exemple.fr")
    assert mail.recipient == "autre.adresse@exemple.fr"
    assert format_tracking_code(code) in mail.text


def test_the_prepared_acknowledgment_is_the_one_queued(host: Any) -> None:
    dossier, code, _ = deposit_with_prepare(host)
    again = tracking_deposit.acknowledgment_mail(host, dossier, code)
    assert format_tracking_code(code) in again.text
    assert "&lt;b&gt;" in (tracking_deposit.acknowledgment_mail(host, dossier, "<b>").html or "")


def test_driver_statements_are_recorded_and_raise_sqlalchemy_errors(host: Any) -> None:
    dossier, code, _ = deposit_with_prepare(host)
    statement = DriverStatement(tracking_deposit._insert_unless_taken(host.engine.dialect.name))
    row = {
        "dossier_id": dossier.id,
        "code": code + "x",
        "policy_json": "{}",
        "issued_at": host.now(),
        "email": "a@exemple.fr",
        "email_key": "a@exemple.fr",
        "demarche_title": "t",
        "locale": "fr",
    }
    with (
        recorded_statements(host) as seen,
        pytest.raises(exc.IntegrityError),
        writer(host.engine).begin() as connection,
    ):
        statement.execute(connection, row)
    assert any("INSERT INTO horscompte_tracking_code" in sql for sql in seen), seen


def test_a_prepared_deposit_checks_the_settings_version_in_its_insert(host: Any) -> None:
    """Prepared, the code's insert requires the settings version it was drawn under: the
    transaction runs three data statements (code, daily counter, mail), no settings read."""
    draft = create_draft(host, a_demarche(host), IDENTITY, None)
    settings_of(host)
    with recorded_statements(host) as seen:
        deposit(host, draft.draft_key, ANSWERS, draft)
    plugin = [sql for sql in seen if "horscompte_" in sql or "host_mail_outbox" in sql]
    assert len(plugin) == 3, plugin
    assert "horscompte_settings_version" in plugin[0] and plugin[0].startswith("INSERT")


def test_settings_saved_after_the_preparation_give_a_code_under_the_new_ones(host: Any) -> None:
    """An admin lengthens the code between a deposit's preparation and its transaction: the
    prepared code (old length) is not inserted; the deposit draws under the saved settings
    and its mail shows the code it got."""
    draft = create_draft(host, a_demarche(host), IDENTITY, None)
    current = settings_of(host)
    host.hook.opencrm_deposit_prepare(host=host, dossier=draft)
    longer = current.tracking_code_length + 2
    with Session(host.engine) as session, session.begin():
        save_settings(host, session, current.replace(tracking_code_length=longer), actor=ADMIN[0])
    dossier = deposit(host, draft.draft_key, ANSWERS)
    with Session(host.engine) as session:
        row = session.get(TrackingCode, dossier.id)
        mail = session.exec(select(OutboxMail).order_by(col(OutboxMail.id).desc())).first()
    assert row is not None and mail is not None
    assert len(row.code) == longer and format_tracking_code(row.code) in mail.text
    assert tracking_deposit._prepared == {}


def test_a_prepared_code_taken_meanwhile_is_drawn_again(
    host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another dossier got the prepared code first: the deposit draws a free one, and its
    mail is rendered again with it."""
    first = create_draft(host, a_demarche(host), IDENTITY, None)
    second = create_draft(host, a_demarche(host), IDENTITY, None)
    settings_of(host)
    draws = iter(["ABCD2345", "ABCD2345", "EFGH6789"])
    monkeypatch.setattr(tracking_deposit, "_candidate", lambda *_: next(draws))
    deposit(host, first.draft_key, ANSWERS, first)
    dossier = deposit(host, second.draft_key, ANSWERS, second)
    with Session(host.engine) as session:
        row = session.get(TrackingCode, dossier.id)
        mail = session.exec(select(OutboxMail).order_by(col(OutboxMail.id).desc())).first()
    assert row is not None and mail is not None
    assert row.code == "EFGH6789" and format_tracking_code("EFGH6789") in mail.text


def test_a_deposit_minutes_after_its_preparation_shows_its_own_time(host: Any, clock: Any) -> None:
    """The prepared mail states the deposit time: a deposit in another minute than its
    preparation gets a mail rendered again, with the time stored on the dossier."""
    draft = create_draft(host, a_demarche(host), IDENTITY, None)
    settings_of(host)
    host.hook.opencrm_deposit_prepare(host=host, dossier=draft)
    clock.advance(minutes=2)
    deposit(host, draft.draft_key, ANSWERS)
    with Session(host.engine) as session:
        mail = session.exec(select(OutboxMail).order_by(col(OutboxMail.id).desc())).first()
    assert mail is not None and "10:02" in mail.text  # 09:02 UTC, in Europe/Paris
    assert tracking_deposit._prepared == {}


@pytest.mark.parametrize(
    ("prepared_at", "deposited_after", "reused", "shown"),
    [
        ((9, 0, 0, 0), {"seconds": 59.999999}, True, "10:00"),  # the minute's last instant
        ((9, 0, 59, 999999), {"microseconds": 1}, False, "10:01"),  # the next minute
        ((9, 0, 30, 0), {"seconds": -31}, False, "09:59"),  # a clock set back
    ],
)
def test_a_preparation_serves_its_own_minute_only(
    host: Any,
    clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    prepared_at: tuple[int, int, int, int],
    deposited_after: dict[str, float],
    reused: bool,
    shown: str,
) -> None:
    """The prepared mail is kept when the deposit time falls in the minute it shows (the
    UTC span computed at preparation), and rendered again otherwise, to the microsecond."""
    hour, minute, second, micro = prepared_at
    clock.current = clock.current.replace(
        hour=hour, minute=minute, second=second, microsecond=micro
    )
    draft = create_draft(host, a_demarche(host), IDENTITY, None)
    settings_of(host)
    host.hook.opencrm_deposit_prepare(host=host, dossier=draft)
    rendered: list[str | None] = []
    original = tracking_deposit.acknowledgment_mail

    def counting(host: Any, dossier: Any, code: str | None) -> Any:
        rendered.append(code)
        return original(host, dossier, code)

    monkeypatch.setattr(tracking_deposit, "acknowledgment_mail", counting)
    clock.advance(**deposited_after)
    deposit(host, draft.draft_key, ANSWERS)
    with Session(host.engine) as session:
        mail = session.exec(select(OutboxMail).order_by(col(OutboxMail.id).desc())).first()
    assert mail is not None and f"à {shown}" in mail.text  # Europe/Paris, UTC+1
    assert len(rendered) == (0 if reused else 1)  # rendered again only out of its minute


def test_an_accounts_acknowledgment_is_prepared_outside_the_transaction(
    host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders: list[bool] = []
    original = tracking_deposit.acknowledgment_mail

    def watching(host_: Any, dossier: Any, code: str | None) -> Any:
        renders.append(code is None)
        return original(host_, dossier, code)

    monkeypatch.setattr(tracking_deposit, "acknowledgment_mail", watching)
    with Session(host.engine) as session:
        account_id = session.exec(select(Account.id)).first()
    draft = create_draft(host, a_demarche(host), IDENTITY, account_id)
    host.hook.opencrm_deposit_prepare(host=host, dossier=draft)
    assert renders == [True]  # rendered in the preparation, before the transaction
    deposit(host, draft.draft_key, ANSWERS)
    assert renders == [True]  # and not again inside it
    assert tracking_deposit._prepared == {}


# --------------------------------------------------------------------------- mail skeletons

TITLE = "Voirie <b>&</b> « 'trottoir' »  \"rue\""


def validation_mail(host: Any, locale: str, code: str, title: str = TITLE) -> tuple[Any, Any]:
    """The validation mail filled from its skeleton, and rendered directly."""
    context = {"expiry_minutes": 15, "lookup_url": "https://mairie.example/suivi"}
    filled = {"code": code, "demarche_title": title}
    to = "lea@exemple.fr"
    template = DEFAULT_VALIDATION_TEMPLATE
    return (
        mail_skeleton.render_filled_mail(host, to, template, context, filled, locale),
        render_mail(host, to, template, {**context, **filled}, locale),
    )


@pytest.mark.parametrize("locale", ["fr", "en", "de"])
def test_a_filled_mail_is_the_mail_a_direct_render_gives(host: Any, locale: str) -> None:
    for code, title in [("042917", TITLE), ("99", ""), ("12345678", "Démarche\nsur deux lignes")]:
        filled, direct = validation_mail(host, locale, code, title)
        assert filled == direct
        assert code in filled.text and code in (filled.html or "")
    first, _ = validation_mail(host, locale, "111111")
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in (first.html or "")  # escaped in the HTML part only
    assert "<b>&</b>" in first.text and "<b>&</b>" in first.subject


def test_a_template_that_transforms_a_value_is_rendered_directly(host: Any) -> None:
    """A host template that slices the code and upper-cases the title fails the skeleton's
    proof: each of its mails is rendered in full, and is right."""
    host.template_loader = jinja2.DictLoader(
        {
            "horscompte/mail/validation_subject.txt": "{{ demarche_title|upper }}",
            "horscompte/mail/validation.txt": "{{ code[:3] }} {{ code[3:] }}",
            "horscompte/mail/validation.html": "<p>{{ code|length }} {{ code }}</p>",
        }
    )
    mail_skeleton.forget_skeletons()
    try:
        filled, direct = validation_mail(host, "fr", "123456", "rue")
        assert filled == direct
        assert (filled.subject, filled.text, filled.html) == ("RUE", "123 456", "<p>6 123456</p>")
    finally:
        host.template_loader = None
        mail_skeleton.forget_skeletons()


def test_every_locale_is_built_at_once(host: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which locales a process has seen never changes what a mail costs: a lookup's match (the
    dossier's locale) and its decoy (the page's) do the same work from the first one on."""
    mail_skeleton.forget_skeletons()
    validation_mail(host, "fr", "123456")
    renders: list[str] = []
    original = rendering.render_fragment

    def counting(*args: Any, **kwargs: Any) -> str:
        renders.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(rendering, "render_fragment", counting)
    for locale in ("en", "fr", "en-GB", "de"):
        validation_mail(host, locale, "654321")[0]
    assert len(renders) == 4 * 3  # the direct renders of the comparison only, none for filling


def test_driver_statement_rows_are_named_and_processed(host: Any) -> None:
    """Rows come back as SQLAlchemy would give them: by column name, timestamps aware UTC."""
    deposit_with_prepare(host)
    statement = DriverStatement(
        select(col(TrackingCode.dossier_id), col(TrackingCode.issued_at)).order_by(
            col(TrackingCode.dossier_id)
        )
    )
    with host.engine.connect() as connection:
        row = statement.first(connection)
        rows = statement.all(connection)
    assert row == rows[0] and isinstance(row.dossier_id, int)
    assert row.issued_at.tzinfo is not None and row.issued_at.utcoffset().total_seconds() == 0


def test_a_text_statement_without_declared_columns_gives_plain_tuples(host: Any) -> None:
    statement = DriverStatement(text("SELECT 1, 'deux'"))
    with host.engine.connect() as connection:
        assert statement.all(connection) == [(1, "deux")]
        assert statement.first(connection) == (1, "deux")


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 1, 14, 3, 4, tzinfo=UTC),  # no microseconds: still six digits
        datetime(2026, 3, 29, 2, 30, 0, 5, tzinfo=timezone(timedelta(hours=2))),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 3, 4, 5, 6, 7, 999_999, tzinfo=ZoneInfo("Europe/Paris")),
    ],
)
def test_a_timestamp_is_bound_as_sqlalchemy_binds_it(moment: datetime) -> None:
    """The fast SQLite bind of UTCDateTime gives the text SQLAlchemy's own path gives."""
    dialect = sqlite.dialect()
    column_type = UTCDateTime()
    fast = column_type.bind_processor(dialect)
    stored = column_type.impl_instance.dialect_impl(dialect).bind_processor(dialect)
    assert stored is not None
    assert fast(moment) == stored(column_type.process_bind_param(moment, dialect))
    assert fast(None) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        fast(moment.replace(tzinfo=None))


def test_a_bind_used_twice_is_processed_once_and_bound_twice(host: Any) -> None:
    stamp = bindparam("stamp", type_=UTCDateTime())
    statement = DriverStatement(select(literal_column("1")).where(stamp == stamp, stamp != None))  # noqa: E711
    calls: list[Any] = []
    compiled = statement._for(host.engine.dialect)
    [(index, processor)] = compiled.processed

    def counting(value: Any) -> Any:
        calls.append(value)
        return processor(value)

    statement._compiled[host.engine.dialect.name] = replace(
        compiled, processed=((index, counting),)
    )
    with host.engine.connect() as connection:
        assert statement.first(connection, {"stamp": host.now()}) == (1,)
    assert len(calls) == 1


# --------------------------------------------------------------------------- driver transactions

_PUT = DriverStatement(text("INSERT INTO probe (id, parent_id) VALUES (:id, :parent_id)"))
_ROWS = DriverStatement(text("SELECT id FROM probe ORDER BY id").columns(id=Integer))


@pytest.fixture
def probe_engine(engine: Engine) -> Engine:
    """``engine`` with a table whose foreign key is checked at commit (deferred)."""
    with writer(engine).begin() as connection:
        connection.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        connection.execute(
            text(
                "CREATE TABLE probe (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES "
                "parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    return engine


def probe_ids(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return [row.id for row in _ROWS.all(connection)]


def test_a_driver_transaction_commits_when_its_block_ends(probe_engine: Engine) -> None:
    with driver_transaction(probe_engine) as connection:
        _PUT.execute(connection, {"id": 1, "parent_id": None}).close()
        _PUT.execute(connection, {"id": 2, "parent_id": None}).close()
        assert [row.id for row in _ROWS.all(connection)] == [1, 2]  # its own writes, inside
    assert probe_ids(probe_engine) == [1, 2]
    assert cast(QueuePool, probe_engine.pool).checkedout() == 0


def assert_nothing_kept_and_the_pool_usable(engine: Engine) -> None:
    """No row of the failed transaction, its connection back in the pool, and the next
    transaction commits."""
    assert probe_ids(engine) == []
    assert cast(QueuePool, engine.pool).checkedout() == 0
    with driver_transaction(engine) as connection:
        _PUT.execute(connection, {"id": 3, "parent_id": None}).close()
    assert probe_ids(engine) == [3]


@pytest.mark.parametrize("failure", ["python", "driver"])
def test_a_driver_transaction_that_raises_keeps_nothing(probe_engine: Engine, failure: str) -> None:
    """An exception in the block rolls back every statement of it; a driver error is raised
    as SQLAlchemy raises it; the connection goes back to the pool, usable."""
    expected = ValueError if failure == "python" else exc.IntegrityError
    with pytest.raises(expected), driver_transaction(probe_engine) as connection:
        _PUT.execute(connection, {"id": 1, "parent_id": None}).close()
        if failure == "python":
            raise ValueError("the handler failed")
        _PUT.execute(connection, {"id": 1, "parent_id": None}).close()  # duplicate key
    assert_nothing_kept_and_the_pool_usable(probe_engine)


def test_a_commit_refused_by_the_database_raises_and_keeps_nothing(probe_engine: Engine) -> None:
    """A deferred constraint fails at COMMIT: SQLAlchemy's IntegrityError, nothing kept, and
    the next transaction on the pooled connection works."""
    with pytest.raises(exc.IntegrityError), driver_transaction(probe_engine) as connection:
        _PUT.execute(connection, {"id": 1, "parent_id": None}).close()
        _PUT.execute(connection, {"id": 2, "parent_id": 99}).close()  # no such parent
    assert_nothing_kept_and_the_pool_usable(probe_engine)


def test_a_driver_transaction_holds_the_sqlite_write_lock_from_its_start(sqlite_url: str) -> None:
    """``BEGIN IMMEDIATE`` runs before the block: another writer is refused at once, even
    before the first statement (the clock read under the lock is then the lock's time)."""
    engine = make_engine(sqlite_url)
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    try:
        with driver_transaction(engine), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released by the commit
        other.execute("COMMIT")
    finally:
        other.close()
        engine.dispose()


def test_cursor_listeners_see_a_driver_transactions_statements(probe_engine: Engine) -> None:
    """Statement recorders and per-connection clocks keep working: the engine's cursor
    listeners get every statement, with a connection whose ``info`` is the pooled one's."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append((statement.split()[0], conn.info.setdefault("mark", object())))

    event.listen(probe_engine, "before_cursor_execute", record)
    try:
        with driver_transaction(probe_engine) as connection:
            _PUT.execute(connection, {"id": 1, "parent_id": None}).close()
    finally:
        event.remove(probe_engine, "before_cursor_execute", record)
    verbs = [verb for verb, _ in seen]
    begin = ["BEGIN"] if probe_engine.dialect.name == "sqlite" else []
    assert verbs == [*begin, "INSERT"]
    assert len({mark for _, mark in seen}) == 1  # one connection's info throughout
