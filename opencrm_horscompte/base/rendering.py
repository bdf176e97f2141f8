"""Jinja2 environments for the plugin's pages and mails (host templates searched first)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2

from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.hostinfo import service_contact, service_name
from opencrm_horscompte.base.i18n import (
    DEFAULT_LOCALE,
    N_,
    Message,
    localized,
    supported,
    translations,
)
from opencrm_horscompte.base.literal_gettext import LiteralGettext
from opencrm_horscompte.hookspecs.host import Host, MailMessage, MailTemplate, Request, Response

MESSAGE_TEMPLATE = "horscompte/message.html"
ACCESS_REFUSED = N_("Accès refusé")
ADMINS_ONLY = N_("Cette page est réservée aux administrateurs.")
STAFF_ONLY = N_("Cette page est réservée aux agents et aux administrateurs.")

PLUGIN_TEMPLATES = jinja2.PackageLoader("opencrm_horscompte.templates", "")


@lru_cache(maxsize=64)
def _environment(
    host_loader: jinja2.BaseLoader | None,
    extra_loaders: tuple[jinja2.BaseLoader, ...],
    locale: str,
) -> jinja2.Environment:
    loaders = [host_loader] if host_loader else []
    loaders += [*extra_loaders, PLUGIN_TEMPLATES]
    environment = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
        extensions=["jinja2.ext.i18n", LiteralGettext],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # Templates ship in the package (and the host's): no stat of every file per render.
        auto_reload=False,
    )
    catalog = translations(locale)
    environment.install_gettext_translations(catalog, newstyle=True)  # type: ignore[attr-defined]
    environment.literal_catalog = catalog  # type: ignore[attr-defined]
    # Other plugins' templates are not in the plugin's catalog: they branch on this.
    environment.globals["locale"] = locale
    return environment


def environment(host: Host, locale: str = DEFAULT_LOCALE) -> jinja2.Environment:
    """The plugin's templates with the catalog of ``locale``: the host's loader first, then
    the loaders other plugins contribute (``horscompte_template_loader``), then the
    plugin's own templates."""
    extra = tuple(PluginHooks(host).template_loaders())
    return _environment(host.template_loader, extra, supported(locale))


def render_page(host: Host, request: Request, name: str, **context: Any) -> str:
    """Render a plugin page: the host's layout context, then the page's own."""
    merged: dict[str, Any] = {**host.layout_context(request), "request": request, **context}
    template = environment(host, request.locale).get_template(name)
    return template.render(localized(merged, request.locale))


def message_page(
    host: Host, request: Request, title: Message, message: Message, status: int
) -> Response:
    """A plugin page that only says something (an expired link, a refused access)."""
    body = render_page(host, request, MESSAGE_TEMPLATE, title=title, message=message)
    return Response.html(body, status=status)


def render_fragment(
    host: Host, name: str, context: Mapping[str, Any], locale: str = DEFAULT_LOCALE
) -> str:
    """Render a template with exactly ``context`` (mail parts, receipt fragments)."""
    template = environment(host, locale).get_template(name)
    return template.render(localized(context, locale))


def render_mail(
    host: Host,
    to: str,
    template: MailTemplate,
    context: Mapping[str, Any],
    locale: str = DEFAULT_LOCALE,
) -> MailMessage:
    """A mail from ``template``'s subject, text and HTML parts (HTML autoescaped).

    Every part also gets ``locale`` (for ``<html lang>``), ``service_name`` and
    ``service_contact`` (the signature), unless ``context`` sets them.
    """
    context = {**mail_context(host, locale), **context}
    subject = render_fragment(host, template.subject, context, locale)
    return MailMessage(
        to=to,
        subject=" ".join(subject.split()),
        text=render_fragment(host, template.text, context, locale),
        html=render_fragment(host, template.html, context, locale) if template.html else None,
    )


def mail_context(host: Host, locale: str) -> dict[str, Any]:
    """What every mail template may use besides its own variables."""
    return {
        "locale": supported(locale),
        "service_name": service_name(host),
        "service_contact": service_contact(host),
    }


def plugin_mail(name: str, label: str) -> MailTemplate:
    """The plugin's mail ``horscompte/mail/<name>`` (``_subject.txt``, ``.txt``, ``.html``)."""
    base = f"horscompte/mail/{name}"
    return MailTemplate(name, label, f"{base}_subject.txt", f"{base}.txt", f"{base}.html")
