"""The identity-step throttle is shared by host worker processes (counters in PostgreSQL)."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
from conftest import CITIZEN, TEST_SECRET_KEYS, post
from processes import HANG_GUARD_SECONDS

from opencrm_horscompte.base import limits
from opencrm_horscompte.base.paths import PROPOSAL_PATH

START = "/demarches/signalement-voirie/nouveau"
CLIENT_ADDRESS = "203.0.113.7"
CHECKS_PER_WORKER = 20


def proposals_seen(database_url: str, checks: int) -> int:
    """One host worker process: ``checks`` identity screens, each from a new browser session
    of the same client address; returns how many got the login proposal."""
    from opencrm_horscompte.host_kit.refhost.app import create_app
    from opencrm_horscompte.host_kit.refhost.host import HostConfig, ReferenceHost

    host = ReferenceHost(HostConfig(database_url=database_url, secret_keys=TEST_SECRET_KEYS))
    app = create_app(host)
    proposals = 0
    for _ in range(checks):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = CLIENT_ADDRESS
        client.get(START)
        identity_form = {"last_name": "Martin", "first_name": "Camille", "email": CITIZEN[0]}
        response = post(client, START, identity_form)
        proposals += response.headers.get("Location") == PROPOSAL_PATH  # not on to the form
    host.engine.dispose()
    return proposals


@pytest.mark.postgresql
@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_client_throttle_holds_across_two_worker_processes(
    database_url: str, host_factory: Any
) -> None:
    host_factory()  # tables, demo data, plugin enabled
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = [
            pool.apply_async(proposals_seen, (database_url, CHECKS_PER_WORKER)) for _ in range(2)
        ]
        # waits for both results, however slow the machine: the timeout is a hang guard only
        counts = [result.get(timeout=HANG_GUARD_SECONDS) for result in results]
    assert sum(counts) == limits.IDENTITY_CLIENT.limit  # 40 checks, exactly 30 proposals
    assert all(count > 0 for count in counts)  # both workers took part
