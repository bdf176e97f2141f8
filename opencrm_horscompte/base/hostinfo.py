"""The host's optional attributes (see :class:`~opencrm_horscompte.hookspecs.host.Host`),
read with their documented defaults so that hosts written against an earlier contract keep
working: ``timezone``, ``service_name``, ``service_contact``."""

from __future__ import annotations

from datetime import datetime, tzinfo
from functools import cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opencrm_horscompte.base.i18n import Moment
from opencrm_horscompte.hookspecs.host import (
    DEFAULT_SERVICE_CONTACT,
    DEFAULT_SERVICE_NAME,
    DEFAULT_TIMEZONE,
)


@cache
def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TIMEZONE)


def host_timezone(host: Any) -> tzinfo:
    """The host's time zone (``host.timezone``, an IANA name), Europe/Paris by default;
    an unknown name falls back to the default too."""
    return _zone(str(getattr(host, "timezone", None) or DEFAULT_TIMEZONE))


def moment(host: Any, value: datetime, style: Literal["datetime", "date"] = "datetime") -> Moment:
    """``value`` (aware UTC) to show in the host's time zone, formatted when rendered."""
    return Moment(value, host_timezone(host), style)


def service_name(host: Any) -> str:
    """Who signs the plugin's mails (``host.service_name``)."""
    return str(getattr(host, "service_name", None) or DEFAULT_SERVICE_NAME)


def service_contact(host: Any) -> str:
    """How to reach the service, one line (``host.service_contact``); may be empty."""
    value = getattr(host, "service_contact", None)
    return str(value) if value else DEFAULT_SERVICE_CONTACT
