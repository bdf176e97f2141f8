"""Alembic migrations of the plugin (``horscompte_alembic_version``) and of the reference host
(``host_alembic_version``), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from conftest import empty_public_schema
from processes import all_at_once
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine

from opencrm_horscompte.base.db import make_engine
from opencrm_horscompte.base.migrations import (
    PLUGIN_MIGRATIONS,
    MigrationSet,
    alembic_config,
    current_revision,
    head_revision,
    history,
    schema_differences,
    upgrade,
)
from opencrm_horscompte.base.models import (
    PLUGIN_TABLES,
)
from opencrm_horscompte.cli import main
from opencrm_horscompte.host_kit.refhost.migrate import HOST_MIGRATIONS

AT = datetime(2026, 6, 1, 8, 30, tzinfo=UTC)
SETS = [PLUGIN_MIGRATIONS, HOST_MIGRATIONS]


def _snapshot(engine: Engine) -> dict[str, Any]:
    """Tables, columns, indexes, unique constraints and version rows: what an upgrade could
    change."""
    inspector = inspect(engine)
    shape: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        shape[table] = (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)),
            sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
        )
    with engine.connect() as connection:
        for migrations in SETS:
            rows = connection.execute(text(f"SELECT * FROM {migrations.version_table}"))
            shape[f"{migrations.version_table} rows"] = sorted(tuple(row) for row in rows)
    return shape


@pytest.mark.parametrize("migrations", SETS, ids=lambda m: m.name)
def test_migrated_schema_equals_the_models(engine: Engine, migrations: MigrationSet) -> None:
    upgrade(engine, migrations)
    assert current_revision(engine, migrations) == head_revision(migrations)
    assert schema_differences(engine, migrations) == []
    tables = set(inspect(engine).get_table_names())
    assert migrations.version_table in tables
    assert {table.name for table in migrations.tables} <= tables


def test_the_comparison_sees_a_missing_column(engine: Engine) -> None:
    """The equality above means something: a schema that lags the models is reported."""
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_horscompte_audit_event_kind"))
    differences = schema_differences(engine)
    assert [difference[0] for difference in differences] == ["add_index"]


def test_upgrading_twice_changes_nothing(engine: Engine) -> None:
    for migrations in SETS:
        upgrade(engine, migrations)
    before = _snapshot(engine)
    for migrations in SETS:
        upgrade(engine, migrations)
    assert _snapshot(engine) == before


def test_version_tables_are_apart(engine: Engine) -> None:
    for migrations in SETS:
        upgrade(engine, migrations)
    with engine.connect() as connection:
        plugin = connection.execute(text("SELECT version_num FROM horscompte_alembic_version"))
        host = connection.execute(text("SELECT version_num FROM host_alembic_version"))
        assert [row[0] for row in plugin] == [head_revision(PLUGIN_MIGRATIONS)]
        assert [row[0] for row in host] == [head_revision(HOST_MIGRATIONS)]
    assert "alembic_version" not in inspect(engine).get_table_names()


def _consume_with_a_guard(engine: Engine, guard: str) -> list[Any]:
    """A live challenge and its guard's failures, then the consuming UPDATE; the guards left."""
    with engine.begin() as connection:
        connection.execute(
            text(
                'INSERT INTO horscompte_failure_guard ("key", failures, not_before) '
                "VALUES (:guard, 3, :at)"
            ),
            {"guard": guard, "at": AT},
        )
        connection.execute(
            text(
                "INSERT INTO horscompte_challenge (dossier_id, guard_key, code_hmac, created_at, "
                "expires_at, attempts) VALUES (NULL, :guard, :hmac, :at, :at, 0)"
            ),
            {"guard": guard, "hmac": "0" * 64, "at": AT},
        )
        connection.execute(
            text("UPDATE horscompte_challenge SET consumed_at = :at WHERE guard_key = :guard"),
            {"guard": guard, "at": AT},
        )
        rows = connection.execute(text('SELECT "key" FROM horscompte_failure_guard'))
        return [row[0] for row in rows]


