"""Alembic migrations of the plugin (``horscompte_alembic_version``) and of the reference host
(``host_alembic_version``), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from opencrm_horscompte.base.db import UTCDateTime, make_engine
from opencrm_horscompte.base.migrations import (
    PLUGIN_MIGRATIONS,
    MigrationSet,
    current_revision,
    head_revision,
    history,
    schema_differences,
    upgrade,
)
from opencrm_horscompte.base.models import (
    PLUGIN_TABLES,
    AuditRecord,
    Challenge,
    SettingRow,
    TrackingCode,
)
from opencrm_horscompte.cli import main
from opencrm_horscompte.host_kit.refhost.migrate import HOST_MIGRATIONS
from opencrm_horscompte.host_kit.refhost.models import HOST_TABLES

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


# --------------------------------------------------------------------------- release 0.2

# The reference host's outbox as release 0.2 made it (frozen copy: the model has moved on).
_RELEASE_0_2 = MetaData()
_OUTBOX_0_2 = Table(
    "host_mail_outbox",
    _RELEASE_0_2,
    Column("id", Integer, primary_key=True),
    Column("recipient", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("html", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False, index=True),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("sent_at", UTCDateTime, nullable=True),
)


def _release_0_2_database(engine: Engine) -> None:
    """What release 0.2 left: ``create_all`` tables (no version table) and some rows."""
    SQLModel.metadata.create_all(engine, tables=[*PLUGIN_TABLES, *HOST_TABLES])
    _RELEASE_0_2.create_all(engine)
    with Session(engine) as session:
        session.add(
            SettingRow(key="tracking_code_length", value_json="14", updated_at=AT, updated_by="a")
        )
        session.add(
            TrackingCode(
                dossier_id=7,
                code="ABCD-EFGH-JKLM",
                policy_json="{}",
                issued_at=AT,
                email="eloise@example.org",
                email_key="eloise@example.org",
                demarche_title="Cantine",
            )
        )
        session.add(AuditRecord(kind="settings.changed", actor="a", at=AT, details_json="{}"))
        session.add(
            Challenge(dossier_id=7, guard_key="g", code_hmac="h", created_at=AT, expires_at=AT)
        )
        session.commit()
    with engine.begin() as connection:
        connection.execute(
            _OUTBOX_0_2.insert(),
            [
                {
                    "recipient": "a@example.org",
                    "subject": "s",
                    "text": "t",
                    "created_at": AT,
                    "next_attempt_at": AT,
                    "attempts": 0,
                    "last_error": None,
                    "sent_at": AT,
                },
                {
                    "recipient": "b@example.org",
                    "subject": "s",
                    "text": "t",
                    "created_at": AT,
                    "next_attempt_at": AT,
                    "attempts": 2,
                    "last_error": "OSError: down",
                    "sent_at": None,
                },
            ],
        )


def _rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    tables = [table.name for table in PLUGIN_TABLES] + ["host_mail_outbox"]
    with engine.connect() as connection:
        return {
            name: sorted(
                tuple(row)[:10] if name == "host_mail_outbox" else tuple(row)
                for row in connection.execute(text(f"SELECT * FROM {name}"))
            )
            for name in tables
        }


def test_a_release_0_2_database_is_upgraded_with_its_data(engine: Engine) -> None:
    _release_0_2_database(engine)
    before = _rows(engine)
    assert sum(len(rows) for rows in before.values()) == 6

    for migrations in SETS:
        upgrade(engine, migrations)

    assert _rows(engine) == before
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
    engines = [make_engine(pg_database_url) for _ in range(4)]
    with engines[0].begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    start = threading.Barrier(len(engines), timeout=60)
    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        try:
            start.wait()
            upgrade(engine)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)  # hang guard only
    assert not errors, errors
    assert current_revision(engines[0]) == head_revision()
    assert schema_differences(engines[0]) == []
    for engine in engines:
        engine.dispose()
    cleanup = make_engine(pg_database_url)
    with cleanup.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    cleanup.dispose()


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
    assert main(["db", "history"]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()] == [
        f"{revision}{' (head)' if revision == head_revision() else ''}" for revision, _ in history()
    ]


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
