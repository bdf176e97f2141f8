"""The reference host's own tables (prefixed ``host_``): accounts, démarches, dossiers and
the admin's plugin choices."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Column, Table
from sqlmodel import Field, SQLModel

from opencrm_horscompte.base.db import timestamp_column


def _timestamp(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=timestamp_column(nullable=nullable))


class Account(SQLModel, table=True):
    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers
    __tablename__ = "host_account"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    email_key: str = Field(max_length=320, unique=True)
    display_name: str = Field(max_length=200)
    password_hash: str = Field(max_length=300)
    role: str = Field(default="citizen", max_length=20)


class Demarche(SQLModel, table=True):
    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers
    __tablename__ = "host_demarche"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=80, unique=True)
    title: str = Field(max_length=200)
    description: str = Field(default="", max_length=2000)
    open_without_account: bool = True


class Dossier(SQLModel, table=True):
    """A draft until deposited; ``draft_key`` is the unguessable reference of the draft."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "host_dossier"

    id: int | None = Field(default=None, primary_key=True)
    draft_key: str = Field(max_length=64, unique=True)
    demarche_id: int = Field(foreign_key="host_demarche.id", index=True)
    demarche_title: str = Field(max_length=200)
    email: str = Field(max_length=320, index=True)
    first_name: str = Field(max_length=100)
    last_name: str = Field(max_length=100)
    answers: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    account_id: int | None = Field(default=None, foreign_key="host_account.id", index=True)
    status: str = Field(default="draft", max_length=20)
    locale: str = Field(default="fr", max_length=10)
    created_at: datetime = _timestamp()
    deposited_at: datetime | None = _timestamp(nullable=True)


class PluginState(SQLModel, table=True):
    """The admin's enable/disable choice for one installed plugin."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "host_plugin_state"

    name: str = Field(primary_key=True, max_length=100)
    enabled: bool
    updated_at: datetime = _timestamp()
    updated_by: str = Field(max_length=320)


class HostSession(SQLModel, table=True):
    """A live browser session (server side): the signed cookie names it by a random id,
    stored here only as its SHA-256. Deleting the row ends every copy of the cookie:
    logout deletes the session's row, a password change every row of the account."""

    __table__: ClassVar[Table]  # set by SQLModel, declared for type checkers

    __tablename__ = "host_session"

    key: str = Field(primary_key=True, max_length=64)
    account_id: int | None = Field(default=None, foreign_key="host_account.id", index=True)
    created_at: datetime = _timestamp()
    expires_at: datetime = _timestamp()


HOST_TABLES = [
    Account.__table__,
    Demarche.__table__,
    Dossier.__table__,
    PluginState.__table__,
    HostSession.__table__,
]