def test_consuming_a_code_forgets_its_guard_in_the_database(engine: Engine) -> None:
    """Revision 0003's trigger: verify relies on it (one statement less for a right code).
    Downgrading removes it, upgrading puts it back."""
    upgrade(engine)
    assert _consume_with_a_guard(engine, "a" * 64) == []
    with engine.begin() as connection:
        command.downgrade(alembic_config(PLUGIN_MIGRATIONS, connection), "0002_release_0_2")
    assert _consume_with_a_guard(engine, "b" * 64) == ["b" * 64]
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert sorted(_consume_with_a_guard(engine, "c" * 64)) == ["b" * 64]


# --------------------------------------------------------------------------- release 0.1


def _stamp(name: str, nullable: bool = False) -> Column[Any]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


# The schema release 0.1 made with ``create_all`` (its models, frozen here: today's models
# have moved on, and the test must start from what is installed in town halls).
_RELEASE_0_1 = MetaData()
_RELEASE_0_1_TABLES: list[tuple[str, *tuple[Column[Any], ...]]] = [
    (
        "horscompte_setting",
        Column("key", String(64), primary_key=True),
        Column("value_json", Text, nullable=False),
        _stamp("updated_at"),
        Column("updated_by", String(320), nullable=False),
    ),
    (
        "horscompte_tracking_code",
        Column("dossier_id", Integer, primary_key=True, autoincrement=False),
        Column("code", String(64), nullable=False, unique=True),
        Column("policy_json", Text, nullable=False),
        _stamp("issued_at"),
        Column("email", String(320), nullable=False),
        Column("email_key", String(320), nullable=False, index=True),
        Column("demarche_title", String(200), nullable=False),
        Column("locale", String(10), nullable=False),
    ),
    (
        "horscompte_audit_event",
        Column("id", Integer, primary_key=True),
        Column("kind", String(64), nullable=False, index=True),
        Column("actor", String(320), nullable=False),
        _stamp("at"),
        Column("details_json", Text, nullable=False),
    ),
    (
        "horscompte_throttle",
        Column("key", String(64), primary_key=True),
        _stamp("window_start"),
        _stamp("expires_at"),
        Column("count", Integer, nullable=False),
    ),
    (
        "horscompte_identity_choice",
        Column("draft_ref", String(64), primary_key=True),
        Column("choice", String(16), nullable=False),
        _stamp("at"),
    ),
    (
        "horscompte_challenge",
        Column("id", Integer, primary_key=True),
        Column("dossier_id", Integer, nullable=True, index=True),
        Column("guard_key", String(64), nullable=False, index=True),
        Column("code_hmac", String(64), nullable=False),
        _stamp("created_at"),
        _stamp("expires_at"),
        Column("attempts", Integer, nullable=False),
        _stamp("consumed_at", nullable=True),
    ),
    (
        "horscompte_failure_guard",
        Column("key", String(64), primary_key=True),
        Column("failures", Integer, nullable=False),
        _stamp("not_before"),
    ),
    (
        "host_account",
        Column("id", Integer, primary_key=True),
        Column("email", String(320), nullable=False, unique=True),
        Column("email_key", String(320), nullable=False, unique=True),
        Column("display_name", String(200), nullable=False),
        Column("password_hash", String(300), nullable=False),
        Column("role", String(20), nullable=False),
    ),
    (
        "host_demarche",
        Column("id", Integer, primary_key=True),
        Column("slug", String(80), nullable=False, unique=True),
        Column("title", String(200), nullable=False),
        Column("description", String(2000), nullable=False),
        Column("open_without_account", Boolean, nullable=False),
    ),
    (
        "host_dossier",
        Column("id", Integer, primary_key=True),
        Column("draft_key", String(64), nullable=False, unique=True),
        Column("demarche_id", Integer, ForeignKey("host_demarche.id"), nullable=False, index=True),
        Column("demarche_title", String(200), nullable=False),
        Column("email", String(320), nullable=False, index=True),
        Column("first_name", String(100), nullable=False),
        Column("last_name", String(100), nullable=False),
        Column("answers", JSON, nullable=False),
        Column("account_id", Integer, ForeignKey("host_account.id"), nullable=True, index=True),
        Column("status", String(20), nullable=False),
        Column("locale", String(10), nullable=False),
        _stamp("created_at"),
        _stamp("deposited_at", nullable=True),
    ),
    (
        "host_plugin_state",
        Column("name", String(100), primary_key=True),
        Column("enabled", Boolean, nullable=False),
        _stamp("updated_at"),
        Column("updated_by", String(320), nullable=False),
    ),
    (
        "host_mail_outbox",
        Column("id", Integer, primary_key=True),
        Column("recipient", Text, nullable=False),
        Column("subject", Text, nullable=False),
        Column("text", Text, nullable=False),
        Column("html", Text, nullable=True),
        _stamp("created_at"),
        _stamp("next_attempt_at"),
        Column("attempts", Integer, nullable=False),
        Column("last_error", Text, nullable=True),
        _stamp("sent_at", nullable=True),
    ),
]
for _name, *_columns in _RELEASE_0_1_TABLES:
    Table(_name, _RELEASE_0_1, *_columns)
