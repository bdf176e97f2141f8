"""Initial schema: the tables of release 0.1 exactly as its ``create_all`` made them.

A database made by 0.1 already has them: each table that exists is left as it is (with its
rows) and the database is simply recorded at this revision. Later revisions change the
schema with ordinary ``op`` calls (see README, "Upgrading").

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "horscompte_setting",
    "horscompte_tracking_code",
    "horscompte_audit_event",
    "horscompte_throttle",
    "horscompte_identity_choice",
    "horscompte_challenge",
    "horscompte_failure_guard",
)


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _string(name: str, length: int) -> sa.Column:
    return sa.Column(name, sa.String(length=length), nullable=False)


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())

    def create(name: str, *items: sa.schema.SchemaItem, indexes: Sequence[str] = ()) -> None:
        if name in existing:  # made by release 0.1's create_all: kept with its rows
            return
        op.create_table(name, *items)
        for column in indexes:
            op.create_index(f"ix_{name}_{column}", name, [column], unique=False)

    create(
        "horscompte_setting",
        _string("key", 64),
        sa.Column("value_json", sa.Text(), nullable=False),
        _timestamp("updated_at"),
        _string("updated_by", 320),
        sa.PrimaryKeyConstraint("key"),
    )
    create(
        "horscompte_tracking_code",
        sa.Column("dossier_id", sa.Integer(), nullable=False),
        _string("code", 64),
        sa.Column("policy_json", sa.Text(), nullable=False),
        _timestamp("issued_at"),
        _string("email", 320),
        _string("email_key", 320),
        _string("demarche_title", 200),
        _string("locale", 10),
        sa.PrimaryKeyConstraint("dossier_id"),
        sa.UniqueConstraint("code"),
        indexes=["email_key"],
    )
    create(
        "horscompte_audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        _string("kind", 64),
        _string("actor", 320),
        _timestamp("at"),
        sa.Column("details_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        indexes=["kind"],
    )
    create(
        "horscompte_throttle",
        _string("key", 64),
        _timestamp("window_start"),
        _timestamp("expires_at"),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    create(
        "horscompte_identity_choice",
        _string("draft_ref", 64),
        _string("choice", 16),
        _timestamp("at"),
        sa.PrimaryKeyConstraint("draft_ref"),
    )
    create(
        "horscompte_challenge",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dossier_id", sa.Integer(), nullable=True),
        _string("guard_key", 64),
        _string("code_hmac", 64),
        _timestamp("created_at"),
        _timestamp("expires_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _timestamp("consumed_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        indexes=["dossier_id", "guard_key"],
    )
    create(
        "horscompte_failure_guard",
        _string("key", 64),
        sa.Column("failures", sa.Integer(), nullable=False),
        _timestamp("not_before"),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
