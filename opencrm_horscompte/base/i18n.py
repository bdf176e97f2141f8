"""Translations: the source text is French; catalogs (``locale/<lang>/LC_MESSAGES``) give
French and English. Templates use Jinja2's i18n extension; Python code builds
:class:`Message` objects (``N_(...)``) that are translated when rendered, in the locale of
the request (or of the dossier, for its mails).

Catalogs are compiled ``.mo`` files read with the standard library. Numbers, dates and times
are written the locale's way with Babel (CLDR data), in the host's time zone
(:mod:`opencrm_horscompte.base.hostinfo`). Messages that take a count have plural forms
(:func:`NP_`, ``ngettext`` in templates): French uses the singular for 0 and 1, English for 1.
"""

from __future__ import annotations

import gettext
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import cache, lru_cache
from importlib import resources
from typing import Any, Literal

from babel.dates import format_date, format_time
from babel.numbers import format_decimal

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
    """A number written the locale's way (Babel): ``3 500`` and ``1,5`` in French, ``3,500``
    and ``1.5`` in English. ``decimals`` fixes the digits after the separator; by default a
    whole number has none and any other one decimal."""

    value: float
    decimals: int | None = None

    def format(self, locale: str) -> str:
        value = self.value
        decimals = self.decimals
        if decimals is None:
            decimals = 0 if abs(value - round(value)) < 1e-9 else 1
        pattern = "#,##0" + ("." + "0" * decimals if decimals else "")
        return format_decimal(round(value, decimals), format=pattern, locale=supported(locale))


@dataclass(frozen=True)
class Moment:
    """A point in time shown to a person, in ``zone`` (the host's time zone), the locale's
    way: ``1 décembre 2026 à 05:07`` / ``December 1, 2026 at 5:07 AM`` (``datetime``) or
    ``1 décembre 2026`` (``date``). ``value`` must be timezone-aware (UTC in storage)."""

    value: datetime
    zone: tzinfo
    style: Literal["datetime", "date"] = "datetime"

    def format(self, locale: str) -> str:
        return _formatted_moment(self.minute(), self.zone, self.style, supported(locale))

    def minute(self) -> datetime:
        """The local minute shown (in ``zone``): two moments with the same one read alike."""
        value = self.value if self.value.tzinfo else self.value.replace(tzinfo=UTC)
        return value.astimezone(self.zone).replace(second=0, microsecond=0)


@lru_cache(maxsize=1024)
def _formatted_moment(local: datetime, zone: tzinfo, style: str, language: str) -> str:
    """A moment to the minute, which is all it shows, written once per minute and locale
    (Babel's formatting costs tens of microseconds; every deposit's mail shows one)."""
    day = format_date(local, "long", locale=language)
    if style == "date":
        return day
    time = format_time(local, "short", tzinfo=zone, locale=language)
    return translations(language).gettext("%(date)s à %(time)s") % {"date": day, "time": time}


@dataclass(frozen=True)
class Message:
    """A user-facing text not yet translated: ``msgid`` is French with ``%(name)s``
    placeholders; parameters may be :class:`Message` or :class:`Number` themselves."""

    msgid: str
    params: tuple[tuple[str, Any], ...] = ()
    plural: str | None = None
    count: int = 0

    def translate(self, locale: str) -> str:
        catalog = translations(locale)
        if self.plural is None:
            text = catalog.gettext(self.msgid)
        else:
            text = catalog.ngettext(self.msgid, self.plural, self.count)
        if not self.params and self.plural is None:
            return text
        values = {name: _rendered(value, locale) for name, value in self.params}
        if self.plural is not None:
            values.setdefault("count", Number(self.count).format(locale))
        return text % values

    def __str__(self) -> str:
        return self.translate(DEFAULT_LOCALE)


def _rendered(value: Any, locale: str) -> Any:
    if isinstance(value, Message):
        return value.translate(locale)
    if isinstance(value, Number | Moment):
        return value.format(locale)
    return value


def N_(msgid: str, **params: Any) -> Message:
    """Mark ``msgid`` for extraction; translated later, in the reader's locale."""
    return Message(msgid, tuple(params.items()))


def NP_(singular: str, plural: str, count: int, **params: Any) -> Message:
    """A message with plural forms, chosen by ``count`` in the reader's locale;
    ``%(count)s`` in the text is ``count`` written the locale's way."""
    return Message(singular, tuple(params.items()), plural=plural, count=count)


def translate(value: Any, locale: str) -> str:
    """A :class:`Message` translated, a :class:`Number` formatted; a plain string looked up
    in the catalog as is."""
    if isinstance(value, Message | Number | Moment):
        return str(_rendered(value, locale))
    return translations(locale).gettext(str(value))


def localized(context: Mapping[str, Any], locale: str) -> dict[str, Any]:
    """``context`` for a template: messages translated, also inside dicts (form errors) and
    lists of them (history rows)."""

    def one(value: Any) -> Any:
        if isinstance(value, Message | Number | Moment):
            return translate(value, locale)
        if isinstance(value, dict):
            return {key: one(item) for key, item in value.items()}
        if isinstance(value, list):
            return [one(item) for item in value]
        return value

    return {key: one(value) for key, value in context.items()}
