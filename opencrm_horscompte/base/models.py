"""The plugin's tables, all prefixed ``horscompte_``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, Column, Date, Index, Table, Text, text
from sqlmodel import Field, SQLModel

from opencrm_horscompte.base.db import timestamp_column


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (SQLite hands back naive ones)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SettingRow(SQLModel, table=True):
    """One saved setting; keys absent from the table take the manifest's default."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "horscompte_setting"

    key: str = Field(primary_key=True, max_length=64)
    value_json: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(sa_column=timestamp_column())
    updated_by: str = Field(max_length=320)


class SettingsVersion(SQLModel, table=True):
    """One row (``id`` 1) whose ``token`` changes with every saved change of the settings:
    each process keeps the settings it parsed until the token it reads moves (one tiny
    primary-key read per request instead of reading and parsing every setting)."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "horscompte_settings_version"

    id: int = Field(primary_key=True)
    token: str = Field(max_length=32)


class TrackingCode(SQLModel, table=True):
    """The tracking code of one deposited dossier, with the policy it was made under (typed
    input is normalised with it, so settings changed later do not break older codes), and
    what the lookup needs of the dossier as deposited: the address the validation code is
    mailed to, its matching key, the démarche's title."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "horscompte_tracking_code"

    dossier_id: int = Field(primary_key=True)
    code: str = Field(max_length=64, unique=True)
    policy_json: str = Field(sa_column=Column(Text, nullable=False))
    issued_at: datetime = Field(sa_column=timestamp_column())
    email: str = Field(max_length=320)
    email_key: str = Field(max_length=320, index=True)
    demarche_title: str = Field(max_length=200)
    locale: str = Field(default="fr", max_length=10)
    # SHA-256 of the receipt proof kept in the depositing browser's session (the first
    # receipt view, within minutes of the deposit, claims it): the receipt fragment shows
    # the code to that session only.
    receipt_proof: str | None = Field(default=None, max_length=64)


class AuditRecord(SQLModel, table=True):
    """An audit event stored by the plugin's default ``horscompte_audit_event``."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "horscompte_audit_event"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=64, index=True)
    actor: str = Field(max_length=320)
    at: datetime = Field(sa_column=timestamp_column())
    details_json: str = Field(sa_column=Column(Text, nullable=False))


class ThrottleCounter(SQLModel, table=True):
    """A fixed-window counter shared by every worker (see :mod:`.throttle`). ``key`` is an
    HMAC of the scope and the value counted, so no address or email is stored in clear."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "horscompte_throttle"

    key: str = Field(primary_key=True, max_length=64)
    window_start: datetime = Field(sa_column=timestamp_column())
    expires_at: datetime = Field(sa_column=timestamp_column())
    count: int


class IdentityChoice(SQLModel, table=True):
    """A citizen's answer to the login proposal, per draft (``draft_ref`` is an HMAC of the
    host's draft reference)."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "horscompte_identity_choice"

    draft_ref: str = Field(primary_key=True, max_length=64)
    choice: str = Field(max_length=16)
    at: datetime = Field(sa_column=timestamp_column())
    # Pseudonymous link to the typed address (see privacy.subjects.subject_hash), so the
    # right-of-access export and erasure find a person's choices; None for older rows.
    subject_hash: str | None = Field(default=None, max_length=64, index=True)


class Challenge(SQLModel, table=True):
    """The live validation code of one failure guard (or, for a lookup that matched nothing,
    a decoy that behaves the same). Only the code's HMAC is stored. ``guard_key`` names the
    failure counter the attempts count against: the dossier's, or for a decoy the pair
    (typed email, typed tracking code)'s.

    A guard has at most one live (unconsumed) row, enforced by the partial unique index
    ``ix_horscompte_challenge_live``: a new code for the guard *replaces* it in place (one
    upsert) under a fresh ``id``, so an older page's carrier finds no row ("replaced") and
    ids say nothing about a guard's history. Rows leave the index once consumed (used):
    they never pile up per guard, and the index only covers live rows."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "horscompte_challenge"
    __table_args__ = (
        Index(
            "ix_horscompte_challenge_live",
            "guard_key",
            unique=True,
            sqlite_where=text("consumed_at IS NULL"),
            postgresql_where=text("consumed_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    dossier_id: int | None = Field(default=None, index=True)
    guard_key: str = Field(max_length=64)
    code_hmac: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=timestamp_column())
    expires_at: datetime = Field(sa_column=timestamp_column())
    attempts: int = 0
    consumed_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class FailureGuard(SQLModel, table=True):
    """Consecutive wrong validation codes for one dossier (or decoy), across resends:
    backoff after a few, lock after ``LOCK_AFTER_FAILURES``; a success resets it."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "horscompte_failure_guard"

    key: str = Field(primary_key=True, max_length=64)
    failures: int = 0
    not_before: datetime = Field(sa_column=timestamp_column())


class GrantState(SQLModel, table=True):
    """Server-side state of one dossier's grants (the grants themselves are signed tokens in
    citizens' sessions): ``generation`` is carried by every grant and checked by
    ``has_grant``, so bumping it ends every grant given so far; ``granted_at`` is the
    latest grant, ``ended_at`` when an agent last ended them."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "horscompte_grant_state"

    dossier_id: int = Field(primary_key=True)
    generation: int = 0
    granted_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    ended_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


def _counter() -> Any:
    return Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class DailyStat(SQLModel, table=True):
    """Daily counters for the statistics page (no personal data): one row per UTC day,
    bumped by one upsert that adds to every column (see :mod:`opencrm_horscompte.stats`)."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "horscompte_daily_stat"

    day: date = Field(sa_column=Column(Date, primary_key=True))
    deposits: int = _counter()
    proposals_shown: int = _counter()
    proposals_accepted: int = _counter()
    proposals_declined: int = _counter()
    lookups: int = _counter()
    codes_sent: int = _counter()
    codes_resent: int = _counter()
    validations_ok: int = _counter()
    validations_failed: int = _counter()
    locks: int = _counter()
    throttle_refusals: int = _counter()


PLUGIN_TABLES = [
    SettingRow.__table__,
    SettingsVersion.__table__,
    TrackingCode.__table__,
    AuditRecord.__table__,
    ThrottleCounter.__table__,
    IdentityChoice.__table__,
    Challenge.__table__,
    FailureGuard.__table__,
    GrantState.__table__,
    DailyStat.__table__,
]
