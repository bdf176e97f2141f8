"""Load and save the settings in the database; every change is audited and moves the
settings version, which tells every process to parse them again."""

from __future__ import annotations

import json
import secrets
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Executable
from sqlmodel import Session

from opencrm_horscompte.base.db import (
    DriverConnection,
    DriverStatement,
    connection_of,
    upsert_insert,
    writer,
)
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.models import SettingRow, SettingsVersion
from opencrm_horscompte.hookspecs.host import Host
from opencrm_horscompte.settings.schema import (
    TRACKING_CLASS_KEYS,
    Settings,
    SettingsError,
    check_values,
    setting_keys,
)

SETTINGS_CHANGED = "settings.changed"


_TABLE = SettingRow.__table__
_SAVED = DriverStatement(select(_TABLE.c.key, _TABLE.c.value_json))
VERSION_ID = 1
VERSION_TABLE = SettingsVersion.__table__
_VERSION = select(VERSION_TABLE.c.token).where(VERSION_TABLE.c.id == VERSION_ID)
_VERSION_AT_DRIVER_SPEED = DriverStatement(_VERSION)  # runs on every request
# (database URL, version token) -> the settings parsed under that token, per process.
_CACHE: dict[tuple[str, str], Settings] = {}
_CACHE_SIZE = 32
# database URL -> the version token and settings this process loaded last (a hint for work
# done before a transaction opens; the transaction checks the token is still in force).
_LATEST: dict[str, tuple[str, Settings]] = {}


@lru_cache(maxsize=2)
def _save_statement(dialect: str) -> Executable:
    """``INSERT ... ON CONFLICT (key) DO UPDATE``: two admins saving at once never collide."""
    values = {column.name: bindparam(column.name, type_=column.type) for column in _TABLE.c}
    insert = upsert_insert(dialect, _TABLE).values(values)
    return insert.on_conflict_do_update(
        index_elements=[_TABLE.c.key],
        set_={name: insert.excluded[name] for name in ("value_json", "updated_at", "updated_by")},
    )


def load_settings(
    session: Session | Connection | DriverConnection, template_keys: list[str] | None = None
) -> Settings:
    """The settings in force: saved values over the manifest defaults.

    A saved value the current manifest no longer accepts (bounds narrowed by an upgrade)
    falls back to its default rather than breaking deposits. Workers share the settings
    through the database: each process keeps the settings it parsed under the version
    token of ``horscompte_settings_version`` and reads that one primary-key row per call;
    every settings row is read again only when the token moved (:func:`save_settings`
    moves it). Without a version row, or with ``template_keys``, every row is read.
    """
    connection = connection_of(session)
    if template_keys is not None:
        return _read(connection, tuple(template_keys))
    cursor = _VERSION_AT_DRIVER_SPEED.execute(connection)
    try:
        found = cursor.fetchone()
    finally:
        cursor.close()
    return settings_under(connection, found[0] if found else None)


def settings_under(connection: Connection | DriverConnection, token: str | None) -> Settings:
    """The settings in force under version ``token`` of ``horscompte_settings_version``,
    read by the caller (the lookup reads it in the statement that finds its candidates):
    parsed once per token and process. Without a token (no version row), every row is read.
    """
    if token is None:
        return _read(connection, None)
    url = _url(connection.engine)
    settings = _CACHE.get((url, token))
    if settings is None:
        settings = _read(connection, None)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[url, token] = settings
    _LATEST[url] = (token, settings)
    return settings


def latest_version(engine: Engine) -> tuple[str, Settings] | None:
    """The version token and settings this process loaded last for ``engine``'s database,
    without reading it (None before the first :func:`load_settings`): good enough to
    prepare work before a transaction, whose statement then requires that
    ``horscompte_settings_version`` still holds that token."""
    return _LATEST.get(_url(engine))


@lru_cache(maxsize=64)
def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _read(
    connection: Connection | DriverConnection, template_keys: tuple[str, ...] | None
) -> Settings:
    return _settings_from(_saved(connection), template_keys)


def _saved(connection: Connection | DriverConnection) -> tuple[tuple[str, str], ...]:
    """Every saved (key, value JSON), by key."""
    return tuple(sorted((key, value) for key, value in _SAVED.all(connection)))


def ensure_settings_version(engine: Engine) -> None:
    """Create the version row if it is missing (plugin setup; idempotent)."""
    with writer(engine).begin() as connection:
        if connection.execute(_VERSION).first() is None:  # workers may start at once:
            row = {"id": VERSION_ID, "token": secrets.token_hex(16)}
            insert = upsert_insert(connection.dialect.name, VERSION_TABLE).values(row)
            connection.execute(insert.on_conflict_do_nothing(index_elements=["id"]))


def _lock_version(session: Session) -> None:
    """Lock the version row for the transaction (PostgreSQL; on SQLite the write
    transaction holds the database), creating it if it is missing: a second save waits,
    then reads what the first one committed."""
    connection = session.connection()
    if connection.execute(_VERSION.with_for_update()).first() is None:
        _move_version(session)


def _move_version(session: Session) -> None:
    """A new version token: every process re-reads the settings on its next call (an
    upsert: two saves at once never collide)."""
    connection = session.connection()
    row = {"id": VERSION_ID, "token": secrets.token_hex(16)}
    insert = upsert_insert(connection.dialect.name, VERSION_TABLE).values(row)
    connection.execute(
        insert.on_conflict_do_update(index_elements=["id"], set_={"token": insert.excluded.token})
    )


@lru_cache(maxsize=16)
def _settings_from(
    saved: tuple[tuple[str, str], ...], template_keys: tuple[str, ...] | None
) -> Settings:
    defaults = Settings.defaults()
    values: dict[str, Any] = defaults.as_dict()
    keys = set(setting_keys())
    for key, value_json in saved:
        if key in keys:
            values[key] = json.loads(value_json)
    choices = template_keys if template_keys is not None else [values["validation_mail_template"]]
    try:
        return check_values(values, choices)
    except SettingsError as error:
        broken = set(error.errors)
        if "tracking_code_classes" in broken:
            broken |= set(TRACKING_CLASS_KEYS)
        return defaults.replace(**{k: v for k, v in values.items() if k not in broken})


def save_settings(host: Host, session: Session, new: Settings, actor: str) -> dict[str, list[Any]]:
    """Persist what changed in ``session``'s transaction and emit one audit event.

    :return: ``{key: [old, new]}`` for each changed key (empty when nothing changed).
    """
    _lock_version(session)  # two admins saving at once: one after the other, never mixed
    connection = session.connection()
    saved = _saved(connection)
    current = _settings_from(saved, (new.validation_mail_template,))
    stored = {key: json.loads(value) for key, value in saved}
    defaults = Settings.defaults().as_dict()
    now = host.now()
    changes: dict[str, list[Any]] = {}
    written = False
    for key, value in new.as_dict().items():
        old = getattr(current, key)
        if old != value:
            changes[key] = [old, value]
        # Compared with what is stored, not with the settings in force: a stored value the
        # loader had to replace (an invalid combination) is written over all the same.
        if stored.get(key, defaults[key]) == value:
            continue
        written = True
        connection.execute(
            _save_statement(connection.dialect.name),
            {"key": key, "value_json": json.dumps(value), "updated_at": now, "updated_by": actor},
        )
    if written:
        _move_version(session)
    if changes:
        PluginHooks(host).audit(session, SETTINGS_CHANGED, changes, actor=actor)
    return changes
