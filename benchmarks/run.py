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
  kept busy while its phase ran (``/proc/stat``).

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
    Server CPU of the lookup POST through the reference host's Flask app (WSGI call, the
    body read to the end; session, CSRF, dispatch, handler, render) over a trivial POST to
    the same app (same session cookie and CSRF check, a view returning a short text).

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
import itertools
import json
import multiprocessing
import os
import platform
import queue
import random
import secrets
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Operation, Sample, interleaved, median_sample, progress
from sqlalchemy import text

from opencrm_horscompte.base.db import make_engine
from opencrm_horscompte.base.paths import LOOKUP_PATH
from opencrm_horscompte.hookspecs.host import Request
from opencrm_horscompte.host_kit.refhost.dossiers import create_draft, deposit
from opencrm_horscompte.lookup import pages as lookup_pages
from opencrm_horscompte.lookup.validation import verify
from opencrm_horscompte.settings.schema import Settings
from opencrm_horscompte.tracking.codes import (
    CodePolicy,
    format_tracking_code,
    generate_tracking_code,
)

DEFAULT_POLICY = CodePolicy.from_settings(Settings.defaults())
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
RUNS = 3
TARGETS: dict[str, tuple[str, Any] | None] = {
    "deposit_tx_overhead": ("<=", 1.25),
    "deposit_ms_added": None,
    "deposit_overhead": None,
    "deposit_lock_hold_vs_raw": None,
    "deposit_lock_hold_overhead": None,
    "lookup_vs_raw": ("<=", 2.0),
    "verify_vs_raw": ("<=", 2.0),
    "lookup_page_vs_raw": None,
    "lookup_lock_hold_vs_raw": ("<=", 1.5),
    "lookup_statements": ("<=", 5),
    "verify_statements": ("<=", 3),
    "lookup_scaling": ("<=", 1.1),
    "deposit_scaling": None,
    "lookup_after_10k_wrong_same_email": ("<=", 1.1),
    "http_lookup_cpu_vs_bare": ("<=", 3.0),
    "rss_growth_mb_per_1e4_after_warmup": ("<=", 1.0),
    "pg_speedup_4_workers": None,
    "pg_errors": ("==", 0),
    "pg_codes_equal_dossiers": ("==", True),
    "codegen_us": None,
    "stats_page_ms_1e6_events": None,
    "lookup_branch_cpu_ratio": ("~", (0.9, 1.1)),
    "identity_branch_cpu_ratio": ("~", (0.9, 1.1)),
}


@dataclass(frozen=True)
class Sizes:
    codegen_count: int
    deposit_iterations: int
    lookup_iterations: int
    small_rows: int
    big_rows: int
    scaling_iterations: int
    wrong_lookups: int
    wrong_iterations: int
    http_iterations: int
    pg_repeats: int
    pg_deposits_per_worker: int
    pg_warmup: int
    rss_deposits: int
    rss_warmup: int
    rss_budget: float


FULL = Sizes(
    codegen_count=3_000,
    deposit_iterations=120,
    lookup_iterations=100,
    small_rows=1_000,
    big_rows=1_000_000,
    scaling_iterations=80,
    wrong_lookups=10_000,
    wrong_iterations=40,
    http_iterations=120,
    pg_repeats=3,
    pg_deposits_per_worker=300,
    pg_warmup=20,
    rss_deposits=40_000,
    rss_warmup=2_000,
    rss_budget=150.0,
)
QUICK = Sizes(
    codegen_count=200,
    deposit_iterations=6,
    lookup_iterations=6,
    small_rows=1_000,
    big_rows=5_000,
    scaling_iterations=5,
    wrong_lookups=200,
    wrong_iterations=4,
    http_iterations=6,
    pg_repeats=1,
    pg_deposits_per_worker=20,
    pg_warmup=3,
    rss_deposits=1_000,
    rss_warmup=200,
    rss_budget=0.0,
)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# --------------------------------------------------------------------------- figures


def repeated(
    label: str, one_run: Callable[[], dict[str, list[Sample]]]
) -> tuple[list[dict[str, list[Sample]]], dict[str, Any]]:
    """``one_run`` done ``RUNS`` times with its progress line, and the machine's load over
    the whole (the ``load`` every figure of the phase carries)."""
    load = benchlib.MachineLoad()
    per_run = []
    for run in range(RUNS):
        progress(f"{label}: run {run + 1} of {RUNS}")
        per_run.append(one_run())
    return per_run, load.done()


def paired(
    per_run: Sequence[dict[str, list[Sample]]], numerator: str, denominator: str
) -> list[tuple[list[Sample], list[Sample]]]:
    """The two operations' samples, run by run, for ``ratio_figure``/``difference_figure``."""
    return [(run[numerator], run[denominator]) for run in per_run]


def spread(cpu: list[float], wall: list[float]) -> dict[str, Any]:
    """Median and spread of per-run values, CPU (the judged value) and wall."""
    return {
        "value": median(cpu),
        "min": min(cpu),
        "max": max(cpu),
        "runs": cpu,
        "wall": median(wall),
        "wall_min": min(wall),
        "wall_max": max(wall),
    }


