"""Waiting for worker processes and threads in tests without racing a clock.

A test waits for every worker's *result*, however long a loaded machine takes. The only
time limit is :data:`HANG_GUARD_SECONDS`, far above any normal run, so a real hang still ends
the test. A process that exits without reporting fails the test at once, with its exit code;
a thread that raises fails it with the thread's traceback.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import traceback
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


def all_at_once(count: int, action: Callable[[], Any]) -> list[Any]:
    """Run ``action`` in ``count`` threads released together and return every result (in
    the order they finished); re-raise any worker's error with its traceback."""
    barrier = threading.Barrier(count, timeout=HANG_GUARD_SECONDS)
    results: list[Any] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            barrier.wait()
            result = action()
            with lock:
                results.append(result)
        except BaseException:
            with lock:
                errors.append(traceback.format_exc())

    # daemons: a thread the hang guard gave up on must not keep the test run from exiting
    threads = [threading.Thread(target=run, name=f"at-once-{n}", daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD_SECONDS)
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert not hung, f"hang guard: threads still running after {HANG_GUARD_SECONDS} s: {hung}"
    assert not errors, "\n".join(errors)
    assert len(results) == count
    return results
