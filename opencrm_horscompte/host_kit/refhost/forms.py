"""Validation of the reference host's own forms (a message tied to each field)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from opencrm_horscompte.base.emails import MAX_LENGTH as EMAIL_MAX
from opencrm_horscompte.base.emails import InvalidEmail, normalize_email
from opencrm_horscompte.base.i18n import N_, Message

NAME_MAX = 100
SUBJECT_MAX = 200
MESSAGE_MAX = 5000


# Controls, and the line and paragraph separators (U+2028, U+2029): a name or a subject is
# one line, and a message breaks its lines with the line feeds the form sends.
_REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in text)


def clean_text(
    form: Mapping[str, str],
    key: str,
    missing: Message,
    maximum: int,
    errors: dict[str, Message],
    *,
    required: bool = True,
    multiline: bool = False,
) -> str:
    value = form.get(key, "").strip()
    allowed = value.replace("\r\n", "\n").replace("\n", "") if multiline else value
    if required and not value:
        errors[key] = missing
    elif len(value) > maximum:
        errors[key] = N_("Ce texte est trop long : %(max)s caractères au plus.", max=maximum)
    elif _has_control(allowed):
        errors[key] = N_("Ce texte contient des caractères non autorisés.")
    return value


def clean_email(form: Mapping[str, str], errors: dict[str, Message]) -> str:
    raw = form.get("email", "")
    try:
        return normalize_email(raw)
    except InvalidEmail as error:
        errors["email"] = error.message
        return raw.strip()[: EMAIL_MAX + 1]


def identity_form(form: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Message]]:
    errors: dict[str, Message] = {}
    values = {
        "last_name": clean_text(form, "last_name", N_("Saisissez votre nom."), NAME_MAX, errors),
        "first_name": clean_text(
            form, "first_name", N_("Saisissez votre prénom."), NAME_MAX, errors
        ),
        "email": clean_email(form, errors),
    }
    return values, errors


def answers_form(
    form: Mapping[str, str], *, complete: bool = True
) -> tuple[dict[str, str], dict[str, Message]]:
    """The form's answers; ``complete=False`` (saving a draft) lets required ones be empty."""
    errors: dict[str, Message] = {}
    missing_subject = N_("Saisissez l'objet de votre demande.")
    values = {
        "subject": clean_text(
            form, "subject", missing_subject, SUBJECT_MAX, errors, required=complete
        ),
        "message": clean_text(
            form,
            "message",
            N_("Saisissez votre message."),
            MESSAGE_MAX,
            errors,
            required=False,
            multiline=True,
        ),
    }
    return values, errors
