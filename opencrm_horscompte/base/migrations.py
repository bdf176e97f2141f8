"""Schema migrations (Alembic) for the plugin's tables, and the same machinery for a host.

A :class:`MigrationSet` is one Alembic script folder with its own version table and the tables
it owns: the plugin's (``horscompte_alembic_version``, :data:`PLUGIN_MIGRATIONS`) never
collides with the host's or another plugin's. :func:`upgrade` brings a database to the newest
revision; on PostgreSQL it holds a transaction-scoped advisory lock, so N workers starting at
once run it one after the other (the later ones find nothing to do); on SQLite the migration
runs in one ``BEGIN IMMEDIATE`` transaction, which serialises it the same way.

The first revision is the schema of release 0.1, which made its tables with ``create_all``:
on such a database it creates only what is missing, so the tables and their rows are kept
and the database is recorded at that revision.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, Table, inspect, text
from sqlalchemy.engine import Connection, Engine

from opencrm_horscompte.base.db import writer
from opencrm_horscompte.base.models import PLUGIN_TABLES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationSet:
    """One Alembic script folder: where it is, its version table, the tables it owns."""

    name: str
    script_location: Path
    version_table: str
    table_prefix: str
    tables: Sequence[Table]

    def metadata(self) -> MetaData:
        """A metadata holding exactly this set's tables (what the migrations must produce)."""
        metadata = MetaData()
        for table in self.tables:
            table.to_metadata(metadata)
        return metadata

    def owns(self, table_name: str | None) -> bool:
        return bool(table_name) and str(table_name).startswith(self.table_prefix)

    @property
    def lock_key(self) -> int:
        """The PostgreSQL advisory lock key of this set (stable across processes)."""
        return zlib.crc32(self.version_table.encode())


PLUGIN_MIGRATIONS = MigrationSet(
    name="horscompte",
    script_location=Path(__file__).resolve().parent.parent / "migrations",
    version_table="horscompte_alembic_version",
    table_prefix="horscompte_",
    tables=PLUGIN_TABLES,
)


def alembic_config(migrations: MigrationSet, connection: Connection | None = None) -> Config:
    """An Alembic configuration for ``migrations``, on ``connection`` when given."""
    config = Config()
    config.set_main_option("script_location", str(migrations.script_location))
    config.attributes["migrations"] = migrations
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextmanager
def _locked_connection(engine: Engine, migrations: MigrationSet) -> Iterator[Connection]:
    """One transaction for the whole upgrade, serialised across processes."""
    with writer(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            # a long migration in another process is waited for, not timed out
            connection.execute(text("SET LOCAL lock_timeout = 0"))
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": migrations.lock_key}
            )
        yield connection


def upgrade(
    engine: Engine,
    migrations: MigrationSet = PLUGIN_MIGRATIONS,
    to: str = "head",
    *,
    create_unmigrated: bool = False,
) -> None:
    """Bring ``engine``'s database to revision ``to`` (under a lock; see the module doc).

    ``create_unmigrated`` (what the running plugin and host ask for) then creates, with a
    warning, any table of the set that no revision made yet: a table added to the models
    without its revision still works, and ``tests/test_migrations.py`` reports the missing
    revision. Its revision must then create the table only where it is missing (as
    ``0001_initial`` does)."""
    with _locked_connection(engine, migrations) as connection:
        command.upgrade(alembic_config(migrations, connection), to)
        if create_unmigrated:
            _create_unmigrated(connection, migrations)


def _create_unmigrated(connection: Connection, migrations: MigrationSet) -> None:
    existing = set(inspect(connection).get_table_names())
    missing = [table for table in migrations.tables if table.name not in existing]
    if not missing:
        return
    names = ", ".join(table.name for table in missing)
    log.warning("%s: no migration creates %s yet; created from the models", migrations.name, names)
    metadata = MetaData()
    copies = [table.to_metadata(metadata) for table in missing]
    metadata.create_all(connection, tables=copies)


def current_revision(engine: Engine, migrations: MigrationSet = PLUGIN_MIGRATIONS) -> str | None:
    """The revision the database is at, or None before the first upgrade."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": migrations.version_table}
        )
        return context.get_current_revision()


def head_revision(migrations: MigrationSet = PLUGIN_MIGRATIONS) -> str | None:
    return ScriptDirectory.from_config(alembic_config(migrations)).get_current_head()


def history(migrations: MigrationSet = PLUGIN_MIGRATIONS) -> list[tuple[str, str]]:
    """Every revision, oldest first: (revision id, message)."""
    script = ScriptDirectory.from_config(alembic_config(migrations))
    revisions = reversed(list(script.walk_revisions()))
    return [(revision.revision, (revision.doc or "").splitlines()[0]) for revision in revisions]


def schema_differences(engine: Engine, migrations: MigrationSet = PLUGIN_MIGRATIONS) -> list[Any]:
    """What Alembic's comparison finds between the database and this set's models (the
    tests expect nothing; a table added without a revision shows here)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts=_context_options(migrations))
        return list(compare_metadata(context, migrations.metadata()))


def _context_options(migrations: MigrationSet) -> dict[str, Any]:
    def include_name(name: str | None, type_: str, _parents: Any) -> bool:
        if type_ == "table":
            return migrations.owns(name) and name != migrations.version_table
        return True

    return {
        "render_item": _render_item,
        "version_table": migrations.version_table,
        "include_name": include_name,
        "compare_type": True,
        "render_as_batch": True,  # SQLite can't ALTER most things: batch mode copies the table
        "target_metadata": migrations.metadata(),
    }


def _render_item(type_: str, item: Any, autogen_context: Any) -> str | bool:
    """Autogenerate writes the model types as plain SQLAlchemy ones, so a new revision needs
    no import of the plugin (a revision is frozen: it must not change when models do)."""
    from sqlmodel.sql.sqltypes import AutoString

    from opencrm_horscompte.base.db import UTCDateTime

    if type_ != "type":
        return False
    if isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(item, AutoString):
        return f"sa.String(length={item.length!r})"
    return False


def run_env() -> None:
    """The body of each set's ``env.py`` (online mode only: the CLI works on a database)."""
    from alembic import context

    config = context.config
    migrations: MigrationSet = config.attributes.get("migrations", PLUGIN_MIGRATIONS)
    connection: Connection | None = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run the migrations through opencrm_horscompte.base.migrations")
    context.configure(connection=connection, **_context_options(migrations))
    with context.begin_transaction():
        context.run_migrations()
