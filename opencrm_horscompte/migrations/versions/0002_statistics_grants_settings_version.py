"""Release 0.2: daily statistics, grant state per dossier (agents end grants), the subject
hash of identity choices (data export and erasure), the settings version row (the
per-process settings cache), the receipt proof of a tracking code (only the depositing
session sees it), and one live challenge per guard (a partial unique index: older live
codes of a guard are deleted first: a newer code replaced them, as a resend does in 0.2).

Revision ID: 0002_release_0_2
Revises: 0001_initial
Create Date: 2026-12-01
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_release_0_2"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DAILY_COUNTERS = (
    "deposits",
    "proposals_shown",
    "proposals_accepted",
    "proposals_declined",
    "lookups",
    "codes_sent",
    "validations_ok",
    "validations_failed",
    "locks",
    "throttle_refusals",
)


def upgrade() -> None:
    op.create_table(
        "horscompte_daily_stat",
        sa.Column("day", sa.Date(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in DAILY_COUNTERS),
        sa.PrimaryKeyConstraint("day"),
    )
    op.create_table(
        "horscompte_grant_state",
        sa.Column("dossier_id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("dossier_id"),
    )
    settings_version = op.create_table(
        "horscompte_settings_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(settings_version, [{"id": 1, "token": secrets.token_hex(16)}])
    op.execute(  # a newer code replaced them: gone, as a resend leaves them in 0.2
        "DELETE FROM horscompte_challenge "
        "WHERE consumed_at IS NULL AND EXISTS (SELECT 1 FROM horscompte_challenge AS newer "
        "WHERE newer.guard_key = horscompte_challenge.guard_key "
        "AND newer.consumed_at IS NULL AND newer.id > horscompte_challenge.id)"
    )
    with op.batch_alter_table("horscompte_challenge") as batch_op:
        batch_op.drop_index("ix_horscompte_challenge_guard_key")
        batch_op.create_index(
            "ix_horscompte_challenge_live",
            ["guard_key"],
            unique=True,
            sqlite_where=sa.text("consumed_at IS NULL"),
            postgresql_where=sa.text("consumed_at IS NULL"),
        )
    with op.batch_alter_table("horscompte_tracking_code") as batch_op:
        batch_op.add_column(sa.Column("receipt_proof", sa.String(length=64), nullable=True))
    with op.batch_alter_table("horscompte_identity_choice") as batch_op:
        batch_op.add_column(sa.Column("subject_hash", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_horscompte_identity_choice_subject_hash", ["subject_hash"])


def downgrade() -> None:
    with op.batch_alter_table("horscompte_identity_choice") as batch_op:
        batch_op.drop_index("ix_horscompte_identity_choice_subject_hash")
        batch_op.drop_column("subject_hash")
    with op.batch_alter_table("horscompte_tracking_code") as batch_op:
        batch_op.drop_column("receipt_proof")
    with op.batch_alter_table("horscompte_challenge") as batch_op:
        batch_op.drop_index("ix_horscompte_challenge_live")
        batch_op.create_index("ix_horscompte_challenge_guard_key", ["guard_key"])
    op.drop_table("horscompte_settings_version")
    op.drop_table("horscompte_grant_state")
    op.drop_table("horscompte_daily_stat")
