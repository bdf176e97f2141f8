"""CRM > Administration > Hors-compte: view, preview and save the settings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from opencrm_horscompte.base.db import writer
from opencrm_horscompte.base.hostinfo import moment
from opencrm_horscompte.base.i18n import N_, Message, Number
from opencrm_horscompte.base.manifest import load_manifest
from opencrm_horscompte.base.models import AuditRecord
from opencrm_horscompte.base.paths import ADMIN_PATH, AGENT_PATH, LOOKUP_PATH, STATS_PATH
from opencrm_horscompte.base.rendering import (
    ACCESS_REFUSED,
    ADMINS_ONLY,
    message_page,
    render_mail,
    render_page,
)
from opencrm_horscompte.hookspecs.host import Host, MailMessage, MailTemplate, Request, Response
from opencrm_horscompte.settings.mail_templates import (
    DEFAULT_VALIDATION_TEMPLATE,
    available_templates,
)
from opencrm_horscompte.settings.schema import Settings, SettingsError, parse_form
from opencrm_horscompte.settings.store import SETTINGS_CHANGED, load_settings, save_settings
from opencrm_horscompte.settings.strength import tracking_strength, validation_strength
from opencrm_horscompte.tracking.codes import (
    CodePolicy,
    format_tracking_code,
    generate_tracking_code,
    generate_validation_code,
)

PATH = ADMIN_PATH
TEMPLATE = "horscompte/admin.html"
FLASH_KEY = "horscompte.flash"
HISTORY_SIZE = 10
FLASHES = {
    "saved": N_("Paramètres enregistrés. Ils s'appliquent aux codes émis à partir de maintenant."),
    "unchanged": N_("Aucune modification."),
}
PREVIEW, SAVE = "preview", "save"
UNKNOWN_ACTION = N_("Choisissez « Prévisualiser » ou « Enregistrer ».")
TEMPLATE_KEY = "validation_mail_template"
SAMPLE_ADDRESS = "usager@exemple.fr"
# Settings of two groups share labels ("Longueur du code"): the history qualifies them.
GROUP_LABELS = {
    "identity": N_("Proposition de compte"),
    "tracking": N_("Code de suivi"),
    "validation": N_("Code de validation"),
}


def _preview(settings: Settings) -> dict[str, Any]:
    policy = CodePolicy.from_settings(settings)
    tracking = tracking_strength(policy)
    validation = validation_strength(settings.validation_code_length)
    return {
        "tracking_sample": format_tracking_code(generate_tracking_code(policy)),
        "validation_sample": generate_validation_code(settings.validation_code_length),
        "tracking": tracking,
        "validation": validation,
        # Messages and numbers at the top of a dict, where the page's locale translates them.
        "tracking_summary": tracking.summary,
        "validation_summary": validation.summary,
        "tracking_bits": Number(tracking.bits, 1),
        "validation_bits": Number(validation.bits, 1),
    }


@dataclass(frozen=True)
class MailPreview:
    template: MailTemplate
    mail: MailMessage | None
    error: str | None = None


def _mail_previews(
    host: Host, templates: list[MailTemplate], settings: Settings, locale: str
) -> list[MailPreview]:
    """Each template rendered with sample values; a broken one shows its error, not a 500."""
    context = {
        "code": generate_validation_code(settings.validation_code_length),
        "expiry_minutes": settings.validation_code_expiry_minutes,
        "demarche_title": N_("Signaler un problème de voirie (exemple)"),
        "lookup_url": host.absolute_url(LOOKUP_PATH),
    }
    previews = []
    for template in templates:
        try:
            previews.append(
                MailPreview(template, render_mail(host, SAMPLE_ADDRESS, template, context, locale))
            )
        except Exception as error:  # a host or third-party template: report, don't crash
            previews.append(MailPreview(template, None, f"{type(error).__name__}: {error}"))
    return previews


def _templates(host: Host) -> tuple[list[MailTemplate], str | None]:
    """The templates to choose from, and what went wrong asking the plugins for them
    (then only the default is offered: the page still works)."""
    try:
        return available_templates(host), None
    except Exception as error:  # another plugin's hook: report it, don't crash the page
        return [DEFAULT_VALIDATION_TEMPLATE], f"{type(error).__name__}: {error}"


def _unsendable(
    host: Host, templates: list[MailTemplate], settings: Settings, locale: str
) -> Message | None:
    """Why the chosen template can't make a validation mail, or None: a template that
    fails on its sample would fail every lookup's mail."""
    chosen = [
        template for template in templates if template.key == settings.validation_mail_template
    ]
    for preview in _mail_previews(host, chosen, settings, locale):
        if preview.error:
            return N_("Ce modèle ne peut pas être envoyé : %(error)s", error=preview.error)
    return None