Index(
    "ix_host_mail_outbox_next_attempt_at", _RELEASE_0_1.tables["host_mail_outbox"].c.next_attempt_at
)
_OLD = _RELEASE_0_1.tables


def _release_0_1_database(engine: Engine) -> None:
    """What release 0.1 left: ``create_all`` tables (no version table) and some rows."""
    _RELEASE_0_1.create_all(engine)
    mail = {"subject": "s", "text": "t", "created_at": AT, "next_attempt_at": AT}
    with engine.begin() as connection:
        connection.execute(
            _OLD["horscompte_setting"].insert(),
            {
                "key": "tracking_code_length",
                "value_json": "14",
                "updated_at": AT,
                "updated_by": "a",
            },
        )
        connection.execute(
            _OLD["horscompte_tracking_code"].insert(),
            {
                "dossier_id": 7,
                "code": "ABCD-EFGH-JKLM",
                "policy_json": "{}",
                "issued_at": AT,
                "email": "eloise@example.org",
                "email_key": "eloise@example.org",
                "demarche_title": "Cantine",
                "locale": "fr",
            },
        )
        connection.execute(
            _OLD["horscompte_audit_event"].insert(),
            {"kind": "settings.changed", "actor": "a", "at": AT, "details_json": "{}"},
        )
        challenge = {"dossier_id": 7, "guard_key": "g", "created_at": AT, "expires_at": AT}
        connection.execute(  # 0.1 left a guard's older codes live: 0.2 keeps one live code
            _OLD["horscompte_challenge"].insert(),
            [
                {**challenge, "code_hmac": "h1", "attempts": 0},
                {**challenge, "code_hmac": "h2", "attempts": 1},
            ],
        )
        connection.execute(
            _OLD["host_mail_outbox"].insert(),
            [
                {**mail, "recipient": "a@example.org", "attempts": 0, "sent_at": AT},
                {
                    **mail,
                    "recipient": "b@example.org",
                    "attempts": 2,
                    "last_error": "OSError: down",
                    "sent_at": None,
                },
            ],
        )


def _rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of release 0.1's tables, by its 0.1 columns."""
    with engine.connect() as connection:
        return {
            name: sorted(tuple(row) for row in connection.execute(select(*table.c)))
            for name, table in _OLD.items()
        }


def test_a_release_0_1_database_is_upgraded_with_its_data(engine: Engine) -> None:
    _release_0_1_database(engine)
    before = _rows(engine)
    assert sum(len(rows) for rows in before.values()) == 7

    for migrations in SETS:
        upgrade(engine, migrations)

    after = _rows(engine)
    challenges_before = before.pop("horscompte_challenge")
    challenges_after = after.pop("horscompte_challenge")
    assert after == before
    # The guard's newest code stays live; the older one was replaced, so it is gone.
    assert challenges_after == [row for row in challenges_before if row[3] == "h2"]
    for migrations in SETS:
        assert current_revision(engine, migrations) == head_revision(migrations)
        assert schema_differences(engine, migrations) == []
    with engine.connect() as connection:
        states = connection.execute(
            text("SELECT recipient, dead_at, dropped_at FROM host_mail_outbox ORDER BY id")
        ).all()
    assert [tuple(row) for row in states] == [
        ("a@example.org", None, None),
        ("b@example.org", None, None),
    ]


def test_plugin_setup_migrates(host_factory: Any) -> None:
    host = host_factory()
    assert current_revision(host.engine) == head_revision()
    assert current_revision(host.engine, HOST_MIGRATIONS) == head_revision(HOST_MIGRATIONS)


