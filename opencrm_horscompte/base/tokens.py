"""Signed carriers (itsdangerous): which draft, which challenge, which dossier, for what.

One salt per purpose, so a token made for one purpose is refused for another; always a
``max_age``, measured on the host clock; the host's key list (newest last) verifies tokens
signed with an older key, so rotating keys logs nobody out. A token is readable by whoever
holds it: never put a secret (a code) inside one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

from opencrm_horscompte.hookspecs.host import Host

SALT_PREFIX = "opencrm-horscompte."


def _serializer(host: Host, purpose: str) -> URLSafeTimedSerializer:
    keys, clock = tuple(host.secret_keys), host.now
    try:
        return _built(keys, purpose, clock)
    except TypeError:  # an unhashable host object: build one for this call
        return _built.__wrapped__(keys, purpose, clock)


@lru_cache(maxsize=64)
def _built(
    keys: tuple[bytes, ...], purpose: str, clock: Callable[[], datetime]
) -> URLSafeTimedSerializer:
    """One serializer (and signer class) per key list, purpose and host clock: building
    them costs tens of microseconds, so they are built once, not on every call. A new key
    list (rotation) or another clock makes a new entry."""

    class HostClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock().timestamp())

    return URLSafeTimedSerializer(list(keys), salt=SALT_PREFIX + purpose, signer=HostClockSigner)


def sign(host: Host, purpose: str, payload: Any) -> str:
    """A URL-safe token carrying ``payload`` (JSON-serialisable) for ``purpose``."""
    return _serializer(host, purpose).dumps(payload)


def unsign(host: Host, purpose: str, token: str, max_age_seconds: int) -> Any | None:
    """The payload, or None when the token is tampered, truncated, expired, signed with an
    unknown key or made for another purpose."""
    if not token or len(token) > 2048:
        return None
    try:
        return _serializer(host, purpose).loads(token, max_age=max_age_seconds)
    except BadSignature:
        return None
