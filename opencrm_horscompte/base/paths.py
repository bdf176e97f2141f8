"""Every path the plugin serves, in one place. Templates receive the URLs they need in
their context (never as literals), so a host that mounts the plugin elsewhere changes
them here only."""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote, urlsplit

ADMIN_PATH = "/admin/hors-compte"
PROPOSAL_PATH = "/hors-compte/identite"
DECLINE_PATH = "/hors-compte/identite/continuer"
LOOKUP_PATH = "/hors-compte/suivi"
VALIDATE_PATH = "/hors-compte/validation"
FORGOTTEN_PATH = "/hors-compte/code-oublie"
AGENT_PATH = "/admin/hors-compte/assistance"
STATS_PATH = "/admin/hors-compte/statistiques"
STATS_CSV_PATH = "/admin/hors-compte/statistiques.csv"
CLAIM_PATH = "/hors-compte/rattacher"
CLAIM_CODE_PATH = "/hors-compte/rattacher/code"
ACCEPT_PATH = "/hors-compte/identite/connexion"

_MAX_REDIRECT_LENGTH = 2048


def is_local_path(url: str) -> bool:
    """Whether ``url`` is safe to redirect to: a path on this site, nothing a browser could
    read as another host. Refused: a scheme or authority, ``//`` and ``/\\`` (browsers read
    ``\\`` as ``/``), any backslash, whitespace or control character (browsers strip tabs
    and newlines, so ``/\\t/evil.example`` becomes ``//evil.example``), and anything whose
    percent-decoded form would be refused (``/%2F%5Cevil.example``, ``/%09/evil``)."""
    for candidate in (url, _unquoted(url)):
        if candidate is None or not _plain_local_path(candidate):
            return False
    return True


def _unquoted(url: str) -> str | None:
    try:
        return unquote(url, errors="strict")
    except UnicodeDecodeError:
        return None


def _plain_local_path(url: str) -> bool:
    if not url.startswith("/") or len(url) > _MAX_REDIRECT_LENGTH:
        return False
    if url.startswith("//") or "\\" in url:
        return False
    if any(char.isspace() or unicodedata.category(char)[0] in "CZ" for char in url):
        return False
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc
