"""``opencrm-horscompte serve``: the reference host under gunicorn, with N web processes and
one background process (``opencrm-horscompte worker``) for mail and scheduled tasks.

The master process migrates and seeds the database once, starts the background process,
then runs gunicorn (``gthread`` workers: a few threads each, so a slow client does not hold
a whole process). Each web worker builds its own host after the fork (no connection crosses
a fork). SIGTERM or SIGINT to the master: gunicorn stops accepting, lets in-flight requests
finish (``graceful_timeout``), then the background process is stopped the same way (the mail
it claimed is handed back).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from opencrm_horscompte.host_kit.refhost.app import create_app
from opencrm_horscompte.host_kit.refhost.demo import build_host, host_config
from opencrm_horscompte.host_kit.refhost.host import ReferenceHost

GRACEFUL_SECONDS = 30
THREADS_PER_WORKER = 4


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, data_dir: Path, port: int, options: dict[str, Any]) -> None:
        self.data_dir = data_dir
        self.port = port
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        config, _ = host_config(self.data_dir, self.port)
        return create_app(ReferenceHost(config))


def worker_command(data_dir: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "opencrm_horscompte.cli",
        "worker",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
    ]


def run_serve(
    workers: int, port: int, data_dir: Path, bind_host: str = "127.0.0.1", with_worker: bool = True
) -> int:
    host, _ = build_host(data_dir, port)  # migrations and seed, once, before any fork
    host.engine.dispose()
    background = subprocess.Popen(worker_command(data_dir, port)) if with_worker else None
    options = {
        "bind": f"{bind_host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": THREADS_PER_WORKER,
        "graceful_timeout": GRACEFUL_SECONDS,
        "timeout": 60,
        "accesslog": os.environ.get("HORSCOMPTE_ACCESS_LOG") or None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "opencrm-horscompte",
    }
    try:
        _Gunicorn(data_dir, port, options).run()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0
    finally:
        if background is not None:
            if background.poll() is None:
                background.send_signal(signal.SIGTERM)
            try:
                background.wait(timeout=GRACEFUL_SECONDS + 30)
            except subprocess.TimeoutExpired:
                background.kill()
                background.wait()
    return 0
