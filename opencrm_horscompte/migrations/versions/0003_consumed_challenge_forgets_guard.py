"""Release 0.2: a consumed challenge forgets its guard's failures, in the database.

A trigger on ``horscompte_challenge``: when a code is consumed (``consumed_at`` goes from
NULL to a time), the failure guard of its challenge is deleted in the same statement, so a
right code costs the validation one statement less (``lookup/validation.py``).

SQLite drops a table's triggers with the table: a later revision that rebuilds
``horscompte_challenge`` (``batch_alter_table``) must create this trigger again.

Revision ID: 0003_consumed_forgets_guard
Revises: 0002_release_0_2
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_consumed_forgets_guard"
down_revision: str | None = "0002_release_0_2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGER = "horscompte_challenge_consumed"
FUNCTION = "horscompte_forget_guard"
CONSUMED = "OLD.consumed_at IS NULL AND NEW.consumed_at IS NOT NULL"
FORGET = 'DELETE FROM horscompte_failure_guard WHERE "key" = NEW.guard_key;'


def upgrade() -> None:
    if _postgresql():
        op.execute(
            f"CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {FORGET} RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF consumed_at ON horscompte_challenge "
            f"FOR EACH ROW WHEN ({CONSUMED}) EXECUTE FUNCTION {FUNCTION}()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF consumed_at ON horscompte_challenge "
            f"FOR EACH ROW WHEN {CONSUMED} BEGIN {FORGET} END"
        )


def downgrade() -> None:
    op.execute(f"DROP TRIGGER {TRIGGER}" + (" ON horscompte_challenge" if _postgresql() else ""))
    if _postgresql():
        op.execute(f"DROP FUNCTION {FUNCTION}()")


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"
