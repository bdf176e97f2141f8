"""The mail templates an admin can choose for "Courriel de validation"."""

from __future__ import annotations

from dataclasses import replace

from opencrm_horscompte.base.hooks import PluginHooks
from opencrm_horscompte.base.i18n import N_
from opencrm_horscompte.base.rendering import plugin_mail
from opencrm_horscompte.hookspecs.host import Host, MailTemplate

DEFAULT_VALIDATION_TEMPLATE = replace(
    plugin_mail("validation", str(N_("Modèle par défaut"))),
    key="horscompte.validation",
)


def available_templates(host: Host) -> list[MailTemplate]:
    """Templates from ``opencrm_mail_templates`` then ``horscompte_validation_mail_templates``,
    first contribution of a key wins."""
    by_key: dict[str, MailTemplate] = {}
    for template in PluginHooks(host).mail_templates():
        by_key.setdefault(template.key, template)
    return list(by_key.values())
