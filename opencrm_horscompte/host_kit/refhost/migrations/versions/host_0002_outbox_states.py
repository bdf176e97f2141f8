"""Outbox: claim tokens, dead letters, dropped mails, "useless after" and "replaces".

Every existing row keeps its state: sent rows stay sent, the others stay pending.

Revision ID: host_0002_outbox_states
Revises: host_0001_initial
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "host_0002_outbox_states"
down_revision: str | None = "host_0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("host_mail_outbox") as batch:
        batch.add_column(sa.Column("claim_token", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("dropped_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("useless_after", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("replaces", sa.String(length=200), nullable=True))
        batch.create_index("ix_host_mail_outbox_replaces", ["replaces"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("host_mail_outbox") as batch:
        batch.drop_index("ix_host_mail_outbox_replaces")
        for name in ("replaces", "useless_after", "dropped_at", "dead_at", "claim_token"):
            batch.drop_column(name)
