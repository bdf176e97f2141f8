"""``python -m wsgi_host`` (from the ``examples`` folder): serve the example host on
http://127.0.0.1:8000 with the standard library's WSGI server, a SQLite file, mail to a
local SMTP server (``python -m aiosmtpd -n -l 127.0.0.1:1025`` shows them)."""

from __future__ import annotations

import secrets
import threading
import time
from wsgiref.simple_server import make_server

from wsgi_host import ville
from wsgi_host.host import App, ExampleHost, deliver_mails


def main() -> None:
    host = ExampleHost(
        "sqlite:///example-host.sqlite3",
        secret_keys=[secrets.token_bytes(32)],
        extra_plugins=[(ville, ville.MANIFEST)],
    )
    host.set_enabled("horscompte", True)
    if host.find_account("admin@exemple.fr") is None:
        host.add_account("admin@exemple.fr", "admin", "Admin", role="admin")
        host.add_demarche("signalement", "Signaler un problème de voirie")

    def mail_worker() -> None:
        while True:
            deliver_mails(host, "127.0.0.1", 1025, "ne-pas-repondre@exemple.invalid")
            time.sleep(2)

    threading.Thread(target=mail_worker, daemon=True).start()
    with make_server("127.0.0.1", 8000, App(host)) as server:
        print("http://127.0.0.1:8000/  (admin@exemple.fr / admin)")
        server.serve_forever()


if __name__ == "__main__":
    main()
