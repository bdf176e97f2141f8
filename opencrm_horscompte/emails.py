"""Email addresses as typed by citizens: validation and the key under which they match.

Matching is trimmed and case-insensitive for ASCII letters, and nothing else is folded:
Unicode case folding and compatibility forms could make two *different* addresses match
(``ß`` case-folds to ``ss``; the ligature U+FB01 and a fullwidth U+FF41 fold to ``fi`` and
``a``). Addresses are kept in NFC, canonical composition, which only joins texts Unicode
defines as the same; an address whose compatibility form differs (fullwidth letters,
ligatures, superscripts) is refused rather than matched. Domains are compared in their IDNA
(punycode) form.
"""

from __future__ import annotations

import re
import unicodedata

MAX_LENGTH = 254
MAX_LOCAL_LENGTH = 64
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_LOCAL_FORBIDDEN = set(' "(),:;<>[\\]')
_DOMAIN_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class InvalidEmail(ValueError):
    """The address can't be valid; the message is French, for the field's error."""


def _refuse(message: str) -> InvalidEmail:
    return InvalidEmail(message)


def _ascii_domain(domain: str) -> str:
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError as error:
        raise _refuse("Le nom de domaine de l'adresse e-mail n'est pas valide.") from error
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise _refuse("Le nom de domaine de l'adresse e-mail n'est pas valide.")
    return ascii_domain


def normalize_email(raw: str) -> str:
    """The address to store: trimmed, NFC. Raises :class:`InvalidEmail` with a French message."""
    if len(raw) > 4 * MAX_LENGTH:
        raise _refuse(f"L'adresse e-mail est trop longue ({MAX_LENGTH} caractères au plus).")
    address = unicodedata.normalize("NFC", raw.strip())
    if not address:
        raise _refuse("Saisissez votre adresse e-mail.")
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in address):
        raise _refuse("L'adresse e-mail contient des caractères non autorisés.")
    if len(address) > MAX_LENGTH:
        raise _refuse(f"L'adresse e-mail est trop longue ({MAX_LENGTH} caractères au plus).")
    if unicodedata.normalize("NFKC", address) != address:
        raise _refuse("L'adresse e-mail contient des caractères non autorisés.")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise _refuse("Saisissez une adresse e-mail valide, par exemple prenom.nom@exemple.fr.")
    if "@" in local or _LOCAL_FORBIDDEN & set(local) or any(char.isspace() for char in address):
        raise _refuse("Saisissez une adresse e-mail valide, par exemple prenom.nom@exemple.fr.")
    if len(local) > MAX_LOCAL_LENGTH or local.startswith(".") or local.endswith("."):
        raise _refuse("Saisissez une adresse e-mail valide, par exemple prenom.nom@exemple.fr.")
    if ".." in local:
        raise _refuse("Saisissez une adresse e-mail valide, par exemple prenom.nom@exemple.fr.")
    _ascii_domain(domain)
    return address


def email_key(address: str) -> str:
    """The form under which two addresses are the same: ASCII letters of the local part
    lower-cased, the domain in lower-case IDNA. ``address`` must be normalised already."""
    local, _, domain = address.rpartition("@")
    return f"{local.translate(_ASCII_LOWER)}@{_ascii_domain(domain)}"


def email_key_or_blank(raw: str) -> str:
    """:func:`email_key` of ``raw`` as typed, or ``""`` when it can't be valid (it then
    matches nothing)."""
    try:
        return email_key(normalize_email(raw))
    except InvalidEmail:
        return ""