def ratio_figure(
    runs: Sequence[tuple[Sequence[Sample], Sequence[Sample]]], load: dict[str, Any]
) -> dict[str, Any]:
    """Median (and spread) of the per-run ratios of medians, CPU and wall."""
    cpu, wall, top, bottom = [], [], [], []
    for numerator, denominator in runs:
        up, down = median_sample(numerator), median_sample(denominator)
        cpu.append(up.cpu / down.cpu)
        wall.append(up.wall / down.wall)
        top.append(up)
        bottom.append(down)
    return {
        **spread(cpu, wall),
        "numerator_ms": {
            "cpu": median([s.cpu for s in top]) * 1e3,
            "wall": median([s.wall for s in top]) * 1e3,
        },
        "denominator_ms": {
            "cpu": median([s.cpu for s in bottom]) * 1e3,
            "wall": median([s.wall for s in bottom]) * 1e3,
        },
        "samples_per_run": len(runs[0][0]) if runs else 0,
        "load": load,
    }


def difference_figure(
    runs: Sequence[tuple[Sequence[Sample], Sequence[Sample]]], load: dict[str, Any]
) -> dict[str, Any]:
    """Median (and spread) of the per-run differences of medians, in CPU milliseconds."""
    cpu = [(median_sample(a).cpu - median_sample(b).cpu) * 1e3 for a, b in runs]
    wall = [(median_sample(a).wall - median_sample(b).wall) * 1e3 for a, b in runs]
    return {**spread(cpu, wall), "load": load}


def exact_figure(value: Any, load: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"value": value, "min": value, "max": value, "runs": [value], "load": load}


# --------------------------------------------------------------------------- code generation


def bench_stats_page(quick: bool, workdir: Path) -> dict[str, Any]:
    """The statistics page (issue 13) over 10^6 counted events (2,000 with ``--quick``):
    the page per day, timed through the reference host's app (``stats_page.measure``)."""
    from stats_page import measure

    events = 2_000 if quick else 1_000_000
    load = benchlib.MachineLoad()
    result = measure(f"sqlite:///{workdir / 'stats.sqlite3'}", events)
    page_ms = result["page_day_ms"]  # the median of the script's repeated requests
    figure = {"value": page_ms, "min": page_ms, "max": page_ms, "runs": [page_ms]}
    figure["load"] = load.done()
    return {"figures": {"stats_page_ms_1e6_events": figure}, **result}


def bench_branches(quick: bool) -> dict[str, Any]:
    """CPU time of the two branches of the lookup (match / miss) and of the identity step in
    discreet mode (account / none): issue 8, finding 4 (``branch_cpu.measure``)."""
    from branch_cpu import measure

    load = benchlib.MachineLoad()
    result = measure(20 if quick else 200)
    figures = {}
    for key in ("lookup_branch_cpu_ratio", "identity_branch_cpu_ratio"):
        value = result[key]
        figures[key] = {"value": value, "min": value, "max": value, "runs": [value]}
    done = load.done()
    for figure in figures.values():
        figure["load"] = done
    return {"figures": figures, "rounds": result["rounds"]}


def bench_codegen(sizes: Sizes) -> dict[str, Any]:
    policy = DEFAULT_POLICY
    for _ in range(50):
        generate_tracking_code(policy)
    load = benchlib.MachineLoad()
    per_code = []
    for _ in range(RUNS):
        started = time.thread_time_ns()
        for _ in range(sizes.codegen_count):
            generate_tracking_code(policy)
        per_code.append((time.thread_time_ns() - started) / 1e3 / sizes.codegen_count)
    figure = {
        "value": median(per_code),
        "min": min(per_code),
        "max": max(per_code),
        "runs": per_code,
        "load": load.done(),
    }
    return {"figures": {"codegen_us": figure}, "policy": asdict(policy)}


# --------------------------------------------------------------------------- deposit


class LockProbe:
    """Per-operation reading of a :class:`benchlib.LockClock`: ``mark()`` at the end of the
    preparation, ``take()`` after the operation."""

    def __init__(self, clock: benchlib.LockClock) -> None:
        self.clock = clock
        self.mark_at = Sample(0.0, 0.0)
        self.samples: list[Sample] = []

    def mark(self) -> None:
        self.mark_at = self.clock.reading()

    def take(self, _sample: Sample, _result: Any) -> None:
        now = self.clock.reading()
        self.samples.append(Sample(now.wall - self.mark_at.wall, now.cpu - self.mark_at.cpu))


def random_code(policy: CodePolicy, rng: random.Random) -> str:
    return "".join(rng.choices(policy.alphabet, k=policy.length))


