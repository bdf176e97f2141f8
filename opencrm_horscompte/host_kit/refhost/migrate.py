"""The reference host's schema: its own Alembic history (``host_alembic_version``), apart
from every plugin's. A real host keeps its tables its own way; this is one example."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from opencrm_horscompte.base.migrations import MigrationSet, upgrade
from opencrm_horscompte.host_kit.refhost.models import HOST_TABLES
from opencrm_horscompte.host_kit.refhost.outbox import OutboxMail

HOST_MIGRATIONS = MigrationSet(
    name="refhost",
    script_location=Path(__file__).resolve().parent / "migrations",
    version_table="host_alembic_version",
    table_prefix="host_",
    tables=[*HOST_TABLES, OutboxMail.__table__],
)


def upgrade_host(engine: Engine) -> None:
    """Bring the reference host's tables to the newest revision (under a lock)."""
    upgrade(engine, HOST_MIGRATIONS, create_unmigrated=True)
