"""The reference host runs the plugins' scheduled tasks (the hors-compte purge)."""

from __future__ import annotations

from typing import Any

from opencrm_horscompte.hookspecs.host import ScheduledTask, hookimpl
from opencrm_horscompte.host_kit.refhost.scheduler import TaskScheduler


class Flaky:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def opencrm_scheduled_tasks(self, host: Any) -> list[ScheduledTask]:
        def run(_: Any) -> None:
            self.calls += 1
            raise RuntimeError("boom")

        return [ScheduledTask("test.flaky", 3600, run)]


def test_due_tasks_run_once_per_interval_and_failures_do_not_stop_others(
    host_factory: Any,
) -> None:
    flaky = Flaky()
    host = host_factory(extra_plugins=[flaky])
    scheduler = TaskScheduler(host)
    assert set(scheduler.run_due()) == {"host.sessions.purge", "horscompte.purge", "test.flaky"}
    assert scheduler.run_due() == []  # not due again within the hour
    assert flaky.calls == 1


def test_the_host_purges_sessions_past_their_lifetime(host_factory: Any, clock: Any) -> None:
    from datetime import timedelta

    from sqlmodel import Session, select

    from opencrm_horscompte.host_kit.refhost.models import HostSession
    from opencrm_horscompte.host_kit.refhost.sessions import LIFETIME

    host = host_factory()
    with Session(host.engine) as session, session.begin():
        for key, age in (("old", LIFETIME + timedelta(seconds=1)), ("live", timedelta(0))):
            created = clock() - age
            session.add(HostSession(key=key, created_at=created, expires_at=created + LIFETIME))
    assert "host.sessions.purge" in TaskScheduler(host).run_due()
    with Session(host.engine) as session:
        assert list(session.exec(select(HostSession.key))) == ["live"]
