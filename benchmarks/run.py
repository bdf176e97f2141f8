"""Benchmark of the hors-compte plugin against baselines measured beside it, in one run.

Usage: ``python benchmarks/run.py [--quick] [--pg-url URL] [--rss-budget SECONDS]
[--only PHASE[,PHASE...]]``

``--only`` runs the named phases alone (``deposit``, ``lookup``, ``http``...: the names the
progress lines print), for a developer iterating on one path; the JSON then holds only
their figures.

Prints progress on stderr, a human summary on stdout, then ONE JSON object on the last line
of stdout. It reports figures; it never asserts the targets (the summary shows them).
Everything it creates lives in a temporary directory and a temporary PostgreSQL database,
both removed at the end, also on error.

How a figure is measured (and why it survives a busy machine)
=============================================================

* Every operation is timed twice: wall clock (``perf_counter``) and the CPU time of the
  thread running it (``thread_time``, user + system). Other processes on a shared machine
  stretch the wall clock, not this thread's CPU time: **targets are judged on CPU-time
  ratios**; wall ratios are printed beside them.
* The plugin's operation and its baseline run **interleaved in one loop**, in a shuffled
  order per iteration, each on fresh input prepared outside the timing.
* Each figure is measured in **3 runs** (each its own loop); the figure is the median of the
  3 per-run ratios (each a ratio of per-run medians), printed with the spread (min-max).
* Beside each figure: the 1-minute load average and the cores every process of the machine
  kept busy while its phase ran, and apart from them the cores the hypervisor gave to other
  virtual machines meanwhile (steal) (``/proc/stat``).

Figures
=======

``codegen_us``
    CPU microseconds per tracking code of the default policy (``meta.codegen.policy``)
    through ``generate_tracking_code``.

``deposit_tx_overhead`` / ``deposit_ms_added`` / ``deposit_overhead``
    Two reference hosts on two SQLite files (WAL), the plugin enabled on one and disabled
    on the other. Each iteration creates a draft on each (not timed), then times
    ``refhost.dossiers.deposit`` on each, given the draft as the host's HTTP handler gives
    it: the whole deposit call, so the work plugins do in ``opencrm_deposit_prepare``
    before the host opens its transaction counts too. ``deposit_tx_overhead`` is the
    CPU ratio with / without the plugin, ``deposit_ms_added`` the CPU milliseconds the
    plugin adds per deposit. ``deposit_overhead`` (kept from earlier versions) also
    counts the plugin-free draft transaction, which dilutes it.

``deposit_lock_hold_vs_raw`` / ``lookup_lock_hold_vs_raw``
    Time inside the write transaction (SQLite's one write lock for the whole host): from
    ``BEGIN IMMEDIATE`` done to ``COMMIT`` done, per deposit and per lookup, over the raw
    ``sqlite3`` driver running the same data statements with the same parameters in its
    own ``BEGIN IMMEDIATE`` .. ``COMMIT`` (CPU ratio; the wall ratio is beside it).

``deposit_lock_hold_overhead``
    The same time inside the deposit's write transaction, with / without the plugin (the
    two hosts of ``deposit_tx_overhead``): what the plugin adds to the host's own lock
    hold, its preparation before the transaction left out (it holds no lock).

``lookup_vs_raw`` / ``verify_vs_raw`` / ``lookup_page_vs_raw``
    The lookup handler (``lookup.read_input``, then the page's writer transaction:
    settings, ``start_lookup``), the verify handler (``validation.verify`` with the right
    code) and the whole lookup page (``lookup.pages.lookup``: the same plus the page
    render and the signed carrier), against the raw driver replaying the statements the
    handler sent (captured once with SQLAlchemy's ``before_cursor_execute``). Each raw
    lookup replay gets **fresh HMAC keys** (throttle counters, failure guard) and another
    dossier's address, as each real lookup gets a fresh dossier and client. Each raw
    verify replay spends **a fresh challenge**, issued just before (not timed) by a lookup
    as the handler's is, instead of reviving one captured challenge, whose rows stayed hot
    in the raw connection's page cache. Every lookup is a real match, every verify is
    granted and every raw verify replay spends its challenge (``meta`` counts them).

``lookup_statements`` / ``verify_statements``
    Data statements each handler sends to the driver (transaction control apart).

``lookup_scaling`` / ``deposit_scaling``
    The same lookup and deposit on a file where **every table** the lookup and the deposit
    touch holds 10^6 rows (``--quick``: 5,000) over one where they hold 1,000: dossiers,
    tracking codes, outbox, challenges, throttle counters, failure guards, audit events.
    Generated rows have random keys and codes; targets are drawn at random among them.
    The rows are counted in the files after growing them (``meta.scaling.rows``).

``lookup_after_10k_wrong_same_email``
    10,000 (``--quick``: 200) lookups with one dossier's address and wrong codes are made
    first (on the big file); then a further wrong lookup with that address, over a wrong
    lookup with an address never seen.

``http_lookup_cpu_vs_bare``
    Server CPU of the lookup through the reference host's Flask app (WSGI calls, the
    bodies read to the end; session, CSRF, dispatch, handler, render): its POST and the GET
    of the code entry page the POST redirects to (post/redirect/get), over a trivial POST
    to the same app (same session cookie and CSRF check, a view returning a short text).
    ``http_lookup_post_cpu_vs_bare``: the POST alone, over the same trivial POST.

``pg_speedup_4_workers`` / ``pg_errors`` / ``pg_codes_equal_dossiers``
    Deposits per second with 4 worker processes over 1, on a fresh PostgreSQL database,
    with the workers' own CPU cores busy and the machine's beside it (on 2 cores the
    speedup measures the scheduler as much as the plugin). ``pg_errors`` counts failed
    deposits; ``pg_codes_equal_dossiers`` says every deposited dossier got exactly one
    tracking code (tracking codes = deposited dossiers).

``rss_growth_mb_per_1e4_after_warmup``
    Resident memory (``VmRSS``) of one process depositing on SQLite, after a warm-up of
    2,000 deposits (``--quick``: 200): least-squares slope over the samples, per 10^4
    deposits, taken over each third of the deposits: the median of the 3, with their spread
    (the slope over all of them is in the JSON too). It runs in its own process beside the
    untimed table growth (the load beside it covers that process's life).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import benchlib
from benchlib import progress
from phase_deposit import bench_deposit
from phase_http import bench_http
from phase_lookup import bench_lookup, make_base
from phase_memory import MemoryPhase
from phase_postgresql import bench_postgresql, check_postgresql
from phase_scaling import bench_scaling, bench_wrong_lookups
from phase_scripts import bench_branches, bench_stats_page
from phase_unit_costs import bench_codegen, bench_driver_speed
from report import TARGETS, machine, summary
from sizes import FULL, QUICK

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


PHASES = (
    "codegen",
    "deposit",
    "driver_speed",
    "grow_small",
    "grow_big",
    "rss",
    "lookup",
    "scaling",
    "wrong",
    "http",
    "postgresql",
    "stats_page",
    "branches",
)
# the phases that build the files another phase reads
NEEDS = {
    "lookup": {"grow_small"},
    "http": {"grow_small"},
    "scaling": {"grow_small", "grow_big"},
    "wrong": {"grow_big"},
}


def chosen_phases(only: str | None) -> set[str]:
    """Every phase, or those of ``--only`` and the phases they need."""
    if not only:
        return set(PHASES)
    names = {name.strip() for name in only.split(",") if name.strip()}
    unknown = names - set(PHASES)
    if unknown or not names:
        known = ", ".join(PHASES)
        raise SystemExit(f"--only: unknown phase {sorted(unknown)}; the phases: {known}")
    for name in list(names):
        names |= NEEDS.get(name, set())
    return names


def run(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    sizes = QUICK if args.quick else FULL
    budget = args.rss_budget if args.rss_budget is not None else sizes.rss_budget
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    memory = MemoryPhase(sizes, workdir, budget)
    meta: dict[str, Any] = {"quick": args.quick, "machine": machine(), "sizes": asdict(sizes)}
    meta["machine"]["loadavg_at_start"] = os.getloadavg()
    figures: dict[str, dict[str, Any]] = {}
    chosen = chosen_phases(args.only)

    try:
        if args.quick and "rss" in chosen:
            memory.start()  # beside the whole run: --quick figures are not meaningful anyway
        meta["machine"]["postgresql"] = check_postgresql(args.pg_url)

        def phase(name: str, function: Callable[[], dict[str, Any]]) -> None:
            if name not in chosen:
                return
            progress(f"{name}...")
            # What earlier phases left on the heap is not the plugin's: collected and frozen
            # here, it doesn't make the cyclic collector's passes longer in this one.
            gc.collect()
            gc.freeze()
            phase_started = time.perf_counter()
            result = function()
            seconds[name] = time.perf_counter() - phase_started
            figures.update(result.pop("figures", {}))
            meta[name] = result

        phase("codegen", lambda: bench_codegen(sizes))
        phase("deposit", lambda: bench_deposit(sizes, workdir))
        phase("driver_speed", lambda: bench_driver_speed(sizes, workdir))
        if chosen & {"grow_small", "grow_big"}:
            base = make_base(workdir)
            small, big = workdir / "lookup-small.sqlite3", workdir / "lookup-big.sqlite3"
            shutil.copyfile(base, small)
            shutil.copyfile(base, big)
            phase(
                "grow_small",
                lambda: {"rows": benchlib.grow_tables(str(small), sizes.small_rows, "small")},
            )
            # Full run: the memory process deposits beside the (untimed) table growth, and
            # is waited for before the timed phases.
            if "rss" in chosen:
                memory.start()
            phase(
                "grow_big",
                lambda: {"rows": benchlib.grow_tables(str(big), sizes.big_rows, "big")},
            )
            if not args.quick:
                phase("rss", memory.result)
            # Growing the big file leaves about a gigabyte of dirty pages: written back
            # now, the kernel's writeback doesn't compete with the timed phases.
            progress("writing the grown files back to disk...")
            os.sync()
            phase("lookup", lambda: bench_lookup(sizes, small))
            phase("scaling", lambda: bench_scaling(sizes, small, big))
            phase("wrong", lambda: bench_wrong_lookups(sizes, big))
            phase("http", lambda: bench_http(sizes, small))
        phase("postgresql", lambda: bench_postgresql(sizes, args.pg_url))
        phase("stats_page", lambda: bench_stats_page(args.quick, workdir))
        phase("branches", lambda: bench_branches(args.quick))
        if "rss" not in meta:
            phase("rss", memory.result)
    finally:
        memory.stop()
    meta["machine"]["loadavg_at_end"] = os.getloadavg()
    seconds["total"] = time.perf_counter() - started
    meta["seconds"] = seconds
    meta["rss_budget_seconds"] = budget
    meta["targets"] = {key: list(target) for key, target in TARGETS.items() if target}
    meta["figures"] = figures
    ordered = {key: figures[key] for key in TARGETS if key in figures}
    return ordered, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the test suite)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL server (admin URL)")
    parser.add_argument(
        "--rss-budget",
        type=float,
        default=None,
        help="seconds the memory phase may deposit after its warm-up (0: no limit)",
    )
    parser.add_argument(
        "--only",
        metavar="PHASE[,PHASE...]",
        help=f"run these phases alone (and what they need): {', '.join(PHASES)}",
    )
    args = parser.parse_args(argv)

    def terminated(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    benchlib.start_clock()
    workdir = Path(tempfile.mkdtemp(prefix="horscompte-bench-"))
    try:
        figures, meta = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(summary(figures, meta))
    values = {key: figure["value"] for key, figure in figures.items()}
    print(json.dumps({**values, "meta": meta}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
