"""Benchmark of the hors-compte plugin against baselines measured beside it, in one run.

Usage: ``python benchmarks/run.py [--quick] [--pg-url URL] [--rss-budget SECONDS]``

Prints progress on stderr, a human summary on stdout, then ONE JSON object on the last line
of stdout. It reports figures; it never asserts the targets (the summary shows them).
Everything it creates lives in a temporary directory and a temporary PostgreSQL database,
both removed at the end, also on error. Times are medians over many timed repetitions.

Method, figure by figure
========================

``codegen_us``
    Microseconds per 16-character tracking code, ``codes.generate_tracking_code`` with every
    character class on (and ambiguous characters avoided, the default): median of repeats.

``deposit_overhead``
    A deposit through the reference host's pipeline, as its HTTP handler runs it:
    ``refhost.dossiers.create_draft`` then ``refhost.dossiers.deposit`` (one transaction,
    the plugins' ``opencrm_deposit`` inside), on a SQLite file in WAL mode (``db.make_engine``
    sets it; default ``synchronous``, so a commit syncs the WAL). The same host alternates
    rounds with the plugin enabled and disabled (``host.set_enabled``); the figure is the
    median enabled time over the median disabled time. ``meta`` also has the ratio of the
    deposit transaction alone and the statements of each.

``lookup_vs_raw`` / ``verify_vs_raw``
    The lookup handler's work (``lookup.read_input``, then in one writer session
    ``load_settings`` and ``lookup.start_lookup``: normalise, throttle, find, issue, queue the
    mail) and the verify handler's (``validation.verify`` with the right code). Baseline: the
    raw driver (the ``sqlite3`` module, on the same file, configured like the engine's
    connections) running the SAME statements with the SAME parameters. They are captured
    from one real call of each handler with SQLAlchemy's ``before_cursor_execute`` event
    (the parameters as the driver receives them), then replayed in one
    ``BEGIN IMMEDIATE`` .. ``COMMIT`` transaction per iteration, fetching every result. The
    lookup's statements replay as they are: its inserts use fresh autoincrement keys or
    upserts, so nothing collides (they are replayed for a dossier of their own, whose
    counters the replays may exhaust without touching the measured lookups). The verify
    consumes its challenge, so before each raw replay the captured challenge is reset
    (``consumed_at = NULL, attempts = 0``) in a transaction of its own, outside the timing;
    the replay then does the handler's work: it takes the attempt, consumes, clears the guard.
    Handler and raw iterations are interleaved in a shuffled order, each on its own dossier,
    its own client address and fresh challenge, so no limit is reached (every lookup is a
    real match, every verify is granted: ``meta`` counts them). A further pass, not in the
    figures, splits each handler's time into the driver's (``cursor.execute`` and commit)
    and the rest, Python (``meta.lookup.*_driver_split``; the deposit has one too).

``lookup_statements`` / ``verify_statements``
    Data statements each handler sends to the driver (a matching lookup, a right-code
    verify), counted by the same event; transaction control (SQLite's ``BEGIN IMMEDIATE``,
    savepoints) is left out and counted apart in ``meta``, with the statements' text.

``lookup_scaling``
    The lookup handler on a copy of the lookup database grown to 1,000,000 tracking codes
    (``--quick``: 20,000) over the same handler on the original 1,000. The extra rows are
    bulk-inserted into ``horscompte_tracking_code`` with the raw driver (``executemany``,
    one transaction), copies of a real row with their own random codes and addresses; the
    looked-up dossiers are real deposits present in both files. Lookups on both files are
    interleaved. ``meta`` has SQLite's query plan for the candidates' ``SELECT``.

``pg_speedup_4_workers`` / ``pg_duplicates``
    Deposits per second with 4 worker processes over 1 process, on a fresh PostgreSQL
    database. Each process builds its own host, deposits a few dossiers to warm up, then all
    are released together; the rate is the parent's clock from the release to the last
    report. Median rates over repeats (the order of the two alternates). Duplicates:
    ``COUNT(*) - COUNT(DISTINCT code)`` over every tracking code issued. ``meta`` has, per
    run, the workers' own CPU per deposit and the cores they and the whole machine kept busy
    (``/proc/stat``): a speedup capped by a saturated machine shows there.

``rss_growth_mb``
    Resident memory (``VmRSS``) of one process after a warm-up, then after 100,000 deposits
    (``--quick``: 2,000) on SQLite (WAL, ``synchronous=NORMAL``: durability is not what is
    measured). The full size cannot run in ten minutes at a few milliseconds a deposit, so
    the phase stops at ``--rss-budget`` seconds (default 330) and the growth measured is projected
    linearly to the full count (``meta.rss`` says so; ``--rss-budget 0`` runs every deposit).
    It runs in its own process, beside the untimed bulk insert (full run) or beside the whole
    run (``--quick``, where timings do not matter).
"""

