"""Figures measured by the other benchmark scripts (``stats_page.py``, ``branch_cpu.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import benchlib
from figures import exact_figure


def bench_stats_page(quick: bool, workdir: Path) -> dict[str, Any]:
    """The statistics page (issue 13) over 10^6 counted events (2,000 with ``--quick``):
    the page per day, timed through the reference host's app (``stats_page.measure``)."""
    from stats_page import measure

    events = 2_000 if quick else 1_000_000
    load = benchlib.MachineLoad()
    result = measure(f"sqlite:///{workdir / 'stats.sqlite3'}", events)
    page_ms = result["page_day_ms"]  # the median of the script's repeated requests
    figure = exact_figure(page_ms, load.done())
    return {"figures": {"stats_page_ms_1e6_events": figure}, **result}


def bench_branches(quick: bool) -> dict[str, Any]:
    """CPU time of the two branches of the lookup (match / miss) and of the identity step in
    discreet mode (account / none): issue 8, finding 4 (``branch_cpu.measure``)."""
    from branch_cpu import measure

    load = benchlib.MachineLoad()
    result = measure(20 if quick else 200)
    done = load.done()
    figures = {
        key: exact_figure(result[key], done)
        for key in ("lookup_branch_cpu_ratio", "identity_branch_cpu_ratio")
    }
    return {"figures": figures, "rounds": result["rounds"]}
