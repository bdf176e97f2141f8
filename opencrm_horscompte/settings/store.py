"""Load and save the settings in the database; every change is audited."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable
from sqlmodel import Session

from opencrm_horscompte.base.db import upsert_insert
from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.models import SettingRow
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
_SAVED = select(_TABLE.c.key, _TABLE.c.value_json)


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
    session: Session | Connection, template_keys: list[str] | None = None
) -> Settings:
    """The settings in force: saved values over the manifest defaults.

    A saved value the current manifest no longer accepts (bounds narrowed by an upgrade)
    falls back to its default rather than breaking deposits. Read on every use (workers
    share them through the database); parsing is cached per distinct saved content.
    """
    connection = session if isinstance(session, Connection) else session.connection()
    saved = tuple(sorted((key, value) for key, value in connection.execute(_SAVED)))
    return _settings_from(saved, tuple(template_keys) if template_keys is not None else None)


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
    current = load_settings(session, template_keys=[new.validation_mail_template])
    now = host.now()
    changes: dict[str, list[Any]] = {}
    for key, value in new.as_dict().items():
        old = getattr(current, key)
        if old == value:
            continue
        changes[key] = [old, value]
        connection = session.connection()
        connection.execute(
            _save_statement(connection.dialect.name),
            {"key": key, "value_json": json.dumps(value), "updated_at": now, "updated_by": actor},
        )
    if changes:
        PluginHooks(host).audit(session, SETTINGS_CHANGED, changes, actor=actor)
    return changes
