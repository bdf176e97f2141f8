"""Waiting for worker processes in tests without racing a clock.

A test waits for every process's *result*, however long a loaded machine takes. The only
time limit is :data:`HANG_GUARD_SECONDS`, far above any normal run, so a real hang still ends
the test. A process that exits without reporting fails the test at once, with its exit code.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Sequence
from typing import Any

HANG_GUARD_SECONDS = float(os.environ.get("HORSCOMPTE_TEST_HANG_GUARD", "1800"))


def collect(
    results: Any,
    processes: Sequence[Any],
    until: Callable[[list[Any]], bool],
    received: list[Any] | None = None,
) -> list[Any]:
    """Take items from the multiprocessing queue ``results`` into ``received`` until
    ``until(received)``. Fails when every process has exited and the queue is drained without
    it (a process died before reporting), or after the hang guard."""
    received = [] if received is None else received
    guard = time.monotonic() + HANG_GUARD_SECONDS
    while not until(received):
        try:
            received.append(results.get(timeout=1.0))
            continue
        except queue.Empty:
            pass
        if all(not process.is_alive() for process in processes):
            # an exited process has flushed what it put: drain it, then decide
            while True:
                try:
                    received.append(results.get(timeout=1.0))
                except queue.Empty:
                    break
            if not until(received):
                codes = {getattr(p, "name", "?"): p.exitcode for p in processes}
                raise AssertionError(f"processes exited without reporting; exit codes {codes}")
            break
        if time.monotonic() > guard:
            raise AssertionError(f"hang guard: no result after {HANG_GUARD_SECONDS} s")
    return received
