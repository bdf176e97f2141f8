"""``opencrm-horscompte demo``: the reference host with the plugin enabled, on 127.0.0.1.

Embedded defaults: a SQLite file and a Maildir outbox in the data dir; the environment
variables that change them are read, and checked, in :mod:`.environment`. The signing key
and the demo passwords are generated on first start and kept in ``DIR/secrets.json`` (mode
0600).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from werkzeug.serving import run_simple

from opencrm_horscompte.host_kit.refhost import outbox
from opencrm_horscompte.host_kit.refhost.app import create_app
from opencrm_horscompte.host_kit.refhost.environment import (
    SMTP_URL,
    ConfigError,
    host_config,
    load_or_create_secrets,
    mail_transport,
    trusted_proxies,
)
from opencrm_horscompte.host_kit.refhost.host import ReferenceHost
from opencrm_horscompte.host_kit.refhost.scheduler import TaskScheduler
from opencrm_horscompte.host_kit.refhost.seed import ADMIN_EMAIL, AGENT_EMAIL, CITIZEN_EMAIL, seed

# The configuration lives in .environment; its names stay importable from here (0.2).
__all__ = [
    "ConfigError",
    "build_host",
    "host_config",
    "load_or_create_secrets",
    "mail_transport",
    "run_demo",
    "trusted_proxies",
]


def build_host(data_dir: Path, port: int) -> tuple[ReferenceHost, dict[str, Any]]:
    config, stored = host_config(data_dir, port)
    host = ReferenceHost(config)
    stored.setdefault("agent_password", None)  # demo data made before agents existed
    seed(host, stored["citizen_password"], stored["admin_password"], stored["agent_password"])
    return host, stored


def run_demo(port: int = 8765, data_dir: Path = Path("demo-data")) -> None:
    transport = mail_transport(data_dir)
    host, stored = build_host(data_dir, port)
    smtp_url = os.environ.get(SMTP_URL)
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