def bench_deposit(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    on = benchlib.build_host(sqlite_url(workdir / "deposit-on.sqlite3"), seed_data=True)
    off = benchlib.build_host(sqlite_url(workdir / "deposit-off.sqlite3"), seed_data=True)
    off.set_enabled("horscompte", False, actor="benchmark")
    demarches = {id(on): benchlib.the_demarche(on), id(off): benchlib.the_demarche(off)}
    counter = itertools.count()
    raw = benchlib.raw_sqlite(str(workdir / "deposit-on.sqlite3"))
    rng = random.Random(11)

    def draft(host: Any) -> Any:
        return create_draft(
            host, demarches[id(host)], benchlib.identity(f"dep-{next(counter)}"), None
        )

    try:
        for host in (on, off):
            host.disabled_names()
            for _ in range(5):
                made = draft(host)
                deposit(host, made.draft_key, benchlib.ANSWERS, made)
        statements: dict[str, Any] = {}
        for name, host in (("enabled", on), ("disabled", off)):
            made = draft(host)
            with benchlib.recording(host.engine) as recorder:
                deposited = deposit(host, made.draft_key, benchlib.ANSWERS, made)
            statements[name] = {
                "data": len(recorder.data),
                "control": len(recorder.control),
                "sql": recorder.summary(),
            }
            if name == "enabled":
                captured, captured_dossier = recorder.data, deposited
        (captured_code,) = raw.execute(
            "SELECT code FROM horscompte_tracking_code WHERE dossier_id = ?",
            (captured_dossier.id,),
        ).fetchone()
        policy = DEFAULT_POLICY

        def one_run(
            on_clock: benchlib.LockClock, off_clock: benchlib.LockClock
        ) -> dict[str, list[Sample]]:
            probes = {"on": LockProbe(on_clock), "off": LockProbe(off_clock)}
            raw_hold = benchlib.LockClock()
            raw_holds: list[Sample] = []
            drafts: dict[str, list[Sample]] = {"on": [], "off": []}

            def prepare_deposit(host: Any, key: str) -> Callable[[int], tuple[Any, ...]]:
                def prepare(_index: int) -> tuple[Any, ...]:
                    sample, made = benchlib.measured(draft, host)
                    drafts[key].append(sample)
                    probes[key].mark()
                    return (host, made.draft_key, benchlib.ANSWERS, made)

                return prepare

            def prepare_raw(_index: int) -> tuple[Any, ...]:
                made = draft(on)
                mapping = {
                    captured_dossier.draft_key: made.draft_key,
                    captured_dossier.id: made.id,
                    captured_code: random_code(policy, rng),
                }
                return (raw, benchlib.substituted(captured, mapping), raw_hold)

            def raw_after(_sample: Sample, _result: Any) -> None:
                raw_holds.append(raw_hold.reading())

            samples = interleaved(
                [
                    Operation("on", deposit, prepare_deposit(on, "on"), probes["on"].take),
                    Operation("off", deposit, prepare_deposit(off, "off"), probes["off"].take),
                    Operation("raw", benchlib.replay, prepare_raw, raw_after),
                ],
                sizes.deposit_iterations,
                rng,
            )
            holds = [raw_holds[0]] + [
                Sample(b.wall - a.wall, b.cpu - a.cpu) for a, b in itertools.pairwise(raw_holds)
            ]
            return {
                **samples,
                "on_hold": probes["on"].samples,
                "off_hold": probes["off"].samples,
                "raw_hold": holds,
                **{f"draft_{k}": v for k, v in drafts.items()},
            }

        with benchlib.lock_clocks(on.engine, off.engine) as (on_clock, off_clock):
            per_run, load_done = repeated("deposit", lambda: one_run(on_clock, off_clock))
        codes = raw.execute("SELECT COUNT(*) FROM horscompte_tracking_code").fetchone()[0]
    finally:
        raw.close()
        on.engine.dispose()
        off.engine.dispose()

    def with_draft(run: dict[str, Any], key: str) -> list[Sample]:
        return [
            Sample(a.wall + b.wall, a.cpu + b.cpu)
            for a, b in zip(run[f"draft_{key}"], run[key], strict=True)
        ]

    figures = {
        "deposit_tx_overhead": ratio_figure(paired(per_run, "on", "off"), load_done),
        "deposit_ms_added": difference_figure(paired(per_run, "on", "off"), load_done),
        "deposit_overhead": ratio_figure(
            [(with_draft(r, "on"), with_draft(r, "off")) for r in per_run], load_done
        ),
        "deposit_lock_hold_vs_raw": ratio_figure(paired(per_run, "on_hold", "raw_hold"), load_done),
        "deposit_lock_hold_overhead": ratio_figure(
            paired(per_run, "on_hold", "off_hold"), load_done
        ),
    }
    return {
        "figures": figures,
        "deposit_vs_raw_replay": ratio_figure(paired(per_run, "on", "raw"), load_done),
        "statements_enabled": statements["enabled"],
        "statements_disabled": statements["disabled"],
        "tracking_codes_issued": codes,
    }


# --------------------------------------------------------------------------- driver speed


def bench_driver_speed(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """One fixed statement (the settings version read), inside one write transaction, three
    ways: a cached Core statement through SQLAlchemy, the same through
    :class:`opencrm_horscompte.base.db.DriverStatement`, and the raw ``sqlite3`` cursor.
    Not a target: it says what running at driver speed buys, per statement."""
    from opencrm_horscompte.base.db import DriverStatement, writer
    from opencrm_horscompte.settings.store import _VERSION

    host = benchlib.build_host(sqlite_url(workdir / "driver.sqlite3"), seed_data=True)
    driver = DriverStatement(_VERSION)
    sql = "SELECT token FROM horscompte_settings_version WHERE id = ?"
    rng = random.Random(3)

    def core(connection: Any) -> Any:
        return connection.execute(_VERSION).scalar()

    def fast(connection: Any) -> Any:
        cursor = driver.execute(connection)
        try:
            return cursor.fetchone()
        finally:
            cursor.close()

    def raw(connection: Any) -> Any:
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            return cursor.execute(sql, (1,)).fetchone()
        finally:
            cursor.close()

    def one_run() -> dict[str, list[Sample]]:
        with writer(host.engine).begin() as connection:
            return interleaved(
                [
                    Operation("core", core, lambda _i: (connection,)),
                    Operation("driver_statement", fast, lambda _i: (connection,)),
                    Operation("raw", raw, lambda _i: (connection,)),
                ],
                sizes.codegen_count,
                rng,
            )

    try:
        per_run, load_done = repeated("driver speed", one_run)
    finally:
        host.engine.dispose()
    return {
        "statement": sql,
        "core_vs_raw": ratio_figure(paired(per_run, "core", "raw"), load_done),
        "driver_statement_vs_raw": ratio_figure(
            paired(per_run, "driver_statement", "raw"), load_done
        ),
    }


# --------------------------------------------------------------------------- lookup and verify


@dataclass(frozen=True)
class Target:
    dossier_id: int
    email: str
    code: str


def client_address(index: int) -> str:
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


_clients = itertools.count(1)


def fresh_client() -> str:
    return client_address(next(_clients))


def lookup_request(target: Target, client: str, code: str | None = None) -> Request:
    form = {
        "email": target.email,
        "tracking_code": format_tracking_code(code or target.code),
        "csrf_token": "benchmark",
    }
    return Request(
        method="POST",
        path=LOOKUP_PATH,
        form=form,
        client_addr=client,
        session={},
        locale="fr",
        csrf_token="benchmark",
    )


def make_base(workdir: Path) -> Path:
    """A seeded host file with a few real deposits, one matching lookup, one missing
    lookup and one wrong verify, so every table has a real row to copy."""
    path = workdir / "lookup-base.sqlite3"
    host = benchlib.build_host(sqlite_url(path), seed_data=True)
    demarche = benchlib.the_demarche(host)
    dossiers = [benchlib.deposit_one(host, demarche, f"lookup-{index}") for index in range(5)]
    raw = benchlib.raw_sqlite(str(path))
    email, code = raw.execute(
        "SELECT email, code FROM horscompte_tracking_code WHERE dossier_id = ?", (dossiers[0].id,)
    ).fetchone()
    challenge = benchlib.lookup_handler(host, email, format_tracking_code(code), "192.0.2.9")
    benchlib.lookup_handler(host, "nobody@exemple.fr", format_tracking_code(code), "192.0.2.9")
    verify(host, challenge, "0" * 6)
    raw.close()
    host.engine.dispose()
    return path


def targets_of(path: Path, count: int, rng: random.Random) -> list[Target]:
    return [Target(*row) for row in benchlib.random_bulk_targets(str(path), count, rng)]


def cycle(targets: list[Target]) -> Callable[[], Target]:
    iterator = itertools.cycle(targets)
    return lambda: next(iterator)


def capture(host: Any, raw: sqlite3.Connection, target: Target) -> dict[str, Any]:
    """One real lookup and one right-code verify, with their statements recorded."""
    host.disabled_names()  # refresh the host's plugin-state cache: not in the recording
    with benchlib.recording(host.engine) as lookup_recorder:
        challenge_id = benchlib.lookup_handler(
            host, target.email, format_tracking_code(target.code), "192.0.2.1"
        )
    code = benchlib.last_code(raw, target.email)
    host.disabled_names()
    with benchlib.recording(host.engine) as verify_recorder:
        outcome = verify(host, challenge_id, code)
    return {
        "challenge_id": challenge_id,
        "lookup": lookup_recorder,
        "verify": verify_recorder,
        "verify_outcome": outcome.kind,
    }


def bench_lookup(sizes: Sizes, small_path: Path) -> dict[str, Any]:
    host = benchlib.build_host(sqlite_url(small_path))
    raw = benchlib.raw_sqlite(str(small_path))
    rng = random.Random(5)
    needed = 3 * RUNS * sizes.lookup_iterations + 20
    targets = targets_of(small_path, needed, rng)
    next_target = cycle(targets)
    try:
        for _ in range(5):
            target = next_target()
            benchlib.lookup_handler(
                host, target.email, format_tracking_code(target.code), fresh_client()
            )
        capture_target = next_target()
        captured = capture(host, raw, capture_target)
        lookup_statements = captured["lookup"].data
        verify_statements = captured["verify"].data
        hex_keys = benchlib.hex_keys(lookup_statements)
        captured_id = captured["challenge_id"]
        if benchlib.occurrences(verify_statements, captured_id) < 2:
            raise RuntimeError("the verify statements no longer name their challenge")
        raw_verified: list[bool] = []

        outcomes: dict[str, int] = {}
        challenges: list[int] = []
        matched: list[bool] = []

        def one_run(clock: benchlib.LockClock) -> dict[str, list[Sample]]:
            probe = LockProbe(clock)
            raw_hold = benchlib.LockClock()
            raw_holds: list[Sample] = []

            def prepare_lookup(_index: int) -> tuple[Any, ...]:
                target = next_target()
                probe.mark()
                return (host, target.email, format_tracking_code(target.code), fresh_client())

            def after_lookup(sample: Sample, challenge_id: int) -> None:
                probe.take(sample, challenge_id)
                challenges.append(challenge_id)
                # Checked now: a later lookup of the same target (the targets cycle)
                # replaces its guard's live challenge.
                row = raw.execute(
                    "SELECT dossier_id FROM horscompte_challenge WHERE id = ?", (challenge_id,)
                ).fetchone()
                matched.append(row is not None and row[0] is not None)

            def prepare_raw(_index: int) -> tuple[Any, ...]:
                target = next_target()
                mapping: dict[Any, Any] = benchlib.fresh_hex_mapping(hex_keys)
                mapping[capture_target.email] = target.email
                return (raw, benchlib.substituted(lookup_statements, mapping), raw_hold)

            def after_raw(_sample: Sample, _result: Any) -> None:
                raw_holds.append(raw_hold.reading())

            def prepare_page(_index: int) -> tuple[Any, ...]:
                return (host, lookup_request(next_target(), fresh_client()))

            def prepare_verify(_index: int) -> tuple[Any, ...]:
                target = next_target()
                challenge_id = benchlib.lookup_handler(
                    host, target.email, format_tracking_code(target.code), fresh_client()
                )
                return (host, challenge_id, benchlib.last_code(raw, target.email))

            def after_verify(_sample: Sample, outcome: Any) -> None:
                outcomes[outcome.kind] = outcomes.get(outcome.kind, 0) + 1

            def prepare_raw_verify(_index: int) -> tuple[Any, ...]:
                # A fresh challenge, issued by a lookup as the handler's is: the replay
                # spends a row it has never touched, as the handler does.
                target = next_target()
                challenge_id = benchlib.lookup_handler(
                    host, target.email, format_tracking_code(target.code), fresh_client()
                )
                mapping = {captured_id: challenge_id}
                return (raw, benchlib.substituted(verify_statements, mapping))

            def after_raw_verify(_sample: Sample, results: list[list[Any]]) -> None:
                raw_verified.append(bool(results[0]) and bool(results[1]))

            samples = interleaved(
                [
                    Operation("lookup", benchlib.lookup_handler, prepare_lookup, after_lookup),
                    Operation("raw", benchlib.replay, prepare_raw, after_raw),
                    Operation("page", lookup_pages.lookup, prepare_page),
                    Operation("verify", verify, prepare_verify, after_verify),
                    Operation("raw_verify", benchlib.replay, prepare_raw_verify, after_raw_verify),
                ],
                sizes.lookup_iterations,
                rng,
            )
            holds = [raw_holds[0]] + [
                Sample(b.wall - a.wall, b.cpu - a.cpu) for a, b in itertools.pairwise(raw_holds)
            ]
            return {**samples, "lookup_hold": probe.samples, "raw_hold": holds}

        with benchlib.lock_clock(host.engine) as clock:
            per_run, load_done = repeated("lookup and verify", lambda: one_run(clock))
        matching = sum(matched)
    finally:
        raw.close()
        host.engine.dispose()

    figures = {
        "lookup_vs_raw": ratio_figure(paired(per_run, "lookup", "raw"), load_done),
        "verify_vs_raw": ratio_figure(paired(per_run, "verify", "raw_verify"), load_done),
        "lookup_page_vs_raw": ratio_figure(paired(per_run, "page", "raw"), load_done),
        "lookup_lock_hold_vs_raw": ratio_figure(
            paired(per_run, "lookup_hold", "raw_hold"), load_done
        ),
        "lookup_statements": exact_figure(len(lookup_statements)),
        "verify_statements": exact_figure(len(verify_statements)),
    }
    return {
        "figures": figures,
        "lookups_measured": len(challenges),
        "lookups_matching": matching,
        "verify_outcomes": outcomes,
        "verifies_measured": RUNS * sizes.lookup_iterations,
        "capture_verify_outcome": captured["verify_outcome"],
        "raw_verify_replay_took_attempt": bool(raw_verified) and all(raw_verified),
        "raw_verifies_spent": sum(raw_verified),
        "raw_lookup_fresh_keys_per_replay": len(hex_keys),
        "lookup_transaction_control": len(captured["lookup"].control),
        "verify_transaction_control": len(captured["verify"].control),
        "lookup_sql": captured["lookup"].summary(),
        "verify_sql": captured["verify"].summary(),
    }


# --------------------------------------------------------------------------- scaling


def query_plan(path: Path, statement: str, parameters: Any) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        return [row[-1] for row in rows]
    finally:
        connection.close()


def bench_scaling(sizes: Sizes, small_path: Path, big_path: Path) -> dict[str, Any]:
    rows = {
        "small": benchlib.count_rows(str(small_path)),
        "big": benchlib.count_rows(str(big_path)),
    }
    small = benchlib.build_host(sqlite_url(small_path))
    big = benchlib.build_host(sqlite_url(big_path))
    rng = random.Random(7)
    count = RUNS * sizes.scaling_iterations + 10
    next_target = {
        "small": cycle(targets_of(small_path, count, rng)),
        "big": cycle(targets_of(big_path, count, rng)),
    }
    hosts = {"small": small, "big": big}
    demarches = {name: benchlib.the_demarche(host) for name, host in hosts.items()}
    counter = itertools.count()
    try:
        for name, host in hosts.items():
            for _ in range(5):
                target = next_target[name]()
                benchlib.lookup_handler(
                    host, target.email, format_tracking_code(target.code), fresh_client()
                )
                benchlib.deposit_one(host, demarches[name], f"scale-warm-{next(counter)}")
        with benchlib.recording(big.engine) as recorder:
            target = next_target["big"]()
            benchlib.lookup_handler(
                big, target.email, format_tracking_code(target.code), fresh_client()
            )
        candidates = next(
            (r for r in recorder.data if "FROM horscompte_tracking_code" in r.statement), None
        )
        plans = [
            query_plan(big_path, r.statement, r.parameters)
            for r in recorder.data
            if r.statement.lstrip().upper().startswith(("SELECT", "UPDATE"))
        ]

        def prepare_lookup(name: str) -> Callable[[int], tuple[Any, ...]]:
            def prepare(_index: int) -> tuple[Any, ...]:
                target = next_target[name]()
                client = fresh_client()
                return (hosts[name], target.email, format_tracking_code(target.code), client)

            return prepare

        def prepare_deposit(name: str) -> Callable[[int], tuple[Any, ...]]:
            def prepare(_index: int) -> tuple[Any, ...]:
                identity = benchlib.identity(f"scale-{next(counter)}")
                made = create_draft(hosts[name], demarches[name], identity, None)
                return (hosts[name], made.draft_key, benchlib.ANSWERS, made)

            return prepare

        operations = [
            Operation("lookup_small", benchlib.lookup_handler, prepare_lookup("small")),
            Operation("lookup_big", benchlib.lookup_handler, prepare_lookup("big")),
            Operation("deposit_small", deposit, prepare_deposit("small")),
            Operation("deposit_big", deposit, prepare_deposit("big")),
        ]
        per_run, load_done = repeated(
            "scaling", lambda: interleaved(operations, sizes.scaling_iterations, rng)
        )
    finally:
        small.engine.dispose()
        big.engine.dispose()
    figures = {
        "lookup_scaling": ratio_figure(paired(per_run, "lookup_big", "lookup_small"), load_done),
        "deposit_scaling": ratio_figure(paired(per_run, "deposit_big", "deposit_small"), load_done),
    }
    return {
        "figures": figures,
        "rows": rows,
        "candidates_query_plan": (
            query_plan(big_path, candidates.statement, candidates.parameters) if candidates else []
        ),
        "lookup_query_plans": plans,
    }


def bench_wrong_lookups(sizes: Sizes, big_path: Path) -> dict[str, Any]:
    host = benchlib.build_host(sqlite_url(big_path))
    rng = random.Random(13)
    owner = targets_of(big_path, 1, rng)[0]
    policy = DEFAULT_POLICY

    def wrong(email: str) -> tuple[Any, ...]:
        return (host, email, format_tracking_code(random_code(policy, rng)), fresh_client())

    try:
        progress(f"wrong lookups: {sizes.wrong_lookups:,} with {owner.email}")
        for index in range(sizes.wrong_lookups):
            benchlib.lookup_handler(*wrong(owner.email))
            if (index + 1) % 2_000 == 0:
                progress(f"wrong lookups: {index + 1:,} of {sizes.wrong_lookups:,}")
        with sqlite3.connect(big_path) as connection:
            challenges = connection.execute("SELECT COUNT(*) FROM horscompte_challenge").fetchone()
        operations = [
            Operation("same", benchlib.lookup_handler, lambda _i: wrong(owner.email)),
            Operation(
                "fresh",
                benchlib.lookup_handler,
                lambda _i: wrong(f"inconnu-{secrets.token_hex(6)}@exemple.fr"),
            ),
        ]
        per_run, load_done = repeated(
            "wrong lookups", lambda: interleaved(operations, sizes.wrong_iterations, rng)
        )
    finally:
        host.engine.dispose()
    figure = ratio_figure(paired(per_run, "same", "fresh"), load_done)
    return {
        "figures": {"lookup_after_10k_wrong_same_email": figure},
        "wrong_lookups_before": sizes.wrong_lookups,
        "challenges_after": challenges[0],
    }


# --------------------------------------------------------------------------- HTTP


def bench_http(sizes: Sizes, small_path: Path) -> dict[str, Any]:
    import flask
    from werkzeug.test import EnvironBuilder

    from opencrm_horscompte.host_kit.refhost.app import create_app

    host = benchlib.build_host(sqlite_url(small_path))
    app = create_app(host)

    @app.post("/benchmark/bare")
    def bare() -> flask.Response:
        flask.request.form.get("email", "")
        return flask.Response("ok", content_type="text/plain; charset=utf-8")

    client = app.test_client()
    with client.session_transaction() as session:
        session["csrf"] = "benchmark-csrf-token"
    cookie = client.get_cookie("session")
    assert cookie is not None
    rng = random.Random(17)
    next_target = cycle(targets_of(small_path, RUNS * sizes.http_iterations + 10, rng))
    statuses: dict[str, dict[int, int]] = {"lookup": {}, "bare": {}}

    def environ(path: str) -> dict[str, Any]:
        target = next_target()
        builder = EnvironBuilder(
            path=path,
            method="POST",
            data={
                "email": target.email,
                "tracking_code": format_tracking_code(target.code),
                "csrf_token": "benchmark-csrf-token",
            },
            headers=[("Cookie", f"session={cookie.value}")],
            environ_base={"REMOTE_ADDR": fresh_client()},
        )
        try:
            return builder.get_environ()
        finally:
            builder.close()

    def call(name: str, env: dict[str, Any]) -> int:
        status: list[str] = []

        def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(line)
            return lambda data: None

        body = app(env, start_response)
        try:
            b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close:
                close()
        code = int(status[0].split()[0])
        statuses[name][code] = statuses[name].get(code, 0) + 1
        return code

    try:
        for _ in range(5):
            call("lookup", environ(LOOKUP_PATH))
            call("bare", environ("/benchmark/bare"))
        statuses = {"lookup": {}, "bare": {}}
        operations = [
            Operation("lookup", call, lambda _i: ("lookup", environ(LOOKUP_PATH))),
            Operation("bare", call, lambda _i: ("bare", environ("/benchmark/bare"))),
        ]
        per_run, load_done = repeated(
            "http", lambda: interleaved(operations, sizes.http_iterations, rng)
        )
    finally:
        host.engine.dispose()
    figure = ratio_figure(paired(per_run, "lookup", "bare"), load_done)
    return {"figures": {"http_lookup_cpu_vs_bare": figure}, "statuses": statuses}


# --------------------------------------------------------------------------- PostgreSQL


def check_postgresql(pg_url: str) -> str:
    """The server's version; fails at once (not after the long phases) when unreachable."""
    admin = make_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar_one())
    except Exception as error:
        raise SystemExit(f"PostgreSQL unreachable at {pg_url}: {error}") from error
    finally:
        admin.dispose()


def bench_postgresql(sizes: Sizes, pg_url: str) -> dict[str, Any]:
    admin = make_engine(pg_url, isolation_level="AUTOCOMMIT")
    name = f"horscompte_bench_{secrets.token_hex(6)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        host = benchlib.build_host(url, seed_data=True)
        with host.engine.connect() as connection:
            server_version = connection.execute(text("SHOW server_version")).scalar_one()
        host.engine.dispose()
        pool = benchlib.WorkerPool(multiprocessing.get_context("spawn"), url, 4, sizes.pg_warmup)
        runs: dict[int, list[dict[str, Any]]] = {1: [], 4: []}
        load = benchlib.MachineLoad()
        try:
            progress("postgresql: starting 4 worker processes")
            pool.start()
            for repeat in range(sizes.pg_repeats):
                for workers in (1, 4) if repeat % 2 == 0 else (4, 1):
                    progress(
                        f"postgresql: repeat {repeat + 1} of {sizes.pg_repeats}, {workers} "
                        f"process(es) x {sizes.pg_deposits_per_worker} deposits"
                    )
                    runs[workers].append(pool.run(workers, sizes.pg_deposits_per_worker))
        finally:
            pool.close()
        load_done = load.done()
        engine = make_engine(url)
        with engine.connect() as connection:
            total, distinct, per_dossier = connection.execute(
                text(
                    "SELECT COUNT(*), COUNT(DISTINCT code), COUNT(DISTINCT dossier_id) "
                    "FROM horscompte_tracking_code"
                )
            ).one()
            dossiers = connection.execute(
                text("SELECT COUNT(*) FROM host_dossier WHERE status = 'deposited'")
            ).scalar_one()
        engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    speedups = [four["rate"] / one["rate"] for one, four in zip(runs[1], runs[4], strict=True)]
    errors = [error for results in runs.values() for run in results for error in run["errors"]]
    kept = (
        "deposited",
        "seconds",
        "rate",
        "client_cpu_ms_per_deposit",
        "client_cores_busy",
        "machine_cores_busy",
    )
    busy = {
        str(workers): {
            "client_cores_busy": median([run["client_cores_busy"] for run in results]),
            "machine_cores_busy": median([run["machine_cores_busy"] for run in results]),
        }
        for workers, results in runs.items()
    }
    speedup = {
        "value": median(speedups),
        "min": min(speedups),
        "max": max(speedups),
        "runs": speedups,
        "cores_busy": busy,
        "load": load_done,
    }
    return {
        "figures": {
            "pg_speedup_4_workers": speedup,
            "pg_errors": exact_figure(len(errors), load_done),
            "pg_codes_equal_dossiers": exact_figure(
                bool(total == dossiers == distinct == per_dossier), load_done
            ),
        },
        "deposits_per_second": {
            str(w): median([run["rate"] for run in results]) for w, results in runs.items()
        },
        "runs": {
            str(workers): [{key: run[key] for key in kept} for run in results]
            for workers, results in runs.items()
        },
        "tracking_codes": int(total),
        "distinct_codes": int(distinct),
        "deposited_dossiers": int(dossiers),
        "first_errors": errors[:3],
        "server_version": server_version,
    }


# --------------------------------------------------------------------------- memory


def slope_per_1e4(points: Sequence[tuple[int, float]]) -> float | None:
    """Least-squares growth of ``(deposits, MB)`` samples, in MB per 10^4 deposits."""
    xs = [n for n, _ in points]
    if len(set(xs)) < 2:
        return None
    return statistics.linear_regression(xs, [mb for _, mb in points]).slope * 1e4


class MemoryPhase:
    """The resident-memory measurement, in a process of its own started early."""

    def __init__(self, sizes: Sizes, workdir: Path, budget: float) -> None:
        self.sizes = sizes
        self.budget = budget
        context = multiprocessing.get_context("spawn")
        self.results = context.Queue()
        self.process = context.Process(
            target=benchlib.rss_child,
            args=(
                sqlite_url(workdir / "memory.sqlite3"),
                sizes.rss_deposits,
                sizes.rss_warmup,
                budget,
                self.results,
            ),
            name="rss-child",
        )
        self.load: benchlib.MachineLoad | None = None  # set when the process starts

    def start(self) -> benchlib.MachineLoad:
        if self.load is None:
            progress(
                f"memory: {self.sizes.rss_warmup:,} + {self.sizes.rss_deposits:,} deposits in "
                f"a process of their own (budget {self.budget:.0f} s, 0 = none)"
            )
            self.process.start()
            self.load = benchlib.MachineLoad()
        return self.load

    def result(self) -> dict[str, Any]:
        load = self.start()
        report = None
        while report is None:
            try:
                report = self.results.get(timeout=1)
            except queue.Empty:
                if not self.process.is_alive():
                    try:
                        report = self.results.get(timeout=2)
                    except queue.Empty:
                        raise RuntimeError(
                            f"the memory process died (exit code {self.process.exitcode})"
                        ) from None
        load_done = load.done()
        self.process.join(timeout=30)
        if report["error"]:
            raise RuntimeError("memory process failed:\n" + report["error"])
        points = [(n, kb / 1024) for n, kb in report["samples"]]
        done = report["deposits"]
        thirds = [
            slope_per_1e4(
                [(n, mb) for n, mb in points if third * done <= 3 * n <= (third + 1) * done]
            )
            for third in range(3)
        ]
        whole = slope_per_1e4(points) or 0.0
        by_third = [value for value in thirds if value is not None] or [whole]
        growth = {
            "value": median(by_third),
            "min": min(by_third),
            "max": max(by_third),
            "runs": by_third,
            "whole_run_slope": whole,
            "end_minus_start_per_1e4": (
                (report["end_kb"] - report["start_kb"]) / 1024 * 1e4 / done if done else None
            ),
            "load": load_done,
        }
        return {
            "figures": {"rss_growth_mb_per_1e4_after_warmup": growth},
            "deposits_after_warmup": done,
            "warmup_deposits": self.sizes.rss_warmup,
            "start_mb": report["start_kb"] / 1024,
            "end_mb": report["end_kb"] / 1024,
            "peak_mb": report["peak_kb"] / 1024,
            "deposits_per_second": done / report["seconds"] if report["seconds"] else None,
            "samples_mb": [(n, round(mb, 2)) for n, mb in points],
        }

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
        self.results.close()


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    import psycopg
    import sqlalchemy

    cpu_model = None
    memory_mb = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_mb": memory_mb,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
    }


