"""``opencrm-horscompte serve``: the reference host under gunicorn, with N web processes and
one background process (``opencrm-horscompte worker``) for mail and scheduled tasks.

The master process migrates and seeds the database once, starts the background process
(and starts it again whenever it dies: mail must not stop for good because it crashed),
then runs gunicorn (``gthread`` workers: a few threads each, so a slow client does not hold
a whole process). Each web worker builds its own host after the fork (no connection crosses
a fork). SIGTERM or SIGINT to the master: gunicorn stops accepting, lets in-flight requests
finish (``graceful_timeout``), then the background process is stopped the same way (the mail
it claimed is handed back).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from opencrm_horscompte.host_kit.refhost.app import create_app
from opencrm_horscompte.host_kit.refhost.demo import build_host
from opencrm_horscompte.host_kit.refhost.environment import host_config, mail_transport
from opencrm_horscompte.host_kit.refhost.host import ReferenceHost

GRACEFUL_SECONDS = 30
THREADS_PER_WORKER = 4
RESTART_FIRST_DELAY = 1.0
RESTART_MAX_DELAY = 60.0

log = logging.getLogger(__name__)


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
    """``worker`` for this process's data: it stops once this process is gone (``serve``
    killed with SIGKILL can't stop it; its gunicorn workers stop alike)."""
    return [
        sys.executable,
        "-m",
        "opencrm_horscompte.cli",
        "worker",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--parent-pid",
        str(os.getpid()),
    ]


class Supervised:
    """A background process started again whenever it exits before :meth:`stop`, after a
    wait that doubles from 1 s to a minute (back to 1 s once it has run a minute), each
    restart logged as an error."""

    def __init__(self, command: list[str]) -> None:
        self._command = command
        self._owner = os.getpid()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.process = self._start()
        self.restarts = 0
        self._watcher = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self._watcher.start()

    def _start(self) -> subprocess.Popen[bytes]:
        # A session of its own: Ctrl+C or a hangup in the terminal reaches the master only,
        # which stops the process itself once gunicorn is done (it was restarted meanwhile).
        return subprocess.Popen(self._command, start_new_session=True)

    def _watch(self) -> None:
        delay = RESTART_FIRST_DELAY
        while True:
            started = time.monotonic()
            code = self.process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= RESTART_MAX_DELAY:
                delay = RESTART_FIRST_DELAY
            log.error("the background worker exited (code %s): started again in %s s", code, delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.process = self._start()
                self.restarts += 1
            delay = min(delay * 2, RESTART_MAX_DELAY)

    def stop(self, timeout: float) -> None:
        """SIGTERM (the mail it claimed is handed back), then SIGKILL after ``timeout``.
        Only in the process that started it: a gunicorn worker is a fork of the master that
        leaves through the master's own ``finally`` blocks."""
        if os.getpid() != self._owner:
            return
        with self._lock:
            self._stopping.set()
            process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._watcher.join(timeout)


def run_serve(
    workers: int, port: int, data_dir: Path, bind_host: str = "127.0.0.1", with_worker: bool = True
) -> int:
    mail_transport(data_dir)  # a bad mail URL stops the start here, not in the worker
    host, _ = build_host(data_dir, port)  # migrations and seed, once, before any fork
    host.engine.dispose()
    background = Supervised(worker_command(data_dir, port)) if with_worker else None
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
            background.stop(timeout=GRACEFUL_SECONDS + 30)
    return 0