def qualified_labels() -> dict[str, Message]:
    """Each setting's label, preceded by its group's: "Code de suivi \u2013 Longueur du code"."""
    labels: dict[str, Message] = {}
    for spec in load_manifest().settings:
        group = GROUP_LABELS.get(spec.group)
        label = N_(spec.label)  # extracted from plugin.toml
        qualified = N_("%(group)s \u2013 %(label)s", group=group, label=label)  # en dash
        labels[spec.key] = qualified if group else label
    return labels


def _history(host: Host, session: Session) -> list[dict[str, Any]]:
    records = session.exec(
        select(AuditRecord)
        .where(AuditRecord.kind == SETTINGS_CHANGED)
        .order_by(col(AuditRecord.id).desc())
        .limit(HISTORY_SIZE)
    )
    return [
        {"actor": r.actor, "at": moment(host, r.at), "changes": json.loads(r.details_json)}
        for r in records
    ]


def _page(
    host: Host,
    request: Request,
    session: Session,
    values: dict[str, Any],
    *,
    errors: Mapping[str, Any] | None = None,
    preview_of: Settings | None = None,
    previewing: bool = False,
    status: int = 200,
) -> Response:
    templates, templates_error = _templates(host)
    shown = preview_of or load_settings(session)
    body = render_page(
        host,
        request,
        TEMPLATE,
        action_url=ADMIN_PATH,
        stats_url=STATS_PATH,
        agent_url=AGENT_PATH,
        manifest=load_manifest(),
        labels=qualified_labels(),
        values=values,
        errors=errors or {},
        templates=templates,
        templates_error=templates_error,
        mail_previews=_mail_previews(host, templates, shown, request.locale),
        preview=_preview(preview_of) if preview_of else None,
        previewing=previewing,
        history=_history(host, session),
        template_labels={template.key: template.label for template in templates},
        flash=FLASHES.get(request.session.pop(FLASH_KEY, None) or ""),
    )
    return Response.html(body, status=status)


def _submitted_values(form: dict[str, str] | Any) -> dict[str, Any]:
    """What the admin typed, to show it back untouched next to the errors."""
    return {
        spec.key: (spec.key in form) if spec.type == "bool" else form.get(spec.key, "")
        for spec in load_manifest().settings
    }


def handle(host: Host, request: Request) -> Response:
    if request.user is None or not request.user.is_admin:
        return message_page(host, request, ACCESS_REFUSED, ADMINS_ONLY, 403)
    with Session(host.engine) as session:
        if request.method != "POST":
            current = load_settings(session)
            return _page(host, request, session, current.as_dict(), preview_of=current)
        action = request.form.get("action")
        if action not in (PREVIEW, SAVE):
            values = _submitted_values(request.form)
            errors = {"action": UNKNOWN_ACTION}
            return _page(host, request, session, values, errors=errors, status=400)
        templates, _ = _templates(host)
        try:
            submitted = parse_form(request.form, [template.key for template in templates])
        except SettingsError as error:
            values = _submitted_values(request.form)
            previewing = action == PREVIEW
            return _page(
                host,
                request,
                session,
                values,
                errors=error.errors,
                status=400,
                previewing=previewing,
            )
        if action == PREVIEW:
            return _page(
                host, request, session, submitted.as_dict(), preview_of=submitted, previewing=True
            )
        if unsendable := _unsendable(host, templates, submitted, request.locale):
            errors = {TEMPLATE_KEY: unsendable}
            values = submitted.as_dict()
            return _page(host, request, session, values, errors=errors, status=400)
    with Session(writer(host.engine)) as session, session.begin():
        changes = save_settings(host, session, submitted, actor=request.user.email)
    request.session[FLASH_KEY] = "saved" if changes else "unchanged"
    return Response.redirect(PATH)
