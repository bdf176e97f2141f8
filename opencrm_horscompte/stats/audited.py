"""Counters derived from audit events the plugin already emits (no second call site)."""

from __future__ import annotations

from sqlmodel import Session

from opencrm_horscompte.base.db import DriverConnection
from opencrm_horscompte.base.limits import THROTTLE_REFUSED
from opencrm_horscompte.hookspecs.horscompte import AuditEvent
from opencrm_horscompte.stats.counters import count

# Audit kind -> the metric it bumps. ``throttle.refused`` is emitted on the first refusal
# of each limit's window: the metric counts limits reached, not every refused request.
COUNTED_KINDS = {THROTTLE_REFUSED: "throttle_refusals"}


def count_audit_event(session: Session | DriverConnection, event: AuditEvent) -> None:
    metric = COUNTED_KINDS.get(event.kind)
    if metric is not None:
        count(session, event.at, **{metric: 1})
