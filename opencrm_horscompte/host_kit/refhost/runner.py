"""Background work of the reference host, in one process of its own (``opencrm-horscompte
worker``), never in the web workers: the mail outbox and the scheduled tasks.

Mail delivery is safe with any number of such processes (claims use ``SKIP LOCKED`` and
tokens). The scheduled tasks run in the process holding a database lock
(:class:`SingletonLock`: a PostgreSQL session advisory lock), so two worker processes never
both run them. SIGTERM or SIGINT: the mail being sent finishes, the rest of its batch is
handed back, and the process exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import zlib
from collections.abc import Callable
from types import FrameType
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from opencrm_horscompte.host_kit.refhost import outbox
from opencrm_horscompte.host_kit.refhost.host import ReferenceHost
from opencrm_horscompte.host_kit.refhost.scheduler import TaskScheduler

log = logging.getLogger(__name__)
SCHEDULER_LOCK = "opencrm-refhost-scheduler"


class SingletonLock:
    """A lock one process holds for as long as it lives (on PostgreSQL, a session advisory
    lock on a connection kept open; the server frees it when the process dies). On SQLite,
    a single-machine database, the one worker process of a data dir always holds it."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.key = zlib.crc32(name.encode())
        self._connection: Connection | None = None

    def acquire(self) -> bool:
        """True when this process holds the lock (now or already)."""
        if self.engine.dialect.name != "postgresql":
            return True
        if self._connection is not None:
            try:
                self._connection.exec_driver_sql("SELECT 1")
                return True
            except Exception:  # the backend went away: so did the lock
                self.release()
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key})
            if got.scalar_one():
                self._connection = connection
                return True
        except Exception:
            log.exception("scheduler lock: database error")
        connection.close()
        return False

    def release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # the lock lives as long as the session:
                self._connection.invalidate()  # close it for real, not back to the pool
                self._connection.close()
            self._connection = None


class LockedScheduler(TaskScheduler):
    """A :class:`TaskScheduler` that runs tasks only while it holds the scheduler lock."""

    def __init__(self, host: ReferenceHost, tick_seconds: float = 30.0) -> None:
        super().__init__(host, tick_seconds)
        self.lock = SingletonLock(host.engine, SCHEDULER_LOCK)

    def run_due(self) -> list[str]:
        if not self.lock.acquire():
            return []
        return super().run_due()

    def stop(self) -> None:
        super().stop()
        self.lock.release()


def run_worker(
    host: ReferenceHost,
    transport: outbox.Transport,
    *,
    interval: float = 1.0,
    ready: Callable[[], None] | None = None,
    parent_pid: int | None = None,
) -> None:
    """Deliver mail and run the scheduled tasks until SIGTERM or SIGINT, or until
    ``parent_pid`` is no longer this process's parent (it died: the process was adopted)."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("worker: signal %s, stopping", signum)
        stopping.set()

    previous: dict[int, Any] = {
        number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)
    }
    worker = outbox.OutboxWorker(
        host.engine, transport, sender=host.config.mail_sender, now=host.now, interval=interval
    )
    scheduler = LockedScheduler(host)
    worker.start()
    scheduler.start()
    if ready is not None:
        ready()
    try:
        while not stopping.wait(0.5):
            if not worker.is_alive():
                raise RuntimeError("the outbox worker thread died")
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("worker: its parent process %s is gone, stopping", parent_pid)
                break
    finally:
        scheduler.stop()
        worker.stop(timeout=outbox.SEND_DEADLINE + 10)
        for number, handler in previous.items():
            signal.signal(number, handler)
