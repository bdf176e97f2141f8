"""Helpers of ``benchmarks/run.py``: hosts, deposits, the statement recorder, the raw replay,
resident memory, and the functions run in child processes (spawned, so they live here and
not in the script's ``__main__``)."""

from __future__ import annotations

import gc
import os
import queue
import re
import sqlite3
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

SECRET_KEYS = [b"benchmark-key-" + b"0" * 18]
DEMARCHE_SLUG = "signalement-voirie"
ANSWERS = {"subject": "Lampadaire éteint rue des Lilas", "message": "Depuis lundi soir."}
CODE_LINE = re.compile(r"^\s*(\d{6,14})\s*$", re.MULTILINE)
TRANSACTION_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.I)


# The parent's start, inherited by its child processes through the environment.
_STARTED = float(os.environ.setdefault("HORSCOMPTE_BENCH_STARTED", repr(time.time())))


def progress(message: str) -> None:
    print(f"[bench +{time.time() - _STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def identity(tag: str) -> dict[str, str]:
    return {"last_name": "Dupont", "first_name": "Léa", "email": f"{tag}@exemple.fr"}


# --------------------------------------------------------------------------- hosts


def build_host(database_url: str, *, seed_data: bool = False, **config: Any) -> Any:
    """A reference host on ``database_url``; ``seed_data`` seeds it (plugin enabled)."""
    from opencrm_horscompte.host_kit.refhost.host import HostConfig, ReferenceHost
    from opencrm_horscompte.host_kit.refhost.seed import seed

    host = ReferenceHost(HostConfig(database_url=database_url, secret_keys=SECRET_KEYS, **config))
    if seed_data:
        seed(host, citizen_password="bench-citizen-pw", admin_password="bench-admin-pw")
    return host


def the_demarche(host: Any) -> Any:
    from opencrm_horscompte.host_kit.refhost.models import Demarche

    with Session(host.engine, expire_on_commit=False) as session:
        return session.exec(select(Demarche).where(Demarche.slug == DEMARCHE_SLUG)).one()


def deposit_one(host: Any, demarche: Any, tag: str) -> Any:
    """One deposit through the reference host's pipeline, as its HTTP handler does it: the
    draft (identity screen), then the deposit transaction (plugins' hooks inside)."""
    from opencrm_horscompte.host_kit.refhost.dossiers import create_draft, deposit

    draft = create_draft(host, demarche, identity(tag), None)
    return deposit(host, draft.draft_key, ANSWERS)


def set_sqlite_synchronous(engine: Engine, mode: str) -> None:
    """``PRAGMA synchronous`` on every new connection of ``engine`` (and drop pooled ones)."""

    @event.listens_for(engine, "connect")
    def _synchronous(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA synchronous={mode}")

    engine.dispose()


# --------------------------------------------------------------------------- statements


@dataclass
class Recorded:
    statement: str
    parameters: Any
    executemany: bool

    @property
    def control(self) -> bool:
        return bool(TRANSACTION_CONTROL.match(self.statement))


@dataclass
class Recorder:
    """Every statement an engine sends to its driver while recording (``before_cursor_execute``):
    the SQL text and the parameters as the driver receives them (after type processing)."""

    statements: list[Recorded] = field(default_factory=list)

    @property
    def data(self) -> list[Recorded]:
        """Without transaction control (BEGIN, SAVEPOINT, RELEASE...)."""
        return [recorded for recorded in self.statements if not recorded.control]

    @property
    def control(self) -> list[Recorded]:
        return [recorded for recorded in self.statements if recorded.control]

    def summary(self) -> list[str]:
        return [" ".join(recorded.statement.split())[:160] for recorded in self.statements]


@contextmanager
def recording(engine: Engine) -> Iterator[Recorder]:
    recorder = Recorder()

    def listener(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool):
        recorder.statements.append(Recorded(statement, parameters, many))

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield recorder
    finally:
        event.remove(engine, "before_cursor_execute", listener)


@dataclass
class DriverClock:
    """Seconds spent inside the driver (``cursor.execute`` and ``commit``) while attached."""

    seconds: float = 0.0
    statements: int = 0


@contextmanager
def driver_clock(engine: Engine) -> Iterator[DriverClock]:
    """Time the driver's own work for ``engine``: every ``cursor.execute`` (between the
    ``before_``/``after_cursor_execute`` events) and every DBAPI commit (the dialect's
    ``do_commit``, wrapped on this engine's dialect instance only while attached). What a
    handler takes beyond it is Python: the plugin's, SQLAlchemy's, the host's."""
    clock = DriverClock()
    dialect = engine.dialect
    original_commit = dialect.do_commit

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool):
        conn.info["benchmark_started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool):
        clock.seconds += time.perf_counter() - conn.info.pop("benchmark_started")
        clock.statements += 1

    def do_commit(dbapi_connection: Any) -> None:
        started = time.perf_counter()
        try:
            original_commit(dbapi_connection)
        finally:
            clock.seconds += time.perf_counter() - started

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    dialect.do_commit = do_commit  # type: ignore[method-assign]
    try:
        yield clock
    finally:
        del dialect.do_commit
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def breakdown(samples: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Medians, in ms, of ``(total, driver)`` seconds per operation, and of their difference."""
    import statistics

    return {
        "total_ms": statistics.median(total for total, _ in samples) * 1e3,
        "driver_ms": statistics.median(driver for _, driver in samples) * 1e3,
        "python_ms": statistics.median(total - driver for total, driver in samples) * 1e3,
        "operations": len(samples),
    }


def raw_sqlite(path: str) -> sqlite3.Connection:
    """The raw driver on the host's file, configured as the host's engine configures its
    connections (autocommit driver, WAL, busy timeout, foreign keys)."""
    connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA busy_timeout=30000")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def replay(connection: sqlite3.Connection, statements: Sequence[Recorded]) -> list[list[Any]]:
    """Run ``statements`` (data statements only) in one ``BEGIN IMMEDIATE`` .. ``COMMIT``
    transaction through the raw driver, fetching every result as the ORM does."""
    results = []
    cursor = connection.cursor()
    cursor.execute("BEGIN IMMEDIATE")
    try:
        for recorded in statements:
            if recorded.executemany:
                cursor.executemany(recorded.statement, recorded.parameters)
                results.append([])
            else:
                cursor.execute(recorded.statement, recorded.parameters)
                results.append(cursor.fetchall())
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    return results


def last_code(connection: sqlite3.Connection, recipient: str) -> str:
    """The validation code of the newest mail queued to ``recipient``."""
    row = connection.execute(
        "SELECT text FROM host_mail_outbox WHERE recipient = ? ORDER BY id DESC LIMIT 1",
        (recipient,),
    ).fetchone()
    match = CODE_LINE.search(row[0]) if row else None
    if not match:
        raise RuntimeError(f"no validation code mailed to {recipient}")
    return match.group(1)


# --------------------------------------------------------------------------- memory


def rss_kb() -> int:
    """Resident set size of this process (``VmRSS``), in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_child(database_url: str, deposits: int, warmup: int, budget: float, results: Any) -> None:
    """Deposit ``deposits`` dossiers in this one process (after ``warmup`` ones) and report
    the resident memory before and after; stops early when ``budget`` seconds run out."""
    report: dict[str, Any] = {"error": None}
    try:
        host = build_host(database_url, seed_data=True)
        # Durability is not what is measured here: no fsync per commit (WAL, NORMAL).
        set_sqlite_synchronous(host.engine, "NORMAL")
        demarche = the_demarche(host)
        for index in range(warmup):
            deposit_one(host, demarche, f"rss-warm-{index}")
        gc.collect()
        start_kb = rss_kb()
        started = time.perf_counter()
        deadline = started + budget if budget > 0 else float("inf")
        samples = [(0, start_kb)]
        step = max(1, deposits // 10)
        done = 0
        for index in range(deposits):
            deposit_one(host, demarche, f"rss-{index}")
            done += 1
            if done % step == 0:
                samples.append((done, rss_kb()))
                elapsed = time.perf_counter() - started
                progress(f"memory: {done:,} of {deposits:,} deposits ({elapsed:.0f} s)")
            if time.perf_counter() > deadline:
                break
        gc.collect()
        end_kb = rss_kb()
        samples.append((done, end_kb))
        report.update(
            deposits=done,
            start_kb=start_kb,
            end_kb=end_kb,
            peak_kb=max(kb for _, kb in samples),
            samples=samples,
            seconds=time.perf_counter() - started,
        )
        host.engine.dispose()
    except BaseException:
        report["error"] = traceback.format_exc()
    results.put(report)


# --------------------------------------------------------------------------- PG workers


def deposit_worker(
    database_url: str, worker: int, warmup: int, commands: Any, go: Any, reports: Any
) -> None:
    """A worker process: build a host of its own, deposit ``warmup`` dossiers, say ready;
    then for each command ``(run, count)``: say armed, wait until ``go`` holds ``run``,
    deposit ``count`` dossiers and report. ``None`` ends it. Errors are reported too."""
    host = None
    try:
        host = build_host(database_url)
        demarche = the_demarche(host)
        for index in range(warmup):
            deposit_one(host, demarche, f"w{worker}-warm-{index}")
        reports.put(("ready", worker, None))
        while (command := commands.get()) is not None:
            run, count = command
            report: dict[str, Any] = {"worker": worker, "deposited": 0, "errors": []}
            reports.put(("armed", worker, run))
            while go.value != run:
                time.sleep(0.0002)
            started, cpu_started = time.perf_counter(), time.process_time()
            for index in range(count):
                try:
                    deposit_one(host, demarche, f"r{run}-w{worker}-{index}")
                    report["deposited"] += 1
                except Exception:
                    report["errors"].append(traceback.format_exc(limit=4))
                    if len(report["errors"]) >= 5:
                        break
            report["seconds"] = time.perf_counter() - started
            report["cpu_seconds"] = time.process_time() - cpu_started
            reports.put(("done", worker, report))
    except BaseException:
        reports.put(("failed", worker, traceback.format_exc()))
    finally:
        if host is not None:
            host.engine.dispose()


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``; 0 where unavailable)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class WorkerPool:
    """``size`` deposit worker processes, started (and warmed up) once, released together
    for each run: a run's rate is the parent's clock from the release to the last report."""

    def __init__(self, context: Any, database_url: str, size: int, warmup: int) -> None:
        self.reports = context.Queue()
        self.go = context.Value("i", -1)
        self.commands = [context.Queue() for _ in range(size)]
        self.processes = [
            context.Process(
                target=deposit_worker,
                args=(database_url, worker, warmup, self.commands[worker], self.go, self.reports),
                name=f"deposit-worker-{worker}",
            )
            for worker in range(size)
        ]
        self.runs = 0

    def start(self) -> None:
        for process in self.processes:
            process.start()
        self._wait("ready", set(range(len(self.processes))), timeout=600)

    def _wait(self, kind: str, workers: set[int], timeout: float) -> list[Any]:
        payloads = []
        waiting = set(workers)
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers {sorted(waiting)} never said {kind}")
            try:
                got, worker, payload = self.reports.get(timeout=0.5)
            except queue.Empty:
                dead = [w for w in waiting if not self.processes[w].is_alive()]
                if dead:
                    raise RuntimeError(f"deposit workers {dead} died") from None
                continue
            if got == "failed":
                raise RuntimeError(f"deposit worker {worker} failed:\n{payload}")
            if got == kind and worker in waiting:
                waiting.discard(worker)
                payloads.append(payload)
        return payloads

    def run(self, workers: int, count: int) -> dict[str, Any]:
        """``workers`` of the pool deposit ``count`` dossiers each, released together."""
        run = self.runs
        self.runs += 1
        chosen = set(range(workers))
        for worker in chosen:
            self.commands[worker].put((run, count))
        self._wait("armed", chosen, timeout=60)
        started, busy_started = time.perf_counter(), machine_busy_seconds()
        self.go.value = run
        reports = self._wait("done", chosen, timeout=3600)
        seconds = time.perf_counter() - started
        busy = machine_busy_seconds() - busy_started
        deposited = sum(report["deposited"] for report in reports)
        cpu = sum(report["cpu_seconds"] for report in reports)
        return {
            "workers": workers,
            "deposited": deposited,
            "seconds": seconds,
            "rate": deposited / seconds if seconds > 0 else 0.0,
            # The workers' own CPU (Python: plugin, host, SQLAlchemy, psycopg), per deposit,
            # and how many cores they kept busy together.
            "client_cpu_ms_per_deposit": 1e3 * cpu / deposited if deposited else None,
            "client_cores_busy": cpu / seconds if seconds > 0 else None,
            # Every process of the machine (the workers, PostgreSQL, anything else running).
            "machine_cores_busy": busy / seconds if seconds > 0 else None,
            "errors": [error for report in reports for error in report["errors"]],
        }

    def close(self) -> None:
        for commands in self.commands:
            commands.put(None)
        for process in self.processes:
            if process.pid is None:
                continue
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        self.reports.close()
