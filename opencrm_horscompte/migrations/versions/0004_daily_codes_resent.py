"""Release 0.2: the daily counter of validation codes mailed again on request.

``codes_sent`` counts every validation code mailed, resends included, so "lookups minus
codes sent" undercounted the lookups that mailed no code (it could reach 0 when citizens
asked for new codes). ``codes_resent`` counts the resends alone; the statistics page
subtracts them. Days counted before this revision have 0 resends: their figure stays as
it was.

Revision ID: 0004_daily_codes_resent
Revises: 0003_consumed_forgets_guard
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_daily_codes_resent"
down_revision: str | None = "0003_consumed_forgets_guard"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "horscompte_daily_stat",
        sa.Column("codes_resent", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("horscompte_daily_stat") as batch_op:
        batch_op.drop_column("codes_resent")
