"""``opencrm-horscompte demo``: the reference host with the plugin enabled, on 127.0.0.1.

Embedded defaults: a SQLite file and a Maildir outbox in the data dir. Environment:
``HORSCOMPTE_DATABASE_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1/test``) and
``HORSCOMPTE_SMTP_URL`` (``smtp://host:port``). The signing key and the demo passwords are
generated on first start and kept in ``DIR/secrets.json`` (mode 0600).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, cast

from werkzeug.serving import run_simple

from opencrm_horscompte.host_kit.refhost import outbox
from opencrm_horscompte.host_kit.refhost.app import create_app
from opencrm_horscompte.host_kit.refhost.host import HostConfig, ReferenceHost
from opencrm_horscompte.host_kit.refhost.scheduler import TaskScheduler
from opencrm_horscompte.host_kit.refhost.seed import ADMIN_EMAIL, AGENT_EMAIL, CITIZEN_EMAIL, seed


def load_or_create_secrets(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "secrets.json"
    if path.exists():
        return cast("dict[str, Any]", json.loads(path.read_text("utf-8")))
    values = {
        "secret_keys": [secrets.token_hex(32)],
        "citizen_password": secrets.token_urlsafe(12),
        "admin_password": secrets.token_urlsafe(12),
        "agent_password": secrets.token_urlsafe(12),
    }
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2)
    return values


def trusted_proxies() -> int:
    """``HORSCOMPTE_TRUSTED_PROXIES``: how many reverse proxies in front of the host append
    to ``X-Forwarded-For`` (0, the default: the header is ignored)."""
    raw = os.environ.get("HORSCOMPTE_TRUSTED_PROXIES", "").strip() or "0"
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"HORSCOMPTE_TRUSTED_PROXIES must be a number of proxies: {raw!r}"
        ) from None
    if not 0 <= value <= 10:
        raise ValueError("HORSCOMPTE_TRUSTED_PROXIES must be between 0 and 10")
    return value


def host_config(data_dir: Path, port: int) -> tuple[HostConfig, dict[str, Any]]:
    """The configuration of the demo and served host: secrets of ``data_dir`` (made on the
    first start), ``HORSCOMPTE_DATABASE_URL`` or a SQLite file there."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    stored = load_or_create_secrets(data_dir)
    database_url = os.environ.get("HORSCOMPTE_DATABASE_URL") or (
        f"sqlite:///{(data_dir / 'crm.sqlite3').resolve()}"
    )
    config = HostConfig(
        database_url=database_url,
        secret_keys=[bytes.fromhex(key) for key in stored["secret_keys"]],
        base_url=f"http://127.0.0.1:{port}",
        data_dir=data_dir,
        trusted_proxies=trusted_proxies(),
    )
    return config, stored


def build_host(data_dir: Path, port: int) -> tuple[ReferenceHost, dict[str, Any]]:
    config, stored = host_config(data_dir, port)
    host = ReferenceHost(config)
    stored.setdefault("agent_password", None)  # demo data made before agents existed
    seed(host, stored["citizen_password"], stored["admin_password"], stored["agent_password"])
    return host, stored


def mail_transport(data_dir: Path) -> outbox.Transport:
    """``HORSCOMPTE_SMTP_URL``, or the Maildir folder ``DATA_DIR/outbox``."""
    return outbox.transport_from_url(os.environ.get("HORSCOMPTE_SMTP_URL"), data_dir / "outbox")


def run_demo(port: int = 8765, data_dir: Path = Path("demo-data")) -> None:
    host, stored = build_host(data_dir, port)
    smtp_url = os.environ.get("HORSCOMPTE_SMTP_URL")
    transport = mail_transport(data_dir)
    worker = outbox.OutboxWorker(
        host.engine, transport, sender=host.config.mail_sender, now=host.now
    )
    worker.start()
    scheduler = TaskScheduler(host)
    scheduler.start()
    database = host.engine.url.render_as_string(hide_password=True)
    agent_password = stored["agent_password"]
    agent_line = f"  agent           : {AGENT_EMAIL} / {agent_password}\n" if agent_password else ""
    print(
        f"Open CRM (hôte de référence) avec le module Accès sans compte : http://127.0.0.1:{port}/\n"
        f"  base de données : {database}\n"
        f"  courriels       : {smtp_url or (data_dir / 'outbox').resolve()}\n"
        f"  usager          : {CITIZEN_EMAIL} / {stored['citizen_password']}\n"
        f"  administrateur  : {ADMIN_EMAIL} / {stored['admin_password']}\n"
        f"{agent_line}"
        f"  (identifiants conservés dans {(data_dir / 'secrets.json').resolve()})\n"
        "Ctrl+C pour arrêter.",
        flush=True,
    )
    try:
        run_simple("127.0.0.1", port, create_app(host), threaded=True)
    finally:
        scheduler.stop()
        worker.stop()