from __future__ import annotations

import argparse
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import benchlib
from benchlib import progress
from sqlalchemy import text

from opencrm_horscompte.base.db import make_engine
from opencrm_horscompte.host_kit.refhost.dossiers import create_draft, deposit
from opencrm_horscompte.lookup.start import read_input, start_lookup
from opencrm_horscompte.lookup.validation import verify
from opencrm_horscompte.tracking.codes import (
    CodePolicy,
    format_tracking_code,
    generate_tracking_code,
)

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TARGETS = {
    "deposit_overhead": ("<=", 1.25),
    "lookup_vs_raw": ("<=", 3.0),
    "verify_vs_raw": ("<=", 3.0),
    "lookup_statements": ("<=", 6),
    "verify_statements": ("<=", 3),
    "lookup_scaling": ("<=", 1.3),
    "pg_speedup_4_workers": (">=", 1.5),
    "pg_duplicates": ("==", 0),
    "rss_growth_mb": ("<=", 20),
    "codegen_us": None,
}


@dataclass(frozen=True)
class Sizes:
    codegen_repeats: int
    codegen_count: int
    deposit_rounds: int
    deposits_per_round: int
    lookups: int
    small_dossiers: int
    big_dossiers: int
    pg_repeats: int
    pg_deposits_per_worker: int
    pg_warmup: int
    rss_deposits: int
    rss_warmup: int
    rss_budget: float


