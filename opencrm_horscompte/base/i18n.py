"""Translations: the source text is French; catalogs (``locale/<lang>/LC_MESSAGES``) give
French and English. Templates use Jinja2's i18n extension; Python code builds
:class:`Message` objects (``N_(...)``) that are translated when rendered, in the locale of
the request (or of the dossier, for its mails).

Catalogs are compiled ``.mo`` files read with the standard library; Babel is only needed to
extract and compile them (``python scripts/catalogs.py``).
"""

from __future__ import annotations

import gettext
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

LOCALES = ("fr", "en")
DEFAULT_LOCALE = "fr"
DOMAIN = "messages"
NBSP = "\u00a0"


def locale_dir() -> str:
    return str(resources.files("opencrm_horscompte") / "locale")


def supported(locale: str | None) -> str:
    """``locale`` if the plugin has a catalog for it (``en-GB`` -> ``en``), else French."""
    language = (locale or "").replace("_", "-").split("-")[0].lower()
    return language if language in LOCALES else DEFAULT_LOCALE


@cache
def translations(locale: str) -> gettext.NullTranslations:
    return gettext.translation(DOMAIN, locale_dir(), languages=[supported(locale)], fallback=True)


@dataclass(frozen=True)
class Number:
    """A number written the locale's way: ``3 500`` and ``1,5`` in French, ``3,500`` and
    ``1.5`` in English."""

    value: float

    def format(self, locale: str) -> str:
        value = self.value
        text = f"{value:,.0f}" if abs(value - round(value)) < 1e-9 else f"{value:,.1f}"
        if supported(locale) == "fr":
            return text.replace(",", NBSP).replace(".", ",")
        return text


@dataclass(frozen=True)
class Message:
    """A user-facing text not yet translated: ``msgid`` is French with ``%(name)s``
    placeholders; parameters may be :class:`Message` or :class:`Number` themselves."""

    msgid: str
    params: tuple[tuple[str, Any], ...] = ()

    def translate(self, locale: str) -> str:
        text = translations(locale).gettext(self.msgid)
        if not self.params:
            return text
        return text % {name: _rendered(value, locale) for name, value in self.params}

    def __str__(self) -> str:
        return self.translate(DEFAULT_LOCALE)


def _rendered(value: Any, locale: str) -> Any:
    if isinstance(value, Message):
        return value.translate(locale)
    if isinstance(value, Number):
        return value.format(locale)
    return value


def N_(msgid: str, **params: Any) -> Message:
    """Mark ``msgid`` for extraction; translated later, in the reader's locale."""
    return Message(msgid, tuple(params.items()))


def translate(value: Any, locale: str) -> str:
    """A :class:`Message` translated, a :class:`Number` formatted; a plain string looked up
    in the catalog as is."""
    if isinstance(value, Message | Number):
        return str(_rendered(value, locale))
    return translations(locale).gettext(str(value))


def localized(context: Mapping[str, Any], locale: str) -> dict[str, Any]:
    """``context`` for a template: messages translated, also inside dicts (form errors)."""

    def one(value: Any) -> Any:
        if isinstance(value, Message | Number):
            return translate(value, locale)
        if isinstance(value, dict):
            return {key: one(item) for key, item in value.items()}
        return value

    return {key: one(value) for key, value in context.items()}
