"""The plugin's tables, all prefixed ``horscompte_``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Text
from sqlmodel import Field, SQLModel


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (SQLite hands back naive ones)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _timestamp() -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=False)


class SettingRow(SQLModel, table=True):
    """One saved setting; keys absent from the table take the manifest's default."""

    __tablename__ = "horscompte_setting"

    key: str = Field(primary_key=True, max_length=64)
    value_json: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(sa_column=_timestamp())
    updated_by: str = Field(max_length=320)


class TrackingCode(SQLModel, table=True):
    """The tracking code of one deposited dossier, with the policy it was made under:
    typed input is normalised with that policy, so settings changed later do not break the
    codes issued before."""

    __tablename__ = "horscompte_tracking_code"

    dossier_id: int = Field(primary_key=True)
    code: str = Field(max_length=64, unique=True)
    policy_json: str = Field(sa_column=Column(Text, nullable=False))
    issued_at: datetime = Field(sa_column=_timestamp())


class AuditRecord(SQLModel, table=True):
    """An audit event stored by the plugin's default ``horscompte_audit_event``."""

    __tablename__ = "horscompte_audit_event"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=64, index=True)
    actor: str = Field(max_length=320)
    at: datetime = Field(sa_column=_timestamp())
    details_json: str = Field(sa_column=Column(Text, nullable=False))


class ThrottleCounter(SQLModel, table=True):
    """A fixed-window counter shared by every worker (see :mod:`.throttle`). ``key`` is an
    HMAC of the scope and the value counted, so no address or email is stored in clear."""

    __tablename__ = "horscompte_throttle"

    key: str = Field(primary_key=True, max_length=64)
    window_start: datetime = Field(sa_column=_timestamp())
    count: int


class IdentityChoice(SQLModel, table=True):
    """A citizen's answer to the login proposal, per draft (``draft_ref`` is an HMAC of the
    host's draft reference)."""

    __tablename__ = "horscompte_identity_choice"

    draft_ref: str = Field(primary_key=True, max_length=64)
    choice: str = Field(max_length=16)
    at: datetime = Field(sa_column=_timestamp())


PLUGIN_TABLES = [
    SettingRow.__table__,
    TrackingCode.__table__,
    AuditRecord.__table__,
    ThrottleCounter.__table__,
    IdentityChoice.__table__,
]
