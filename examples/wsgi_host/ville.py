"""A small extension plugin of hors-compte, embedded in the example host (no entry point):
digits-only tracking codes, and a validation mail template of its own, shipped through
``horscompte_template_loader`` ("Mail templates from other plugins" in the guide)."""

from __future__ import annotations

import secrets
from typing import Any

import jinja2

from opencrm_horscompte.hookspecs.host import MailTemplate, hookimpl

MANIFEST = """
name = "ville"
display_name = "Ville d'Exemple : codes et courriels"
[host]
project = "opencrm"
compatible = ">=2.4,<4"
"""

TEMPLATE_KEY = "ville.validation"
TEMPLATES = jinja2.DictLoader(
    {
        "ville/validation_subject.txt": (
            "{% if locale == 'en' %}City of Example: your code"
            "{% else %}Ville d'Exemple : votre code{% endif %}"
        ),
        "ville/validation.txt": (
            "{% if locale == 'en' %}Your code for « {{ demarche_title }} »:"
            "{% else %}Votre code pour « {{ demarche_title }} » :{% endif %}\n"
            "\n    {{ code }}\n\n"
            "{{ expiry_minutes }} min. {{ lookup_url }}\n"
        ),
    }
)


@hookimpl
def horscompte_generate_tracking_code(host: Any, settings: Any) -> str:
    """Digits only, of the configured length: typed on a phone keypad."""
    return "".join(secrets.choice("0123456789") for _ in range(settings.tracking_code_length))


@hookimpl
def horscompte_template_loader(host: Any) -> jinja2.BaseLoader:
    return TEMPLATES


@hookimpl
def horscompte_validation_mail_templates(host: Any) -> list[MailTemplate]:
    return [
        MailTemplate(
            TEMPLATE_KEY,
            "Code de validation (Ville d'Exemple)",
            "ville/validation_subject.txt",
            "ville/validation.txt",
        )
    ]
