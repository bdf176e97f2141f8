"""The reference host: the ``Host`` object its plugins receive, over a real database."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, select

from opencrm_horscompte.base.db import DriverConnection, make_engine, upsert_insert, writer
from opencrm_horscompte.hookspecs.host import MailMessage, MenuEntry, Request, Route, User
from opencrm_horscompte.host_kit.loader import (
    EnabledHooks,
    PluginRecord,
    call_setup,
    collect_routes,
    load_plugins,
    make_plugin_manager,
)
from opencrm_horscompte.host_kit.refhost import outbox
from opencrm_horscompte.host_kit.refhost.accounts import find_by_email
from opencrm_horscompte.host_kit.refhost.attach import attach_deposited
from opencrm_horscompte.host_kit.refhost.migrate import upgrade_host
from opencrm_horscompte.host_kit.refhost.models import Account, PluginState

HOST_VERSION = "2.4.0"
PLUGIN_STATE_TTL_SECONDS = 2.0
TEMPLATES = jinja2.PackageLoader("opencrm_horscompte.host_kit.refhost", "templates")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class HostConfig:
    """How to run the reference host. Tests pass their own clock, entry points and plugins."""

    database_url: str
    secret_keys: Sequence[bytes]
    base_url: str = "http://127.0.0.1:8765"
    mail_sender: str = "Ville de Démoville <ne-pas-repondre@demoville.invalid>"
    site_name: str = "Ville de Démoville"
    timezone: str = "Europe/Paris"
    service_contact: str = "Mairie de Démoville, 01 23 45 67 89, du lundi au vendredi de 9 h à 17 h"
    clock: Callable[[], datetime] = utc_now
    entry_points: Iterable[EntryPoint] | None = None
    extra_plugins: Sequence[object] = ()
    data_dir: Path | None = None
    trusted_proxies: int = 0
    """Reverse proxies in front of the host whose ``X-Forwarded-For`` is believed (werkzeug's
    ``ProxyFix``); 0 ignores the header (``Request.client_addr`` is the TCP peer)."""


@dataclass
class _PluginStateCache:
    disabled: frozenset[str] = frozenset()
    read_at: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)


class ReferenceHost:
    """Implements :class:`opencrm_horscompte.hookspecs.host.Host`.

    The admin's enable/disable choices live in ``host_plugin_state`` so every worker process
    agrees; each process re-reads them at most every ``PLUGIN_STATE_TTL_SECONDS``. Installed
    plugins start disabled until an admin enables them.
    """

    version = HOST_VERSION
    template_loader: jinja2.BaseLoader | None = TEMPLATES

    def __init__(self, config: HostConfig) -> None:
        self.config = config
        self.engine = make_engine(config.database_url)
        self.secret_keys = list(config.secret_keys)
        upgrade_host(self.engine)  # Alembic, its own version table; locked for N workers
        self.pm = make_plugin_manager()
        self.plugins: list[PluginRecord] = load_plugins(self.pm, HOST_VERSION, config.entry_points)
        for plugin in config.extra_plugins:
            self.pm.register(plugin)
        self.pm.check_pending()
        self._hooks = EnabledHooks(self.pm)
        self._state = _PluginStateCache()
        for record in self.plugins:
            if record.plugin is not None:
                call_setup(self.pm, self, record)

    # ---------------------------------------------------------------- Host protocol

    def now(self) -> datetime:
        return self.config.clock()

    @property
    def timezone(self) -> str:
        return self.config.timezone

    @property
    def service_name(self) -> str:
        return self.config.site_name

    @property
    def service_contact(self) -> str:
        return self.config.service_contact

    @property
    def hook(self) -> Any:
        return self._hooks.relay(self.disabled_names())

    def find_account(self, email: str) -> User | None:
        with Session(self.engine) as session:
            account = find_by_email(session, email)
        return account_user(account) if account else None

    def queue_mail(self, session: OrmSession, message: MailMessage) -> None:
        outbox.queue_mail(session, message, self.now())

    # Optional part of the contract (ConnectionMailHost): the lookup's driver-level writes.
    def queue_mail_on_connection(self, connection: DriverConnection, message: MailMessage) -> None:
        outbox.queue_mail(connection, message, self.now())

    def login_url(self, next_url: str) -> str:
        from urllib.parse import urlencode

        return "/connexion?" + urlencode({"suivant": next_url})

    def dossier_url(self, dossier_id: int) -> str:
        return f"/dossiers/{dossier_id}"

    def absolute_url(self, path: str) -> str:
        return self.config.base_url.rstrip("/") + path

    def layout_context(self, request: Request) -> Mapping[str, Any]:
        return {"site_name": self.config.site_name, "menu": self.menu(request.user)}

    # Optional part of the contract (AttachingHost): claiming a dossier later.
    def attach_dossier(self, dossier_id: int, user: User) -> bool:
        return attach_deposited(self, dossier_id, user.id)

    # ---------------------------------------------------------------- plugins

    def disabled_names(self) -> frozenset[str]:
        state = self._state
        with state.lock:
            if time.monotonic() - state.read_at > PLUGIN_STATE_TTL_SECONDS:
                state.disabled = frozenset(self._read_disabled())
                state.read_at = time.monotonic()
            return state.disabled

    def _read_disabled(self) -> set[str]:
        with Session(self.engine) as session:
            enabled = {row.name for row in session.exec(select(PluginState)) if row.enabled}
        return {record.name for record in self.plugins if record.name not in enabled}

    def is_enabled(self, name: str) -> bool:
        record = self.plugin_record(name)
        return (
            record is not None and record.plugin is not None and name not in self.disabled_names()
        )

    def plugin_record(self, name: str) -> PluginRecord | None:
        return next((record for record in self.plugins if record.name == name), None)

    def set_enabled(self, name: str, enabled: bool, actor: str) -> None:
        record = self.plugin_record(name)
        if record is None or record.plugin is None:
            raise KeyError(name)
        if enabled and not call_setup(self.pm, self, record):
            raise RuntimeError(record.error)
        table = PluginState.__table__
        with writer(self.engine).begin() as connection:
            insert = upsert_insert(connection.dialect.name, table).values(
                name=name, enabled=enabled, updated_at=self.now(), updated_by=actor
            )
            # An upsert: two admins (or two workers seeding) switching it at once never
            # collide on the primary key.
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=[table.c.name],
                    set_={
                        "enabled": insert.excluded.enabled,
                        "updated_at": insert.excluded.updated_at,
                        "updated_by": insert.excluded.updated_by,
                    },
                )
            )
        self._state.read_at = float("-inf")

    @functools.cached_property
    def routes(self) -> list[Route]:
        """Every registered plugin's routes, ``plugin`` naming their owner (enabled or not:
        the dispatcher answers 404 for a disabled owner)."""
        return collect_routes(self.pm, self, self.plugins)

    def menu(self, user: User | None) -> dict[str, list[MenuEntry]]:
        sections: dict[str, list[MenuEntry]] = {}
        for entries in self.hook.opencrm_admin_menu(host=self, user=user):
            for entry in entries or ():
                if has_permission(user, entry.permission):
                    sections.setdefault(entry.section, []).append(entry)
        return sections


STAFF_ROLES = ("admin", "agent")


def account_user(account: Account) -> User:
    roles = frozenset({account.role}) if account.role in STAFF_ROLES else frozenset()
    assert account.id is not None
    return User(id=account.id, email=account.email, display_name=account.display_name, roles=roles)


def has_permission(user: User | None, permission: str | None) -> bool:
    if permission is None:
        return True
    if user is None:
        return False
    if permission == "agent":
        return user.is_agent
    return permission == "user" or (permission == "admin" and user.is_admin)
