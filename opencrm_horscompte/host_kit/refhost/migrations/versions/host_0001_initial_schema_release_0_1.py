"""Reference host, initial schema: its tables as release 0.1's ``create_all`` made them.

Tables that already exist (a 0.1 database) are kept with their rows.

Revision ID: host_0001_initial
Revises:
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "host_0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("host_account", "host_demarche", "host_mail_outbox", "host_plugin_state", "host_dossier")


def _string(name: str, length: int | None, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _text(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=nullable)


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())

    def create(name: str, *items: sa.schema.SchemaItem, indexes: Sequence[str] = ()) -> None:
        if name in existing:  # made by release 0.1's create_all: kept with its rows
            return
        op.create_table(name, *items)
        for column in indexes:
            op.create_index(f"ix_{name}_{column}", name, [column], unique=False)

    create(
        "host_account",
        sa.Column("id", sa.Integer(), nullable=False),
        _string("email", 320),
        _string("email_key", 320),
        _string("display_name", 200),
        _string("password_hash", 300),
        _string("role", 20),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
        sa.UniqueConstraint("email_key"),
    )
    create(
        "host_demarche",
        sa.Column("id", sa.Integer(), nullable=False),
        _string("slug", 80),
        _string("title", 200),
        _string("description", 2000),
        sa.Column("open_without_account", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug"),
    )
    create(
        "host_mail_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("recipient"),
        _text("subject"),
        _text("text"),
        _text("html", nullable=True),
        _timestamp("created_at"),
        _timestamp("next_attempt_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _text("last_error", nullable=True),
        _timestamp("sent_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        indexes=["next_attempt_at"],
    )
    create(
        "host_plugin_state",
        _string("name", 100),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _timestamp("updated_at"),
        _string("updated_by", 320),
        sa.PrimaryKeyConstraint("name"),
    )
    create(
        "host_dossier",
        sa.Column("id", sa.Integer(), nullable=False),
        _string("draft_key", 64),
        sa.Column("demarche_id", sa.Integer(), nullable=False),
        _string("demarche_title", 200),
        _string("email", 320),
        _string("first_name", 100),
        _string("last_name", 100),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        _string("status", 20),
        _string("locale", 10),
        _timestamp("created_at"),
        _timestamp("deposited_at", nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["host_account.id"]),
        sa.ForeignKeyConstraint(["demarche_id"], ["host_demarche.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("draft_key"),
        indexes=["account_id", "demarche_id", "email"],
    )


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