# --------------------------------------------------------------------------- report


def status(key: str, value: Any) -> str:
    target = TARGETS.get(key)
    if target is None:
        return ""
    operator, bound = target
    if operator == "~":  # within a range
        low, high = bound
        return f"{(low + high) / 2:g} +- {(high - low) / 2:g}: " + (
            "met" if low <= value <= high else "MISSED"
        )
    met = {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[operator]
    return f"{operator} {bound}: {'met' if met else 'MISSED'}"


def shown(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def load_shown(load: dict[str, Any] | None) -> str:
    if not load:
        return ""
    busy = load["machine_cores_busy"]
    cores = "too short to count" if busy is None else f"{busy:.1f}/{load['cpu_count']} busy"
    return f"{load['loadavg_1min_start']:.1f}, {cores}"


def summary(figures: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "",
        "opencrm-horscompte benchmark"
        + (" (--quick: tiny sizes, figures not meaningful)" if meta["quick"] else ""),
        f"machine: {meta['machine']['cpu_model']} x {meta['machine']['cpu_count']}, "
        f"Python {meta['machine']['python']}, SQLite {meta['machine']['sqlite']}, "
        f"PostgreSQL {meta['machine']['postgresql']}",
        "value = median of 3 interleaved runs of the CPU-time figure; spread = min-max of the "
        "3; wall = the same on the wall clock; load = 1-min load average at the phase's start "
        "and the cores the whole machine kept busy during it; memory: the growth over each "
        "third of the deposits in one process, in place of runs",
        "",
        f"{'figure':36} {'value':>9} {'spread':>17} {'wall':>8}  {'target':18} load",
    ]
    for key, figure in figures.items():
        value = figure["value"]
        span = (
            f"{shown(figure['min'])}-{shown(figure['max'])}"
            if figure["min"] != figure["max"]
            else ""
        )
        wall = shown(figure["wall"]) if "wall" in figure else ""
        lines.append(
            f"{key:36} {shown(value):>9} {span:>17} {wall:>8}  {status(key, value):18} "
            f"{load_shown(figure.get('load'))}"
        )
    if "postgresql" in meta:
        pg = meta["postgresql"]
        lines.append(
            "\npg cores busy (median of runs): "
            + ", ".join(
                f"{w} worker(s): client {v['client_cores_busy']:.2f}, machine "
                f"{v['machine_cores_busy']:.2f}"
                for w, v in figures["pg_speedup_4_workers"]["cores_busy"].items()
            )
            + f"; {pg['deposits_per_second']['4']:.0f} vs {pg['deposits_per_second']['1']:.0f} "
            "deposits/s"
        )
    if "driver_speed" in meta:
        speed = meta["driver_speed"]
        lines.append(
            "one fixed statement, CPU us: Core {:.1f}, DriverStatement {:.1f}, raw {:.1f}".format(
                speed["core_vs_raw"]["numerator_ms"]["cpu"] * 1e3,
                speed["driver_statement_vs_raw"]["numerator_ms"]["cpu"] * 1e3,
                speed["core_vs_raw"]["denominator_ms"]["cpu"] * 1e3,
            )
        )
    if "scaling" in meta:
        lines.append(f"rows per table (big file): {meta['scaling']['rows']['big']}")
    lines.append(f"total {meta['seconds']['total']:.0f} s")
    return "\n".join(lines)


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
