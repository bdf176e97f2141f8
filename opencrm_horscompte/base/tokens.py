"""Signed carriers (itsdangerous): which draft, which challenge, which dossier, for what.

One salt per purpose, so a token made for one purpose is refused for another; always a
``max_age``, measured on the host clock; the host's key list (newest last) verifies tokens
signed with an older key, so rotating keys logs nobody out. A token is readable by whoever
holds it: never put a secret (a code) inside one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from itsdangerous import BadData, BadSignature, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode

from opencrm_horscompte.base.manifest import PluginRefused
from opencrm_horscompte.hookspecs.host import Host

SALT_PREFIX = "opencrm-horscompte."


def check_secret_keys(keys: Sequence[object]) -> None:
    """Raise :class:`PluginRefused` unless ``keys`` (``host.secret_keys``) can sign and key
    the HMACs: at least one key, each non-empty ``bytes``. Checked at setup, so a host
    configured with text keys is told at once instead of failing at the first lookup."""
    if isinstance(keys, str | bytes) or not keys:
        raise PluginRefused("clés secrètes de l'hôte : il en faut au moins une (liste de bytes)")
    for position, key in enumerate(keys, start=1):
        if not isinstance(key, bytes):
            raise PluginRefused(
                f"clés secrètes de l'hôte : la clé n° {position} est de type "
                f"{type(key).__name__}, il faut des bytes (par exemple secrets.token_bytes(32))"
            )
        if not key:
            raise PluginRefused(f"clés secrètes de l'hôte : la clé n° {position} est vide")


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
    if not token or len(token) > 2048 or not _canonical_signature(token):
        return None
    try:
        return _serializer(host, purpose).loads(token, max_age=max_age_seconds)
    except BadSignature:
        return None


def _canonical_signature(token: str) -> bool:
    """Whether the token's signature is spelt as signing spells it. Base64 leaves the last
    character's low bits unused, so up to four spellings decode to the same signature:
    only the one :func:`sign` writes is accepted, so no altered token ever passes."""
    signature = token.rpartition(".")[2]
    try:
        return base64_encode(base64_decode(signature)).decode("ascii") == signature
    except (BadData, UnicodeError):
        return False
