"""The mail templates an admin can choose for "Mail de validation"."""

from __future__ import annotations

from .hookspecs.host import Host, MailTemplate

DEFAULT_VALIDATION_TEMPLATE = MailTemplate(
    key="horscompte.validation",
    label="Code de validation (modèle par défaut du module Hors-compte)",
    subject="horscompte/mail/validation_subject.txt",
    text="horscompte/mail/validation.txt",
    html="horscompte/mail/validation.html",
)


def available_templates(host: Host) -> list[MailTemplate]:
    """Templates from ``opencrm_mail_templates`` then ``horscompte_validation_mail_templates``,
    first contribution of a key wins."""
    contributed = [
        *host.hook.opencrm_mail_templates(host=host),
        *host.hook.horscompte_validation_mail_templates(host=host),
    ]
    by_key: dict[str, MailTemplate] = {}
    for templates in contributed:
        for template in templates or ():
            by_key.setdefault(template.key, template)
    return list(by_key.values())