FULL = Sizes(
    codegen_repeats=9,
    codegen_count=3_000,
    deposit_rounds=10,
    deposits_per_round=60,
    lookups=400,
    small_dossiers=1_000,
    big_dossiers=1_000_000,
    pg_repeats=3,
    pg_deposits_per_worker=400,
    pg_warmup=20,
    rss_deposits=100_000,
    rss_warmup=300,
    rss_budget=330.0,
)
QUICK = Sizes(
    codegen_repeats=3,
    codegen_count=300,
    deposit_rounds=3,
    deposits_per_round=12,
    lookups=25,
    small_dossiers=1_000,
    big_dossiers=20_000,
    pg_repeats=1,
    pg_deposits_per_worker=30,
    pg_warmup=3,
    rss_deposits=2_000,
    rss_warmup=50,
    rss_budget=0.0,
)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timed(function: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    started = time.perf_counter_ns()
    result = function(*args)
    return (time.perf_counter_ns() - started) / 1e9, result


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# --------------------------------------------------------------------------- code generation


def bench_codegen(sizes: Sizes) -> dict[str, Any]:
    policy = CodePolicy(
        length=16, digits=True, uppercase=True, lowercase=True, special=True, avoid_ambiguous=True
    )
    for _ in range(50):
        generate_tracking_code(policy)
    per_code = []
    for _ in range(sizes.codegen_repeats):
        started = time.perf_counter_ns()
        for _ in range(sizes.codegen_count):
            generate_tracking_code(policy)
        per_code.append((time.perf_counter_ns() - started) / 1e3 / sizes.codegen_count)
    return {"codegen_us": median(per_code), "policy": asdict(policy), "per_repeat_us": per_code}


# --------------------------------------------------------------------------- deposit overhead


def bench_deposit_overhead(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    host = benchlib.build_host(sqlite_url(workdir / "deposit.sqlite3"), seed_data=True)
    demarche = benchlib.the_demarche(host)
    samples: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    statements: dict[bool, dict[str, Any]] = {}
    counter = 0
    try:
        for round_index in range(sizes.deposit_rounds):
            order = (True, False) if round_index % 2 == 0 else (False, True)
            for enabled in order:
                host.set_enabled("horscompte", enabled, actor="benchmark")
                host.disabled_names()
                for _ in range(3):  # warm-up after the switch, not timed
                    counter += 1
                    benchlib.deposit_one(host, demarche, f"dep-warm-{counter}")
                if enabled not in statements:
                    with benchlib.recording(host.engine) as recorder:
                        counter += 1
                        benchlib.deposit_one(host, demarche, f"dep-stmt-{counter}")
                    statements[enabled] = {
                        "data": len(recorder.data),
                        "control": len(recorder.control),
                        "sql": recorder.summary(),
                    }
                for _ in range(sizes.deposits_per_round):
                    counter += 1
                    draft_seconds, draft = timed(
                        create_draft, host, demarche, benchlib.identity(f"dep-{counter}"), None
                    )
                    deposit_seconds, _ = timed(deposit, host, draft.draft_key, benchlib.ANSWERS)
                    samples[enabled].append((draft_seconds, deposit_seconds))
            progress(f"deposit overhead: round {round_index + 1} of {sizes.deposit_rounds}")
        split: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for enabled in (True, False):
            host.set_enabled("horscompte", enabled, actor="benchmark")
            host.disabled_names()
            counter += 1
            benchlib.deposit_one(host, demarche, f"dep-warm-{counter}")
            with benchlib.driver_clock(host.engine) as clock:
                for _ in range(sizes.deposits_per_round):
                    counter += 1
                    before = clock.seconds
                    seconds, _ = timed(benchlib.deposit_one, host, demarche, f"dep-{counter}")
                    split[enabled].append((seconds, clock.seconds - before))
        with host.engine.connect() as connection:
            codes = connection.execute(
                text("SELECT COUNT(*) FROM horscompte_tracking_code")
            ).scalar_one()
    finally:
        host.engine.dispose()

    def medians(enabled: bool) -> dict[str, float]:
        rows = samples[enabled]
        return {
            "total_ms": median([(a + b) * 1e3 for a, b in rows]),
            "draft_ms": median([a * 1e3 for a, _ in rows]),
            "deposit_ms": median([b * 1e3 for _, b in rows]),
        }

    on, off = medians(True), medians(False)
    return {
        "deposit_overhead": on["total_ms"] / off["total_ms"],
        "deposit_transaction_overhead": on["deposit_ms"] / off["deposit_ms"],
        "enabled": on,
        "disabled": off,
        "samples_per_mode": len(samples[True]),
        "driver_split_enabled": benchlib.breakdown(split[True]),
        "driver_split_disabled": benchlib.breakdown(split[False]),
        "statements_enabled": statements[True],
        "statements_disabled": statements[False],
        "tracking_codes_issued": codes,
    }


# --------------------------------------------------------------------------- lookup and verify


@dataclass
class Target:
    dossier_id: int
    email: str
    code: str


def lookup_handler(host: Any, email: str, typed_code: str, client: str) -> int:
    """What the lookup page does with a POST, up to the challenge (the page is not rendered)."""
    typed = read_input(email, typed_code)
    return start_lookup(host, typed, client, "fr").challenge_id


def client_address(index: int) -> str:
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


def fill_tracking_codes(path: Path, total: int, label: str) -> int:
    """Bulk-insert copies of a real tracking-code row (own random code, address, dossier id)
    until ``horscompte_tracking_code`` holds ``total`` rows; return how many were added."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.row_factory = sqlite3.Row
    try:
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")
        template = dict(connection.execute("SELECT * FROM horscompte_tracking_code").fetchone())
        policy = CodePolicy(**json.loads(template["policy_json"]))
        alphabet, length = policy.alphabet, policy.length
        columns = list(template)
        sql = (
            f"INSERT OR IGNORE INTO horscompte_tracking_code ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})"
        )
        count = connection.execute("SELECT COUNT(*) FROM horscompte_tracking_code").fetchone()[0]
        start = count
        next_id = max(
            10_000_000,
            connection.execute("SELECT MAX(dossier_id) FROM horscompte_tracking_code").fetchone()[0]
            + 1,
        )
        rng = random.Random(total)
        chunk = 50_000
        last_shown = -1
        connection.execute("BEGIN")
        while count < total:
            rows = []
            for _ in range(min(chunk, total - count)):
                row = dict(template)
                email = f"usager{next_id}@bulk.exemple.fr"
                row.update(
                    dossier_id=next_id,
                    code="".join(rng.choices(alphabet, k=length)),
                    email=email,
                    email_key=email,
                )
                next_id += 1
                rows.append(tuple(row[column] for column in columns))
            connection.executemany(sql, rows)
            count = connection.execute("SELECT COUNT(*) FROM horscompte_tracking_code").fetchone()[
                0
            ]
            shown = int(100 * count / total) // 10 * 10
            if shown != last_shown:
                progress(f"populating {total:,} dossiers ({label})... {shown}%")
                last_shown = shown
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return count - start
    finally:
        connection.close()


def query_plan(path: Path, recorded: benchlib.Recorded) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("EXPLAIN QUERY PLAN " + recorded.statement, recorded.parameters)
        return [row[-1] for row in rows]
    finally:
        connection.close()


def capture_lookup_and_verify(host: Any, raw: sqlite3.Connection, target: Target) -> dict[str, Any]:
    """One real lookup and one right-code verify, with their statements recorded."""
    host.disabled_names()  # refresh the host's plugin-state cache: not in the recording
    with benchlib.recording(host.engine) as lookup_recorder:
        challenge_id = lookup_handler(
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


def bench_lookup(
    sizes: Sizes,
    workdir: Path,
    before_populate: Callable[[], Any],
    after_populate: Callable[[], Any],
) -> dict[str, Any]:
    small_path, big_path = workdir / "lookup-1k.sqlite3", workdir / "lookup-big.sqlite3"
    host = benchlib.build_host(sqlite_url(small_path), seed_data=True)
    demarche = benchlib.the_demarche(host)
    warm = 5
    real = sizes.lookups + warm + 1
    dossier_ids = []
    for index in range(real):
        dossier_ids.append(benchlib.deposit_one(host, demarche, f"lookup-{index}").id)
        if (index + 1) % 100 == 0:
            progress(f"lookup: {index + 1} of {real} real deposits")
    host.engine.dispose()
    raw = benchlib.raw_sqlite(str(small_path))
    targets = []
    for dossier_id in dossier_ids:
        email, code = raw.execute(
            "SELECT email, code FROM horscompte_tracking_code WHERE dossier_id = ?", (dossier_id,)
        ).fetchone()
        targets.append(Target(dossier_id, email, code))
    raw.close()
    fill_tracking_codes(small_path, sizes.small_dossiers, "small")
    shutil.copyfile(small_path, big_path)
    before_populate()
    fill_tracking_codes(big_path, sizes.big_dossiers, "big")
    after_populate()
    return measure_lookups(sizes, small_path, big_path, targets, warm)


def measure_lookups(
    sizes: Sizes, small_path: Path, big_path: Path, targets: list[Target], warm: int
) -> dict[str, Any]:
    small = benchlib.build_host(sqlite_url(small_path))
    big = benchlib.build_host(sqlite_url(big_path))
    raw = benchlib.raw_sqlite(str(small_path))
    raw_big = benchlib.raw_sqlite(str(big_path))
    capture_target, warm_targets, measured = targets[0], targets[1 : 1 + warm], targets[1 + warm :]
    try:
        for index, target in enumerate(warm_targets):
            typed = format_tracking_code(target.code)
            for host in (small, big):
                lookup_handler(host, target.email, typed, client_address(60000 + index))
        captured = capture_lookup_and_verify(small, raw, capture_target)
        lookup_statements = captured["lookup"].data
        verify_statements = captured["verify"].data
        captured_big = capture_lookup_and_verify(big, raw_big, capture_target)
        for _ in range(5):
            benchlib.replay(raw, lookup_statements)
        candidates = next(
            (r for r in lookup_statements if "FROM horscompte_tracking_code" in r.statement), None
        )
        plan = query_plan(big_path, candidates) if candidates else []

        rng = random.Random(5)
        times: dict[str, list[float]] = {"small": [], "big": [], "raw": []}
        challenges: dict[str, list[int]] = {"small": [], "big": []}
        progress(f"lookup: {len(measured)} lookups on each of 1k, big and raw")
        for index, target in enumerate(measured):
            typed = format_tracking_code(target.code)
            client = client_address(index)
            operations = ["small", "big", "raw"]
            rng.shuffle(operations)
            for operation in operations:
                if operation == "raw":
                    seconds, _ = timed(benchlib.replay, raw, lookup_statements)
                else:
                    host = small if operation == "small" else big
                    seconds, challenge_id = timed(lookup_handler, host, target.email, typed, client)
                    challenges[operation].append(challenge_id)
                times[operation].append(seconds)

        codes = [benchlib.last_code(raw, target.email) for target in measured]
        real_challenges = raw.execute(
            "SELECT COUNT(*) FROM horscompte_challenge WHERE dossier_id IS NOT NULL AND id IN "
            f"({','.join(str(c) for c in challenges['small'])})"
        ).fetchone()[0]
        # A guard has one live challenge at most (partial unique index): drop any other live
        # row of the captured challenge's guard (lookup replays issue them) before reviving it.
        reset = (
            "UPDATE horscompte_challenge SET consumed_at = NULL, attempts = 0 WHERE id = ?",
            (captured["challenge_id"],),
        )
        clear = (
            "DELETE FROM horscompte_challenge WHERE consumed_at IS NULL AND id <> ?1 AND "
            "guard_key = (SELECT guard_key FROM horscompte_challenge WHERE id = ?1)",
            (captured["challenge_id"],),
        )
        raw.execute(*clear)
        raw.execute(*reset)
        first_replay = benchlib.replay(raw, verify_statements)
        replay_took_attempt = bool(first_replay and first_replay[0])
        verify_times: dict[str, list[float]] = {"handler": [], "raw": [], "big": []}
        outcomes: dict[str, int] = {}
        progress(f"verify: {len(measured)} verifies on each of handler and raw")
        for index, code in enumerate(codes):
            operations = ["handler", "raw"]
            rng.shuffle(operations)
            for operation in operations:
                if operation == "raw":
                    raw.execute(*clear)
                    raw.execute(*reset)
                    seconds, _ = timed(benchlib.replay, raw, verify_statements)
                else:
                    seconds, outcome = timed(verify, small, challenges["small"][index], code)
                    outcomes[outcome.kind] = outcomes.get(outcome.kind, 0) + 1
                verify_times[operation].append(seconds)
        big_codes = [benchlib.last_code(raw_big, target.email) for target in measured]
        for index, code in enumerate(big_codes):
            seconds, _ = timed(verify, big, challenges["big"][index], code)
            verify_times["big"].append(seconds)
        progress("lookup and verify: time inside the driver")
        split: dict[str, list[tuple[float, float]]] = {"lookup": [], "verify": []}
        again = measured[: max(10, len(measured) // 4)]
        with benchlib.driver_clock(small.engine) as clock:
            for index, target in enumerate(again):
                before = clock.seconds
                typed, client = format_tracking_code(target.code), client_address(40000 + index)
                seconds, challenge_id = timed(lookup_handler, small, target.email, typed, client)
                split["lookup"].append((seconds, clock.seconds - before))
                code = benchlib.last_code(raw, target.email)
                before = clock.seconds
                seconds, _ = timed(verify, small, challenge_id, code)
                split["verify"].append((seconds, clock.seconds - before))
    finally:
        raw.close()
        raw_big.close()
        small.engine.dispose()
        big.engine.dispose()

    ms = {name: median(values) * 1e3 for name, values in times.items()}
    verify_ms = {name: median(values) * 1e3 for name, values in verify_times.items()}
    return {
        "lookup_vs_raw": ms["small"] / ms["raw"],
        "verify_vs_raw": verify_ms["handler"] / verify_ms["raw"],
        "lookup_statements": len(lookup_statements),
        "verify_statements": len(verify_statements),
        "lookup_scaling": ms["big"] / ms["small"],
        "lookup_ms": ms,
        "verify_ms": verify_ms,
        "lookup_driver_split": benchlib.breakdown(split["lookup"]),
        "verify_driver_split": benchlib.breakdown(split["verify"]),
        "lookups_per_kind": len(measured),
        "lookups_matching": real_challenges,
        "verify_outcomes": outcomes,
        "capture_verify_outcome": captured["verify_outcome"],
        "raw_verify_replay_took_attempt": replay_took_attempt,
        "lookup_transaction_control": len(captured["lookup"].control),
        "verify_transaction_control": len(captured["verify"].control),
        "lookup_sql": captured["lookup"].summary(),
        "verify_sql": captured["verify"].summary(),
        "lookup_statements_big": len(captured_big["lookup"].data),
        "big_candidates_query_plan": plan,
        "dossiers_small": sizes.small_dossiers,
        "dossiers_big": sizes.big_dossiers,
    }


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
        loadavg = [os.getloadavg()]
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
        loadavg.append(os.getloadavg())
        engine = make_engine(url)
        with engine.connect() as connection:
            total, distinct = connection.execute(
                text("SELECT COUNT(*), COUNT(DISTINCT code) FROM horscompte_tracking_code")
            ).one()
            dossiers = connection.execute(
                text("SELECT COUNT(*) FROM host_dossier WHERE status = 'deposited'")
            ).scalar_one()
        engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    rates = {workers: median([run["rate"] for run in results]) for workers, results in runs.items()}
    errors = [error for results in runs.values() for run in results for error in run["errors"]]
    return {
        "pg_speedup_4_workers": rates[4] / rates[1],
        "pg_duplicates": int(total - distinct),
        "deposits_per_second": {"1": rates[1], "4": rates[4]},
        "runs": {
            str(workers): [
                {
                    key: run[key]
                    for key in (
                        "deposited",
                        "seconds",
                        "rate",
                        "client_cpu_ms_per_deposit",
                        "client_cores_busy",
                        "machine_cores_busy",
                    )
                }
                for run in results
            ]
            for workers, results in runs.items()
        },
        "tracking_codes": int(total),
        "deposited_dossiers": int(dossiers),
        "errors": len(errors),
        "first_errors": errors[:3],
        "server_version": server_version,
        "loadavg_before_and_after": loadavg,
    }


# --------------------------------------------------------------------------- memory


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
        self.started_at: float | None = None

    def start(self) -> None:
        if self.started_at is None:
            progress(
                f"memory: {self.sizes.rss_deposits:,} deposits in a process of their own "
                f"(budget {self.budget:.0f} s, 0 = none)"
            )
            self.process.start()
            self.started_at = time.perf_counter()

    def result(self) -> dict[str, Any]:
        self.start()
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
        self.process.join(timeout=30)
        if report["error"]:
            raise RuntimeError("memory process failed:\n" + report["error"])
        measured_mb = (report["end_kb"] - report["start_kb"]) / 1024
        done = report["deposits"]
        projected = done < self.sizes.rss_deposits
        growth = measured_mb * self.sizes.rss_deposits / done if projected else measured_mb
        return {
            "rss_growth_mb": growth,
            "measured_growth_mb": measured_mb,
            "deposits_done": done,
            "deposits_wanted": self.sizes.rss_deposits,
            "projected_linearly": projected,
            "start_mb": report["start_kb"] / 1024,
            "end_mb": report["end_kb"] / 1024,
            "peak_mb": report["peak_kb"] / 1024,
            "deposits_per_second": done / report["seconds"] if report["seconds"] else None,
            "samples_mb": [(n, round(kb / 1024, 1)) for n, kb in report["samples"]],
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
        "note": "load averages show other work on the machine during the run",
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


def status(key: str, value: float) -> str:
    target = TARGETS.get(key)
    if target is None:
        return ""
    operator, bound = target
    met = {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[operator]
    return f"[target {operator} {bound}: {'met' if met else 'MISSED'}]"


def summary(figures: dict[str, Any], meta: dict[str, Any]) -> str:
    lookup, deposit_meta = meta["lookup"], meta["deposit"]
    pg, rss = meta["postgresql"], meta["rss"]
    lines = [
        "",
        "opencrm-horscompte benchmark"
        + (" (--quick: tiny sizes, figures not meaningful)" if meta["quick"] else ""),
        f"machine: {meta['machine']['cpu_model']} x {meta['machine']['cpu_count']}, "
        f"Python {meta['machine']['python']}, SQLite {meta['machine']['sqlite']}, "
        f"PostgreSQL {pg['server_version']}",
        "load average (1, 5, 15 min) at start {} and end {}: other work on the machine "
        "disturbs timings".format(
            *(
                "/".join(f"{x:.1f}" for x in meta["machine"][key])
                for key in ("loadavg_at_start", "loadavg_at_end")
            )
        ),
        "",
    ]
    details = {
        "deposit_overhead": f"deposit {deposit_meta['enabled']['total_ms']:.2f} ms with the "
        f"plugin, {deposit_meta['disabled']['total_ms']:.2f} ms without (SQLite WAL)",
        "lookup_vs_raw": f"lookup {lookup['lookup_ms']['small']:.2f} ms, "
        f"raw replay {lookup['lookup_ms']['raw']:.2f} ms",
        "verify_vs_raw": f"verify {lookup['verify_ms']['handler']:.2f} ms, "
        f"raw replay {lookup['verify_ms']['raw']:.2f} ms",
        "lookup_statements": "data statements of a matching lookup",
        "verify_statements": "data statements of a right-code verify",
        "lookup_scaling": f"lookup {lookup['lookup_ms']['big']:.2f} ms with "
        f"{lookup['dossiers_big']:,} dossiers, {lookup['lookup_ms']['small']:.2f} ms with "
        f"{lookup['dossiers_small']:,}",
        "pg_speedup_4_workers": f"{pg['deposits_per_second']['4']:.0f} deposits/s with 4 "
        f"processes, {pg['deposits_per_second']['1']:.0f} with 1",
        "pg_duplicates": f"over {pg['tracking_codes']:,} tracking codes",
        "rss_growth_mb": f"{rss['measured_growth_mb']:.1f} MB measured over "
        f"{rss['deposits_done']:,} deposits"
        + (" (projected linearly)" if rss["projected_linearly"] else ""),
        "codegen_us": "per 16-character code, every class",
    }
    for key, value in figures.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:22} {shown:>10}  {status(key, value):28} {details[key]}")
    lines.append(f"\ntotal {meta['seconds']['total']:.0f} s")
    return "\n".join(lines)


def run(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    sizes = QUICK if args.quick else FULL
    budget = args.rss_budget if args.rss_budget is not None else sizes.rss_budget
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    memory = MemoryPhase(sizes, workdir, budget)
    meta: dict[str, Any] = {"quick": args.quick, "machine": machine(), "sizes": asdict(sizes)}
    meta["machine"]["loadavg_at_start"] = os.getloadavg()
    try:
        if args.quick:
            memory.start()  # beside the whole run: --quick figures are not meaningful anyway
        meta["machine"]["postgresql"] = check_postgresql(args.pg_url)

        def phase(name: str, function: Callable[[], dict[str, Any]]) -> dict[str, Any]:
            progress(f"{name}...")
            phase_started = time.perf_counter()
            result = function()
            seconds[name] = time.perf_counter() - phase_started
            return result

        def memory_result() -> None:
            meta["rss"] = memory.result()

        meta["codegen"] = phase("codegen", lambda: bench_codegen(sizes))
        meta["deposit"] = phase("deposit", lambda: bench_deposit_overhead(sizes, workdir))
        # Full run: the memory process deposits beside the (untimed) bulk insert and is
        # waited for before the timed lookups.
        meta["lookup"] = phase(
            "lookup",
            lambda: bench_lookup(
                sizes,
                workdir,
                memory.start,
                (lambda: None) if args.quick else memory_result,
            ),
        )
        meta["postgresql"] = phase("postgresql", lambda: bench_postgresql(sizes, args.pg_url))
        if "rss" not in meta:
            phase("memory (waiting for its process)", memory_result)
    finally:
        memory.stop()
    meta["machine"]["loadavg_at_end"] = os.getloadavg()
    seconds["total"] = time.perf_counter() - started
    meta["seconds"] = seconds
    meta["rss_budget_seconds"] = budget
    meta["targets"] = {key: list(target) for key, target in TARGETS.items() if target}
    lookup = meta["lookup"]
    figures = {
        "deposit_overhead": meta["deposit"]["deposit_overhead"],
        "lookup_vs_raw": lookup["lookup_vs_raw"],
        "verify_vs_raw": lookup["verify_vs_raw"],
        "lookup_statements": lookup["lookup_statements"],
        "verify_statements": lookup["verify_statements"],
        "lookup_scaling": lookup["lookup_scaling"],
        "pg_speedup_4_workers": meta["postgresql"]["pg_speedup_4_workers"],
        "pg_duplicates": meta["postgresql"]["pg_duplicates"],
        "rss_growth_mb": meta["rss"]["rss_growth_mb"],
        "codegen_us": meta["codegen"]["codegen_us"],
    }
    return figures, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the test suite)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL server (admin URL)")
    parser.add_argument(
        "--rss-budget",
        type=float,
        default=None,
        help="seconds the memory phase may deposit before projecting (0: no limit)",
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
    print(json.dumps({**figures, "meta": meta}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
