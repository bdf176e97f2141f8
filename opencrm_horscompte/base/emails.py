"""Email addresses as typed by citizens: validation and the key under which they match.

Matching is trimmed and case-insensitive for ASCII letters, and nothing else is folded:
Unicode case folding and compatibility forms could make two *different* addresses match
(``ß`` case-folds to ``ss``; the ligature U+FB01 and a fullwidth U+FF41 fold to ``fi`` and
``a``). Addresses are kept in NFC, canonical composition, which only joins texts Unicode
defines as the same; an address whose compatibility form differs (fullwidth letters,
ligatures, superscripts) is refused rather than matched. Domains are compared in their IDNA
(punycode) form, per IDNA 2008 with the UTS 46 mapping and *no* transitional processing
(the ``idna`` package): ``faß.de`` is ``xn--fa-hia.de``, not ``fass.de`` as Python's own
IDNA 2003 codec would have it, and final sigma (U+03C2) stays distinct from sigma (U+03C3).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import idna

from opencrm_horscompte.base.i18n import N_, Message

MAX_LENGTH = 254
MAX_LOCAL_LENGTH = 64
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_LOCAL_FORBIDDEN = set(' "(),:;<>[\\]')
ENCODED_WORD_START = "=?"
_DOMAIN_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


NOT_AN_ADDRESS = N_("Saisissez une adresse électronique valide, au format nom@domaine.fr.")
NOT_ALLOWED = N_("L'adresse électronique contient des caractères non autorisés.")
TOO_LONG = N_(
    "L'adresse électronique est trop longue (%(max)s caractères au plus).", max=MAX_LENGTH
)
BAD_DOMAIN = N_("Le nom de domaine de l'adresse électronique n'est pas valide.")


class InvalidEmail(ValueError):
    """The address can't be valid; ``message`` is for the field's error."""

    def __init__(self, message: Message) -> None:
        super().__init__(str(message))
        self.message = message


def _ascii_domain(domain: str) -> str:
    ascii_domain = _checked_domain(domain)
    if ascii_domain is None:
        raise InvalidEmail(BAD_DOMAIN)
    return ascii_domain


@lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> str | None:
    """The lower-case IDNA form of ``domain``, None if it is not a valid domain name. Cached
    per process: IDNA costs tens of microseconds, and a town's citizens share few domains
    (it holds domain names only)."""
    try:
        ascii_domain = idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None
    ascii_domain = ascii_domain.lower()
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        return None
    return ascii_domain


def _plausible_local_part(local: str) -> bool:
    return (
        0 < len(local) <= MAX_LOCAL_LENGTH
        and "@" not in local
        and not _LOCAL_FORBIDDEN & set(local)
        and not local.startswith(".")
        and not local.endswith(".")
        and ".." not in local
    )


def _has_control_or_format(address: str) -> bool:
    return any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in address)


def normalize_email(raw: str) -> str:
    """The address to store: trimmed, NFC. Raises :class:`InvalidEmail` saying what is wrong."""
    if len(raw) > 4 * MAX_LENGTH:
        raise InvalidEmail(TOO_LONG)
    address = raw.strip()
    # ASCII (most addresses) is its own NFC and NFKC form; its only control, format or
    # separator characters are the unprintable ones (C0 controls and DEL).
    ascii = address.isascii()
    if not ascii:
        address = unicodedata.normalize("NFC", address)
    if not address:
        raise InvalidEmail(N_("Saisissez votre adresse électronique."))
    if not address.isprintable() if ascii else _has_control_or_format(address):
        raise InvalidEmail(NOT_ALLOWED)
    if len(address) > MAX_LENGTH:
        raise InvalidEmail(TOO_LONG)
    if not ascii and unicodedata.normalize("NFKC", address) != address:
        raise InvalidEmail(NOT_ALLOWED)
    local, at, domain = address.rpartition("@")
    if ENCODED_WORD_START in local:
        # RFC 2047 forbids encoded-words in an address, but mail libraries decode them
        # anyway: "=?utf-8?b?...?=" could then read as a control or a second recipient.
        raise InvalidEmail(NOT_ALLOWED)
    spaced = " " in address if ascii else any(char.isspace() for char in address)
    if not (at and domain and _plausible_local_part(local)) or spaced:
        raise InvalidEmail(NOT_AN_ADDRESS)
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


def mask_email(address: str) -> str:
    """``address`` with its local part hidden but the first character, for a page that must
    not confirm it: ``lea.dupont@exemple.org`` -> ``l***@exemple.org``."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "***"
    return f"{local[0]}***@{domain}"
