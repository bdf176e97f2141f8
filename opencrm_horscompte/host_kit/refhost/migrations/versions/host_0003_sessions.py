"""Server-side sessions: logout and a password change end every copy of a session cookie.

Revision ID: host_0003_sessions
Revises: host_0002_outbox_states
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "host_0003_sessions"
down_revision: str | None = "host_0002_outbox_states"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "host_session",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["host_account.id"]),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_host_session_account_id", "host_session", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_host_session_account_id", table_name="host_session")
    op.drop_table("host_session")
