"""The served reference host's configuration (``demo``, ``serve``, ``worker``): the data dir,
its ``secrets.json``, and the environment variables. Each value is checked when it is read,
so a mistake stops the start with one line naming the variable or the file
(:class:`ConfigError`), instead of a traceback or a silent default (mail sent nowhere, a
fresh SQLite file in place of the database meant).

- ``HORSCOMPTE_DATABASE_URL``: unset, a SQLite file in the data dir.
- ``HORSCOMPTE_SMTP_URL``: ``smtp://host:port``; unset, the Maildir ``DATA_DIR/outbox``.
- ``HORSCOMPTE_PUBLIC_URL``: the address citizens reach the site at, in mails and links
  (``https://`` also marks the session cookie Secure); unset, ``http://127.0.0.1:PORT``.
- ``HORSCOMPTE_TRUSTED_PROXIES``: reverse proxies that append to ``X-Forwarded-For`` (0).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opencrm_horscompte.base.db import check_typed_url
from opencrm_horscompte.host_kit.refhost import outbox
from opencrm_horscompte.host_kit.refhost.host import HostConfig

DATABASE_URL = "HORSCOMPTE_DATABASE_URL"
SMTP_URL = "HORSCOMPTE_SMTP_URL"
PUBLIC_URL = "HORSCOMPTE_PUBLIC_URL"
TRUSTED_PROXIES = "HORSCOMPTE_TRUSTED_PROXIES"
SECRETS_FILE = "secrets.json"


class ConfigError(ValueError):
    """A setting of the served host that can't be used; the message is one line that names
    it."""


def _variable(name: str) -> str | None:
    """The variable's value, or None when it is unset. Set but blank is a mistake (an
    ``export VAR=`` left over), not a request for the default."""
    value = os.environ.get(name)
    if value is None:
        return None
    if not value.strip():
        raise ConfigError(f"{name} is set but empty: give it a value, or unset it")
    return value.strip()


def load_or_create_secrets(data_dir: Path) -> dict[str, Any]:
    """``DATA_DIR/secrets.json``: the signing keys and the demo passwords, made (mode 0600)
    on the first start."""
    path = data_dir / SECRETS_FILE
    if path.exists():
        return _read_secrets(path)
    values = {
        "secret_keys": [secrets.token_hex(32)],
        "citizen_password": secrets.token_urlsafe(12),
        "admin_password": secrets.token_urlsafe(12),
        "agent_password": secrets.token_urlsafe(12),
    }
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(values, handle, indent=2)
    except OSError as error:
        raise ConfigError(f"{path}: can't be written ({error.strerror})") from None
    return values


def _read_secrets(path: Path) -> dict[str, Any]:
    try:
        stored = json.loads(path.read_text("utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: can't be read ({error.strerror})") from None
    except ValueError as error:  # not JSON, or not UTF-8
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(stored, dict):
        raise ConfigError(f"{path}: a JSON object is expected")
    keys = stored.get("secret_keys")
    if not isinstance(keys, list) or not keys:
        raise ConfigError(f"{path}: 'secret_keys' must be a list of at least one key")
    for key in keys:
        try:
            if not bytes.fromhex(key):
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: each of 'secret_keys' must be hexadecimal digits") from None
    for name in ("citizen_password", "admin_password"):
        if not isinstance(stored.get(name), str) or not stored[name]:
            raise ConfigError(f"{path}: {name!r} is missing")
    return stored


def trusted_proxies() -> int:
    """``HORSCOMPTE_TRUSTED_PROXIES``: how many reverse proxies in front of the host append
    to ``X-Forwarded-For`` (0, the default: the header is ignored)."""
    raw = os.environ.get(TRUSTED_PROXIES, "").strip() or "0"
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{TRUSTED_PROXIES} must be a number of proxies: {raw!r}") from None
    if not 0 <= value <= 10:
        raise ConfigError(f"{TRUSTED_PROXIES} must be between 0 and 10")
    return value


def database_url(data_dir: Path) -> str:
    """``HORSCOMPTE_DATABASE_URL``, checked (a URL, of a database the plugin runs on), or
    the SQLite file ``DATA_DIR/crm.sqlite3``."""
    url = _variable(DATABASE_URL)
    if url is None:
        return f"sqlite:///{(data_dir / 'crm.sqlite3').resolve()}"
    try:
        check_typed_url(url)
    except ValueError as error:
        raise ConfigError(f"{DATABASE_URL}: {error}") from None
    return url


def public_url(port: int) -> str:
    """``HORSCOMPTE_PUBLIC_URL`` (``https://crm.ville.fr``), or ``http://127.0.0.1:PORT``."""
    url = _variable(PUBLIC_URL)
    if url is None:
        return f"http://127.0.0.1:{port}"
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (a port that isn't a number raises here)
    except ValueError:
        raise ConfigError(f"{PUBLIC_URL}: invalid port in {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{PUBLIC_URL} must be http:// or https:// and a host: {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{PUBLIC_URL} must be the site's address only: {url!r}")
    return url.rstrip("/")


def _prepare(data_dir: Path) -> None:
    """The data dir exists, for its owner only (it holds the secrets and the database)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
    except OSError as error:
        raise ConfigError(f"data dir {data_dir}: {error.strerror}") from None


def mail_transport(data_dir: Path) -> outbox.Transport:
    """``HORSCOMPTE_SMTP_URL``, or the Maildir folder ``DATA_DIR/outbox``."""
    url = _variable(SMTP_URL)
    _prepare(data_dir)
    try:
        return outbox.transport_from_url(url, data_dir / "outbox")
    except ValueError as error:
        raise ConfigError(f"{SMTP_URL}: {error}") from None
    except OSError as error:
        raise ConfigError(f"mail folder {data_dir / 'outbox'}: {error.strerror}") from None


def host_config(data_dir: Path, port: int) -> tuple[HostConfig, dict[str, Any]]:
    """The configuration of the demo and served host: secrets of ``data_dir`` (made on the
    first start) and the environment variables, every one checked."""
    _prepare(data_dir)
    stored = load_or_create_secrets(data_dir)
    config = HostConfig(
        database_url=database_url(data_dir),
        secret_keys=[bytes.fromhex(key) for key in stored["secret_keys"]],
        base_url=public_url(port),
        data_dir=data_dir,
        trusted_proxies=trusted_proxies(),
    )
    return config, stored
