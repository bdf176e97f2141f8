"""Validation of the reference host's own forms (French messages tied to each field)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from ..emails import MAX_LENGTH as EMAIL_MAX
from ..emails import InvalidEmail, normalize_email

NAME_MAX = 100
SUBJECT_MAX = 200
MESSAGE_MAX = 5000


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def clean_text(
    form: Mapping[str, str],
    key: str,
    label: str,
    maximum: int,
    errors: dict[str, str],
    *,
    required: bool = True,
    multiline: bool = False,
) -> str:
    value = form.get(key, "").strip()
    allowed = value.replace("\r\n", "\n").replace("\n", "") if multiline else value
    if required and not value:
        errors[key] = f"Saisissez {label}."
    elif len(value) > maximum:
        errors[key] = f"{label[0].upper()}{label[1:]} : {maximum} caractères au plus."
    elif _has_control(allowed):
        errors[key] = f"{label[0].upper()}{label[1:]} contient des caractères non autorisés."
    return value


def clean_email(form: Mapping[str, str], errors: dict[str, str]) -> str:
    raw = form.get("email", "")
    try:
        return normalize_email(raw)
    except InvalidEmail as error:
        errors["email"] = str(error)
        return raw.strip()[: EMAIL_MAX + 1]


def identity_form(form: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    errors: dict[str, str] = {}
    values = {
        "last_name": clean_text(form, "last_name", "votre nom", NAME_MAX, errors),
        "first_name": clean_text(form, "first_name", "votre prénom", NAME_MAX, errors),
        "email": clean_email(form, errors),
    }
    return values, errors


def answers_form(
    form: Mapping[str, str], *, complete: bool = True
) -> tuple[dict[str, str], dict[str, str]]:
    """The form's answers; ``complete=False`` (saving a draft) lets required ones be empty."""
    errors: dict[str, str] = {}
    values = {
        "subject": clean_text(
            form, "subject", "l'objet de votre demande", SUBJECT_MAX, errors, required=complete
        ),
        "message": clean_text(
            form, "message", "votre message", MESSAGE_MAX, errors, required=False, multiline=True
        ),
    }
    return values, errors
