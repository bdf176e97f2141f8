"""The plugin registered by a host (entry point ``opencrm.plugins: horscompte``).

Hook implementations stay thin: each hands over to a plain module.
"""

from __future__ import annotations

from collections.abc import Mapping

import pluggy
from packaging.version import Version
from sqlmodel import Session, SQLModel

from . import admin_page, deposit, identity, lookup_pages
from .audit import store_event
from .codes import CodePolicy, format_tracking_code, generate_tracking_code
from .grants import has_grant
from .hookspecs import horscompte as horscompte_specs
from .hookspecs.horscompte import AuditEvent
from .hookspecs.host import (
    Demarche,
    Dossier,
    Host,
    IdentityDecision,
    MailTemplate,
    MenuEntry,
    Request,
    Route,
    ScheduledTask,
    User,
    hookimpl,
)
from .identity import identity_step
from .loader import check_manifest
from .mail_templates import DEFAULT_VALIDATION_TEMPLATE
from .maintenance import PURGE_EVERY_SECONDS, purge_expired_state
from .manifest import load_manifest
from .models import PLUGIN_TABLES, TrackingCode
from .rendering import render_fragment
from .settings import Settings


@hookimpl
def opencrm_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    pluginmanager.add_hookspecs(horscompte_specs)


@hookimpl
def opencrm_plugin_setup(host: Host) -> None:
    manifest = load_manifest()
    check_manifest(manifest, manifest.name, Version(host.version))  # hosts without our loader
    SQLModel.metadata.create_all(host.engine, tables=PLUGIN_TABLES)


@hookimpl
def opencrm_admin_menu(host: Host, user: User | None) -> list[MenuEntry]:
    return [MenuEntry("Administration", "Hors-compte", admin_page.PATH, permission="admin")]


@hookimpl
def opencrm_routes(host: Host) -> list[Route]:
    return [
        Route(("GET", "POST"), admin_page.PATH, admin_page.handle, permission="admin"),
        Route(("POST",), identity.DECLINE_PATH, identity.decline),
        Route(("GET", "POST"), lookup_pages.LOOKUP_PATH, lookup_pages.lookup),
        Route(("GET", "POST"), lookup_pages.VALIDATE_PATH, lookup_pages.validate),
        Route(("GET", "POST"), lookup_pages.FORGOTTEN_PATH, lookup_pages.forgotten),
    ]


@hookimpl
def opencrm_identity_step(
    host: Host, request: Request, demarche: Demarche, identity: Mapping[str, str]
) -> IdentityDecision | None:
    return identity_step(host, request, demarche, identity)


@hookimpl
def opencrm_deposit(host: Host, session: Session, dossier: Dossier) -> None:
    deposit.deposit(host, session, dossier)


@hookimpl
def opencrm_dossier_receipt(host: Host, request: Request, dossier: Dossier) -> list[str]:
    with Session(host.engine) as session:
        row = session.get(TrackingCode, dossier.id)
    if row is None:
        return []
    context = {
        "tracking_code": format_tracking_code(row.code),
        "lookup_url": lookup_pages.LOOKUP_PATH,
    }
    return [render_fragment(host, "horscompte/receipt.html", context, request.locale)]


@hookimpl
def opencrm_dossier_access(host: Host, request: Request, dossier: Dossier) -> bool | None:
    return True if has_grant(host, request, dossier.id) else None


@hookimpl
def opencrm_scheduled_tasks(host: Host) -> list[ScheduledTask]:
    return [ScheduledTask("horscompte.purge", PURGE_EVERY_SECONDS, purge_expired_state)]


@hookimpl
def opencrm_mail_templates(host: Host) -> list[MailTemplate]:
    return [DEFAULT_VALIDATION_TEMPLATE]


@hookimpl(trylast=True)
def horscompte_generate_tracking_code(host: Host, settings: Settings) -> str:
    return generate_tracking_code(CodePolicy.from_settings(settings))


@hookimpl(trylast=True)
def horscompte_account_exists(host: Host, email: str) -> bool:
    return host.find_account(email) is not None


@hookimpl(trylast=True)
def horscompte_audit_event(host: Host, session: Session, event: AuditEvent) -> None:
    store_event(session, event)
