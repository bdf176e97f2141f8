"""The plugin registered by a host (entry point ``opencrm.plugins: horscompte``).

Hook implementations stay thin: each hands over to a plain module.
"""

from __future__ import annotations

from collections.abc import Mapping

import pluggy
from packaging.version import Version
from sqlmodel import Session

from opencrm_horscompte.agent import page as agent_page
from opencrm_horscompte.base.audit import store_event
from opencrm_horscompte.base.db import DriverConnection, check_supported_database
from opencrm_horscompte.base.i18n import N_
from opencrm_horscompte.base.manifest import check_manifest, load_manifest
from opencrm_horscompte.base.migrations import upgrade
from opencrm_horscompte.base.paths import (
    ACCEPT_PATH,
    ADMIN_PATH,
    AGENT_PATH,
    CLAIM_CODE_PATH,
    CLAIM_PATH,
    DECLINE_PATH,
    FORGOTTEN_PATH,
    LOOKUP_PATH,
    PROPOSAL_PATH,
    STATS_CSV_PATH,
    STATS_PATH,
    VALIDATE_PATH,
)
from opencrm_horscompte.base.tokens import check_secret_keys
from opencrm_horscompte.claim import page as claim_page
from opencrm_horscompte.hookspecs import horscompte as horscompte_specs
from opencrm_horscompte.hookspecs.horscompte import AuditEvent, takes_driver_connection
from opencrm_horscompte.hookspecs.host import (
    ACCOUNT_SECTION,
    ADMIN_SECTION,
    AGENT_SECTION,
    PUBLIC_SECTION,
    Demarche,
    Dossier,
    DossierAction,
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
from opencrm_horscompte.identity import accept as identity_accept
from opencrm_horscompte.identity.step import decline, identity_step, proposal_page
from opencrm_horscompte.lookup import pages as lookup_pages
from opencrm_horscompte.lookup.grants import has_grant
from opencrm_horscompte.lookup.purge import PURGE_EVERY_SECONDS, purge_expired_state
from opencrm_horscompte.settings import admin_page
from opencrm_horscompte.settings.mail_templates import DEFAULT_VALIDATION_TEMPLATE
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.settings.store import ensure_settings_version
from opencrm_horscompte.stats import page as stats_page
from opencrm_horscompte.stats.audited import count_audit_event
from opencrm_horscompte.tracking import deposit
from opencrm_horscompte.tracking.codes import (
    CodePolicy,
    generate_tracking_code,
)
from opencrm_horscompte.tracking.receipt import receipt_fragments


@hookimpl
def opencrm_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    pluginmanager.add_hookspecs(horscompte_specs)


@hookimpl
def opencrm_plugin_setup(host: Host) -> None:
    manifest = load_manifest()
    check_manifest(manifest, manifest.name, Version(host.version))  # hosts without our loader
    check_secret_keys(host.secret_keys)
    check_supported_database(host.engine)
    upgrade(host.engine, create_unmigrated=True)  # Alembic, locked: N workers may start at once
    ensure_settings_version(host.engine)


@hookimpl
def opencrm_admin_menu(host: Host, user: User | None) -> list[MenuEntry]:
    claim = [MenuEntry(ACCOUNT_SECTION, "Rattacher un dossier", CLAIM_PATH, permission="user")]
    return [
        *(claim if claim_page.attacher(host) else []),
        # French labels (the contract's); N_ marks them for the catalog hosts translate with.
        MenuEntry(ADMIN_SECTION, str(N_("Accès sans compte")), ADMIN_PATH, permission="admin"),
        MenuEntry(PUBLIC_SECTION, str(N_("Suivre un dossier")), LOOKUP_PATH, permission=None),
        MenuEntry(AGENT_SECTION, str(N_("Assistance usagers")), AGENT_PATH, permission="agent"),
    ]


@hookimpl
def opencrm_routes(host: Host) -> list[Route]:
    claim = [
        Route(("GET", "POST"), CLAIM_PATH, claim_page.handle, permission="user"),
        Route(("GET",), CLAIM_CODE_PATH, claim_page.code_page, permission="user"),
    ]
    return [
        *(claim if claim_page.attacher(host) else []),
        Route(("GET", "POST"), ADMIN_PATH, admin_page.handle, permission="admin"),
        Route(("GET",), PROPOSAL_PATH, proposal_page),
        Route(("POST",), DECLINE_PATH, decline),
        Route(("GET",), ACCEPT_PATH, identity_accept.accept),
        Route(("GET", "POST"), LOOKUP_PATH, lookup_pages.lookup),
        Route(("GET", "POST"), VALIDATE_PATH, lookup_pages.validate),
        Route(("GET", "POST"), FORGOTTEN_PATH, lookup_pages.forgotten),
        Route(("GET", "POST"), AGENT_PATH, agent_page.handle, permission="agent"),
        Route(("GET",), STATS_PATH, stats_page.handle, permission="admin"),
        Route(("GET",), STATS_CSV_PATH, stats_page.handle_csv, permission="admin"),
    ]


@hookimpl
def opencrm_identity_step(
    host: Host, request: Request, demarche: Demarche, identity: Mapping[str, str]
) -> IdentityDecision | None:
    return identity_step(host, request, demarche, identity)


@hookimpl
def opencrm_deposit_prepare(host: Host, dossier: Dossier) -> None:
    deposit.prepare(host, dossier)


@hookimpl
def opencrm_deposit(host: Host, session: Session, dossier: Dossier) -> None:
    deposit.deposit(host, session, dossier)


@hookimpl
def opencrm_dossier_receipt(host: Host, request: Request, dossier: Dossier) -> list[str]:
    return receipt_fragments(host, request, dossier)


@hookimpl
def opencrm_dossier_access(host: Host, request: Request, dossier: Dossier) -> bool | None:
    return True if has_grant(host, request, dossier.id) else None


@hookimpl
def opencrm_dossier_actions(host: Host, request: Request, dossier: Dossier) -> list[DossierAction]:
    return [DossierAction("Assistance usagers", agent_page.dossier_url(dossier.id))]


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
@takes_driver_connection
def horscompte_audit_event(
    host: Host, session: Session | DriverConnection, event: AuditEvent
) -> None:
    store_event(session, event)
    count_audit_event(session, event)
