"""Runs the host's own periodic tasks and every enabled plugin's ``opencrm_scheduled_tasks``
in a background thread."""

from __future__ import annotations

import logging
import threading
import time

from opencrm_horscompte.hookspecs.host import Host, ScheduledTask
from opencrm_horscompte.host_kit.refhost.host import ReferenceHost
from opencrm_horscompte.host_kit.refhost.sessions import purge_expired_sessions


def _purge_sessions(host: Host) -> int:
    assert isinstance(host, ReferenceHost)
    return purge_expired_sessions(host)


HOST_TASKS = [ScheduledTask("host.sessions.purge", 3600, _purge_sessions)]

log = logging.getLogger(__name__)


class TaskScheduler(threading.Thread):
    """Calls each task about every ``every_seconds``; a failing task is logged and retried
    at its next turn, never stopping the others."""

    def __init__(self, host: ReferenceHost, tick_seconds: float = 30.0) -> None:
        super().__init__(name="task-scheduler", daemon=True)
        self.host = host
        self.tick_seconds = tick_seconds
        self._last_run: dict[str, float] = {}
        self._stopping = threading.Event()

    def run_due(self) -> list[str]:
        """Run the tasks whose interval has passed; returns their names."""
        ran = []
        for tasks in [HOST_TASKS, *self.host.hook.opencrm_scheduled_tasks(host=self.host)]:
            for task in tasks or ():
                last = self._last_run.get(task.name)
                if last is not None and time.monotonic() - last < task.every_seconds:
                    continue
                self._last_run[task.name] = time.monotonic()
                try:
                    result = task.run(self.host)
                    log.info("scheduled task %s: %s", task.name, result)
                except Exception:
                    log.exception("scheduled task %s failed", task.name)
                ran.append(task.name)
        return ran

    def run(self) -> None:
        while not self._stopping.is_set():
            self.run_due()
            self._stopping.wait(self.tick_seconds)

    def stop(self) -> None:
        self._stopping.set()
