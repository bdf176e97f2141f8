"""Host worker processes for ``test_lookup_concurrency`` (spawned: importable, picklable).

Each process builds its own reference host on the shared PostgreSQL database, with a clock
pinned to the test's moment (the challenge was made on the test clock, not real time), then
submits validation codes from several threads released together by a barrier shared with
the other processes.
"""

from __future__ import annotations

import threading
import traceback
from datetime import datetime
from typing import Any

from conftest import TEST_SECRET_KEYS
from processes import HANG_GUARD_SECONDS

# Every thread of every process waits at the barrier: spawned processes may take long to
# start on a loaded machine, so the barrier waits as long as the hang guard.
BARRIER_TIMEOUT = HANG_GUARD_SECONDS


def submit_codes(
    database_url: str,
    moment: str,
    jobs: list[tuple[int, str]],
    submissions: int,
    barrier: Any,
    results: Any,
) -> None:
    """Submit each job's code (``(challenge id, typed code)``) ``submissions`` times, all in
    threads waiting on ``barrier``. Put ``("ok", [(challenge id, outcome kind), ...])`` or
    ``("error", traceback)`` on ``results``."""
    try:
        from opencrm_horscompte.host_kit.refhost.host import HostConfig, ReferenceHost
        from opencrm_horscompte.lookup.validation import verify

        now = datetime.fromisoformat(moment)
        config = HostConfig(
            database_url=database_url, secret_keys=TEST_SECRET_KEYS, clock=lambda: now
        )
        host = ReferenceHost(config)
        kinds: list[tuple[int, str]] = []
        errors: list[str] = []
        lock = threading.Lock()

        def submit(challenge_id: int, code: str) -> None:
            try:
                barrier.wait(BARRIER_TIMEOUT)
                kind = verify(host, challenge_id, code).kind
                with lock:
                    kinds.append((challenge_id, kind))
            except BaseException:
                with lock:
                    errors.append(traceback.format_exc())

        threads = [
            threading.Thread(target=submit, args=job) for job in jobs for _ in range(submissions)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(HANG_GUARD_SECONDS)
        host.engine.dispose()
        if errors or any(thread.is_alive() for thread in threads):
            results.put(("error", "\n".join(errors) or "a submitting thread hung"))
        else:
            results.put(("ok", kinds))
    except BaseException:
        barrier.abort()  # the other processes fail fast instead of waiting for this one
        results.put(("error", traceback.format_exc()))