@pytest.mark.postgresql
def test_workers_starting_at_once_migrate_one_after_the_other(pg_database_url: str) -> None:
    """Four processes' worth of engines upgrade an empty database at the same moment: the
    advisory lock makes one do the work and the others find nothing to do."""
    empty_public_schema(pg_database_url)
    engines = [make_engine(pg_database_url) for _ in range(4)]
    unclaimed = list(engines)
    all_at_once(len(engines), lambda: upgrade(unclaimed.pop()))  # one engine per thread
    assert current_revision(engines[0]) == head_revision()
    assert schema_differences(engines[0]) == []
    for engine in engines:
        engine.dispose()
    empty_public_schema(pg_database_url)


# --------------------------------------------------------------------------- CLI


def test_cli_db_commands(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "current", "--database-url", database_url]) == 0
    assert "horscompte: aucune" in capsys.readouterr().out
    monkeypatch.setenv("HORSCOMPTE_DATABASE_URL", database_url)
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == f"horscompte: vide -> {head_revision()}"
    assert main(["db", "current"]) == 0
    assert capsys.readouterr().out.strip() == f"horscompte: {head_revision()} (à jour)"
    assert main(["db", "upgrade", "--refhost"]) == 0
    assert "refhost: vide -> host_" in capsys.readouterr().out
    assert main(["db", "history"]) == 0  # the database (the variable's) is at the head
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()] == [
        f"{revision}{' (head, current)' if revision == head_revision() else ''}"
        for revision, _ in history()
    ]
    monkeypatch.delenv("HORSCOMPTE_DATABASE_URL")
    assert main(["db", "history"]) == 0  # no database: the revisions shipped only
    assert f"{head_revision()} (head):" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql+pymysql://root@127.0.0.1/test", "base de données non prise en charge : mysql"),
        ("mysql://root@127.0.0.1/test", "base de données non prise en charge : mysql"),
        ("nonsense://", "base de données non prise en charge : nonsense"),
        ("not a url", "Could not parse SQLAlchemy URL"),
        ("postgresql+psycopg://postgres@127.0.0.1:abc/x", "invalid literal for int()"),
        ("postgresql+nodriver://x/y", "Can't load plugin"),
    ],
)
@pytest.mark.parametrize("command", ["upgrade", "current", "history"])
def test_cli_db_refuses_a_bad_url_in_one_line_before_touching_anything(
    capsys: pytest.CaptureFixture[str], command: str, url: str, reason: str
) -> None:
    """MariaDB was migrated half-way (0001 recorded, the 0003 trigger failing); every bad
    URL was a traceback."""
    assert main(["db", command, "--database-url", url]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("opencrm-horscompte: error: invalid database URL: ")
    assert reason in line


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:1/test", "OperationalError: connection"),
        ("sqlite:////nonexistent/folder/crm.sqlite3", "OperationalError: unable to open"),
    ],
)
def test_cli_db_says_in_one_line_why_the_database_is_unreachable(
    capsys: pytest.CaptureFixture[str], url: str, reason: str
) -> None:
    assert main(["db", "current", "--database-url", url]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"opencrm-horscompte: error: database: {reason}")


def test_cli_db_needs_a_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HORSCOMPTE_DATABASE_URL", raising=False)
    assert main(["db", "upgrade"]) == 2
    assert "HORSCOMPTE_DATABASE_URL" in capsys.readouterr().err


def test_a_table_without_its_revision_is_created_and_reported(engine: Engine) -> None:
    """A table added to the models without a revision still works in a running host, with
    a warning, and the comparison (what the tests check) reports the missing revision."""
    from dataclasses import replace

    extra = Table("horscompte_extra", MetaData(), Column("id", Integer, primary_key=True))
    migrations = replace(PLUGIN_MIGRATIONS, tables=[*PLUGIN_TABLES, extra])
    upgrade(engine, migrations)
    assert [d[0] for d in schema_differences(engine, migrations)] == ["add_table"]
    upgrade(engine, migrations, create_unmigrated=True)
    assert "horscompte_extra" in inspect(engine).get_table_names()
    assert schema_differences(engine, migrations) == []
