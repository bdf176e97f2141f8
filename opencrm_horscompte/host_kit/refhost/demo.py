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
from typing import Any

from werkzeug.serving import run_simple

from opencrm_horscompte.host_kit.refhost import outbox
from opencrm_horscompte.host_kit.refhost.app import create_app
from opencrm_horscompte.host_kit.refhost.host import HostConfig, ReferenceHost
from opencrm_horscompte.host_kit.refhost.scheduler import TaskScheduler
from opencrm_horscompte.host_kit.refhost.seed import ADMIN_EMAIL, CITIZEN_EMAIL, seed


def load_or_create_secrets(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "secrets.json"
    if path.exists():
        return json.loads(path.read_text("utf-8"))
    values = {
        "secret_keys": [secrets.token_hex(32)],
        "citizen_password": secrets.token_urlsafe(12),
        "admin_password": secrets.token_urlsafe(12),
    }
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2)
    return values


def build_host(data_dir: Path, port: int) -> tuple[ReferenceHost, dict[str, Any]]:
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
    )
    host = ReferenceHost(config)
    seed(host, stored["citizen_password"], stored["admin_password"])
    return host, stored


def run_demo(port: int = 8765, data_dir: Path = Path("demo-data")) -> None:
    host, stored = build_host(data_dir, port)
    smtp_url = os.environ.get("HORSCOMPTE_SMTP_URL")
    transport = outbox.transport_from_url(smtp_url, data_dir / "outbox")
    worker = outbox.OutboxWorker(
        host.engine, transport, sender=host.config.mail_sender, now=host.now
    )
    worker.start()
    scheduler = TaskScheduler(host)
    scheduler.start()
    database = host.engine.url.render_as_string(hide_password=True)
    print(
        f"Open CRM (hôte de référence) avec le module Accès sans compte : http://127.0.0.1:{port}/\n"
        f"  base de données : {database}\n"
        f"  courriels       : {smtp_url or (data_dir / 'outbox').resolve()}\n"
        f"  usager          : {CITIZEN_EMAIL} / {stored['citizen_password']}\n"
        f"  administrateur  : {ADMIN_EMAIL} / {stored['admin_password']}\n"
        f"  (identifiants conservés dans {(data_dir / 'secrets.json').resolve()})\n"
        "Ctrl+C pour arrêter.",
        flush=True,
    )
    try:
        run_simple("127.0.0.1", port, create_app(host), threaded=True)
    finally:
        scheduler.stop()
        worker.stop()
