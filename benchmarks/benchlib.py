"""Helpers of ``benchmarks/run.py`` (and ``load.py``'s ``/proc/stat`` reading and temporary
database): hosts, deposits, the statement recorder, the raw replay,
resident memory, and the functions run in child processes (spawned, so they live here and
not in the script's ``__main__``)."""

from __future__ import annotations

import gc
import os
import queue
import random
import re
import secrets
import sqlite3
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

SECRET_KEYS = [b"benchmark-key-" + b"0" * 18]
DEMARCHE_SLUG = "signalement-voirie"
ANSWERS = {"subject": "Lampadaire éteint rue des Lilas", "message": "Depuis lundi soir."}
CODE_LINE = re.compile(r"^\s*(\d{6,14})\s*$", re.MULTILINE)
TRANSACTION_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.I)


# The script's start (``start_clock``), inherited by its child processes through the
# environment.
_STARTED_AT = "HORSCOMPTE_BENCH_STARTED"


def start_clock() -> None:
    """The progress lines count from now, in this process and its child processes."""
    os.environ[_STARTED_AT] = repr(time.time())


def progress(message: str) -> None:
    started = float(os.environ.setdefault(_STARTED_AT, repr(time.time())))
    print(f"[bench +{time.time() - started:5.0f} s] {message}", file=sys.stderr, flush=True)


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


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@contextmanager
def temporary_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new PostgreSQL database named ``prefix`` and a random suffix, on the server of
    ``admin_url``; its URL. Dropped when the block ends, its connections closed, also on
    error."""
    from sqlalchemy import text

    from opencrm_horscompte.base.db import make_engine

    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin.url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def the_demarche(host: Any) -> Any:
    from opencrm_horscompte.host_kit.refhost.models import Demarche

    with Session(host.engine, expire_on_commit=False) as session:
        return session.exec(select(Demarche).where(Demarche.slug == DEMARCHE_SLUG)).one()


def deposit_one(host: Any, demarche: Any, tag: str) -> Any:
    """One deposit through the reference host's pipeline, as its HTTP handler does it: the
    draft (identity screen), then the deposit transaction (plugins' hooks inside)."""
    from opencrm_horscompte.host_kit.refhost.dossiers import create_draft, deposit

    draft = create_draft(host, demarche, identity(tag), None)
    return deposit(host, draft.draft_key, ANSWERS, draft)


def lookup_handler(host: Any, email: str, typed_code: str, client: str) -> int:
    """What the lookup page does with a POST up to the challenge, without the page (its
    render and signed carrier): ``lookup.pages.lookup`` minus ``_validation_form``. The one
    place to follow the page if its body changes."""
    from opencrm_horscompte.lookup.start import read_input, start_lookup

    typed = read_input(email, typed_code)
    return int(start_lookup(host, typed, client, "fr").challenge_id)


def set_sqlite_synchronous(engine: Engine, mode: str) -> None:
    """``PRAGMA synchronous`` on every new connection of ``engine`` (and drop pooled ones)."""

    @event.listens_for(engine, "connect")
    def _synchronous(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA synchronous={mode}")

    engine.dispose()


# --------------------------------------------------------------------------- clocks


@dataclass(frozen=True)
class Sample:
    """One operation: wall-clock seconds and this thread's CPU seconds."""

    wall: float
    cpu: float


def measured(function: Callable[..., Any], *args: Any) -> tuple[Sample, Any]:
    """Call ``function(*args)``; its wall time (``perf_counter``) and thread CPU time
    (``thread_time``: user + system of this thread only, so other processes on a busy
    machine don't count, but their cache and frequency effects still do)."""
    wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
    result = function(*args)
    return Sample(
        (time.perf_counter_ns() - wall) / 1e9, (time.thread_time_ns() - cpu) / 1e9
    ), result


@dataclass
class Operation:
    """A benchmarked operation: ``prepare(index)`` (not timed) returns the arguments of
    ``run`` (timed). ``after(sample, result)`` (not timed) may record more."""

    name: str
    run: Callable[..., Any]
    prepare: Callable[[int], tuple[Any, ...]] = lambda index: ()
    after: Callable[[Sample, Any], None] | None = None


def interleaved(
    operations: Sequence[Operation], iterations: int, rng: random.Random
) -> dict[str, list[Sample]]:
    """Each iteration runs every operation once, in a shuffled order: a burst of other work
    on the machine hits all of them alike."""
    samples: dict[str, list[Sample]] = {operation.name: [] for operation in operations}
    order = list(operations)
    for index in range(iterations):
        rng.shuffle(order)
        for operation in order:
            args = operation.prepare(index)
            sample, result = measured(operation.run, *args)
            samples[operation.name].append(sample)
            if operation.after is not None:
                operation.after(sample, result)
    return samples


def median_sample(samples: Sequence[Sample]) -> Sample:
    return Sample(
        statistics.median(s.wall for s in samples), statistics.median(s.cpu for s in samples)
    )


BUSY_MIN_SECONDS = 0.25


@dataclass(frozen=True)
class CpuTimes:
    """Seconds all cores spent since boot, from ``/proc/stat`` (zeros where unavailable).

    ``busy`` is the machine's own work: user, nice, system, irq and softirq (a guest's time
    is already inside user). ``stolen`` is steal: time the hypervisor ran other virtual
    machines while ours waited, which no process of ours did. ``total`` is busy + stolen +
    idle + iowait: every second the cores had."""

    busy: float = 0.0
    stolen: float = 0.0
    total: float = 0.0

    def __sub__(self, earlier: CpuTimes) -> CpuTimes:
        return CpuTimes(
            self.busy - earlier.busy, self.stolen - earlier.stolen, self.total - earlier.total
        )


def cpu_times(stat_path: str = "/proc/stat") -> CpuTimes:
    try:
        with open(stat_path, encoding="ascii") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:9]]
    except OSError:
        return CpuTimes()
    ticks += [0] * (8 - len(ticks))
    user, nice, system, idle, iowait, irq, softirq, steal = ticks
    per_second = os.sysconf("SC_CLK_TCK")
    busy = user + nice + system + irq + softirq
    return CpuTimes(
        busy / per_second, steal / per_second, (busy + idle + iowait + steal) / per_second
    )


class MachineLoad:
    """The machine's load while a phase runs: the 1-minute load average at its start and
    end, the cores all processes kept busy on average, and the cores the hypervisor gave to
    other machines (steal) on average (``/proc/stat``). ``/proc/stat`` counts in clock ticks
    (10 ms), so over a phase shorter than ``BUSY_MIN_SECONDS`` the cores are not told
    (``None``) rather than off by several."""

    def __init__(self) -> None:
        self.load_start = os.getloadavg()[0]
        self.times_start = cpu_times()
        self.started = time.perf_counter()

    def done(self) -> dict[str, float | None]:
        seconds = time.perf_counter() - self.started
        spent = cpu_times() - self.times_start
        counted = seconds >= BUSY_MIN_SECONDS
        return {
            "loadavg_1min_start": round(self.load_start, 2),
            "loadavg_1min_end": round(os.getloadavg()[0], 2),
            "machine_cores_busy": round(spent.busy / seconds, 2) if counted else None,
            "machine_cores_stolen": round(spent.stolen / seconds, 2) if counted else None,
            "cpu_count": os.cpu_count() or 0,
            "seconds": round(seconds, 1),
        }


class LockClock:
    """Time spent inside write transactions: from ``BEGIN IMMEDIATE`` done (SQLite's write
    lock taken) to ``COMMIT``/``ROLLBACK`` done; wall and thread CPU, summed."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.transactions = 0
        self._open: tuple[int, int] | None = None

    def opened(self) -> None:
        self._open = (time.perf_counter_ns(), time.thread_time_ns())

    def closed(self) -> None:
        if self._open is None:
            return
        wall, cpu = self._open
        self._open = None
        self.wall += (time.perf_counter_ns() - wall) / 1e9
        self.cpu += (time.thread_time_ns() - cpu) / 1e9
        self.transactions += 1

    def reading(self) -> Sample:
        return Sample(self.wall, self.cpu)


class LockProbe:
    """Per-operation reading of a :class:`LockClock`: ``mark()`` at the end of the
    preparation, ``take()`` after the operation."""

    def __init__(self, clock: LockClock) -> None:
        self.clock = clock
        self.mark_at = Sample(0.0, 0.0)
        self.samples: list[Sample] = []

    def mark(self) -> None:
        self.mark_at = self.clock.reading()

    def take(self, _sample: Sample, _result: Any) -> None:
        now = self.clock.reading()
        self.samples.append(Sample(now.wall - self.mark_at.wall, now.cpu - self.mark_at.cpu))


class DialectEnd(Protocol):
    """The shape of a dialect's ``do_commit``/``do_rollback`` (its parameter can be passed
    by name), for the wrappers that replace them on an instance."""

    def __call__(self, dbapi_connection: Any) -> None: ...


@contextmanager
def lock_clock(engine: Engine) -> Iterator[LockClock]:
    """A :class:`LockClock` on ``engine``'s write transactions (see :func:`lock_clocks`)."""
    with lock_clocks(engine) as (clock,):
        yield clock


@contextmanager
def lock_clocks(*engines: Engine) -> Iterator[tuple[LockClock, ...]]:
    """One :class:`LockClock` per engine, on its write transactions, whichever way they run
    (a SQLAlchemy connection of ``writer(engine)`` or a driver-level transaction): opened
    when the plugin's ``BEGIN IMMEDIATE`` statement has run, closed after the dialect's
    ``do_commit``/``do_rollback``. Both are wrapped on their instances while attached, so
    the other statements pay for no listener. The engines must not share a dialect."""
    from opencrm_horscompte.base.driver import BEGIN_IMMEDIATE

    clocks = tuple(LockClock() for _ in engines)
    by_dialect = {id(engine.dialect): clock for engine, clock in zip(engines, clocks, strict=True)}
    if len(by_dialect) != len(engines):
        raise ValueError("each engine needs its own dialect")
    begin_immediate = BEGIN_IMMEDIATE
    original_begin = begin_immediate.execute

    def begin(connection: Any, parameters: Any = None) -> Any:
        cursor = original_begin(connection, parameters)
        clock = by_dialect.get(id(connection.dialect))  # ``engine`` or ``writer(engine)``
        if clock is not None:
            clock.opened()
        return cursor

    def ending(original: Callable[[Any], None], clock: LockClock) -> DialectEnd:
        def end(dbapi_connection: Any) -> None:
            try:
                original(dbapi_connection)
            finally:
                clock.closed()

        return end

    begin_immediate.execute = begin  # type: ignore[method-assign]
    for engine, clock in zip(engines, clocks, strict=True):
        dialect = engine.dialect
        dialect.do_commit = ending(dialect.do_commit, clock)  # type: ignore[method-assign]
        dialect.do_rollback = ending(dialect.do_rollback, clock)  # type: ignore[method-assign]
    try:
        yield clocks
    finally:
        for engine in engines:
            del engine.dialect.do_commit
            del engine.dialect.do_rollback
        del begin_immediate.execute


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

    def listener(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
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

    def before(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        conn.info["benchmark_started"] = time.perf_counter()

    def after(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
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


def replay(
    connection: sqlite3.Connection, statements: Sequence[Recorded], hold: LockClock | None = None
) -> list[list[Any]]:
    """Run ``statements`` (data statements only) in one ``BEGIN IMMEDIATE`` .. ``COMMIT``
    transaction through the raw driver, fetching every result as the ORM does. ``hold``
    gets the time from the lock taken (``BEGIN IMMEDIATE`` done) to ``COMMIT`` done."""
    results: list[list[Any]] = []
    cursor = connection.cursor()
    cursor.execute("BEGIN IMMEDIATE")
    if hold is not None:
        hold.opened()
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
    finally:
        if hold is not None:
            hold.closed()
    return results


HEX64 = re.compile(r"^[0-9a-f]{64}$")


def substituted(statements: Sequence[Recorded], mapping: Mapping[Any, Any]) -> list[Recorded]:
    """``statements`` with every parameter value found in ``mapping`` replaced by its image
    (same positions, same types): a replay with fresh keys or for another dossier."""

    def one(parameters: Any) -> Any:
        if isinstance(parameters, dict):
            return {key: _swap(value, mapping) for key, value in parameters.items()}
        return type(parameters)(_swap(value, mapping) for value in parameters)

    return [
        Recorded(
            recorded.statement,
            [one(row) for row in recorded.parameters]
            if recorded.executemany
            else one(recorded.parameters),
            recorded.executemany,
        )
        for recorded in statements
    ]


def occurrences(statements: Sequence[Recorded], value: Any) -> int:
    """How many parameters of ``statements`` equal ``value`` (what :func:`substituted`
    would replace)."""
    return sum(1 for v in _parameter_values(statements) if type(v) is type(value) and v == value)


def _parameter_values(statements: Sequence[Recorded]) -> Iterator[Any]:
    """Every parameter value of ``statements``, every row of an ``executemany`` included."""
    for recorded in statements:
        rows = recorded.parameters if recorded.executemany else [recorded.parameters]
        for row in rows:
            yield from (row.values() if isinstance(row, dict) else row)


def _swap(value: Any, mapping: Mapping[Any, Any]) -> Any:
    try:
        return mapping.get(value, value)
    except TypeError:  # unhashable
        return value


def hex_keys(statements: Sequence[Recorded]) -> set[str]:
    """Every 64-hex-digit parameter value (HMAC keys: throttle counters, failure guards,
    code HMACs) of ``statements``."""
    return {v for v in _parameter_values(statements) if isinstance(v, str) and HEX64.match(v)}


def fresh_hex_mapping(keys: set[str]) -> dict[str, str]:
    """A fresh random 64-hex-digit value for each of ``keys``."""
    return {key: os.urandom(32).hex() for key in keys}


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
        started, load = time.perf_counter(), MachineLoad()
        self.go.value = run
        reports = self._wait("done", chosen, timeout=3600)
        seconds = time.perf_counter() - started
        machine_load = load.done()
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
            "client_cores_busy": round(cpu / seconds, 2) if seconds > 0 else None,
            # Every process of the machine (the workers, PostgreSQL, anything else running),
            # and the hypervisor's steal; None for a run too short for /proc/stat's ticks.
            "machine_cores_busy": machine_load["machine_cores_busy"],
            "machine_cores_stolen": machine_load["machine_cores_stolen"],
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


# --------------------------------------------------------------------------- growing tables

BULK_BASE_ID = 10_000_000
_HEX = "lower(hex(randomblob(32)))"
_BULK_EMAIL = f"'usager' || ({BULK_BASE_ID} + i) || '@bulk.exemple.fr'"


def bulk_email(dossier_id: int) -> str:
    return f"usager{dossier_id}@bulk.exemple.fr"


def _bulk_overrides(alphabet: str, length: int, total: int) -> dict[str, dict[str, str]]:
    """SQL expressions of the generated columns, per table (``i`` counts 1, 2, ...);
    every other column copies the table's newest real row."""
    pick = f"substr('{alphabet}', 1 + (abs(random()) % {len(alphabet)}), 1)"
    code = " || ".join([pick] * length)
    random_dossier = f"{BULK_BASE_ID} + 1 + (abs(random()) % {total})"
    return {
        "host_dossier": {
            "id": f"{BULK_BASE_ID} + i",
            "draft_key": "lower(hex(randomblob(18)))",
            "email": _BULK_EMAIL,
            "status": "'deposited'",
            "account_id": "NULL",
        },
        "horscompte_tracking_code": {
            "dossier_id": f"{BULK_BASE_ID} + i",
            "code": code,
            "email": _BULK_EMAIL,
            "email_key": _BULK_EMAIL,
        },
        "host_mail_outbox": {"recipient": _BULK_EMAIL, "sent_at": "created_at_"},
        "horscompte_challenge": {
            "dossier_id": random_dossier,
            "guard_key": _HEX,
            "code_hmac": _HEX,
            "consumed_at": "created_at_",
        },
        "horscompte_throttle": {"key": _HEX},
        "horscompte_failure_guard": {"key": _HEX},
        "horscompte_audit_event": {},
    }


GROWN_TABLES = (
    "host_dossier",
    "horscompte_tracking_code",
    "host_mail_outbox",
    "horscompte_challenge",
    "horscompte_throttle",
    "horscompte_failure_guard",
    "horscompte_audit_event",
)


def grow_tables(path: str, total: int, label: str) -> dict[str, int]:
    """Bulk-insert generated rows (random keys and codes, copies of a real row otherwise)
    until each of :data:`GROWN_TABLES` holds ``total`` rows; return the rows counted after.

    One ``INSERT ... SELECT`` over a recursive counter per table and chunk, in SQLite
    itself: a million rows per table take seconds, not minutes. Dossiers and tracking codes
    share ids from :data:`BULK_BASE_ID` + 1, and the bulk dossiers' addresses are
    :func:`bulk_email`, so a generated dossier can be looked up like a real one."""
    import json

    from opencrm_horscompte.tracking.codes import CodePolicy

    connection = sqlite3.connect(path, isolation_level=None)
    connection.row_factory = sqlite3.Row
    counts: dict[str, int] = {}
    try:
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")
        template = connection.execute(
            "SELECT policy_json FROM horscompte_tracking_code LIMIT 1"
        ).fetchone()
        policy = CodePolicy(**json.loads(template["policy_json"]))
        overrides = _bulk_overrides(policy.alphabet, policy.length, total)
        for table in GROWN_TABLES:
            row = connection.execute(
                f"SELECT * FROM {table} ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
            if row is None:
                raise RuntimeError(f"{table} has no row to copy: make one real row first")
            generated = overrides[table]
            columns = [c for c in row.keys() if c in generated or c != "id"]  # noqa: SIM118
            expressions = []
            for column in columns:
                expression = generated.get(column, f":{column}")
                if expression == "created_at_":
                    expression = ":created_at"
                expressions.append(expression)
            values = {column: row[column] for column in row.keys()}  # noqa: SIM118
            count = connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            start = 0
            chunk = 200_000
            while count < total:
                wanted = min(chunk, total - count)
                values.update(first=start + 1, last=start + wanted)
                connection.execute("BEGIN")
                connection.execute(
                    "WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n "
                    f"WHERE i < :last) INSERT OR IGNORE INTO {table} "
                    f"({', '.join(columns)}) SELECT {', '.join(expressions)} FROM n",
                    values,
                )
                connection.execute("COMMIT")
                start += wanted
                count = connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            counts[table] = count
            progress(f"grow {label}: {table} holds {count:,} rows")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("ANALYZE")
    finally:
        connection.close()
    return counts


def count_rows(path: str) -> dict[str, int]:
    connection = sqlite3.connect(path)
    try:
        return {
            table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in GROWN_TABLES
        }
    finally:
        connection.close()


def random_bulk_targets(path: str, count: int, rng: random.Random) -> list[tuple[int, str, str]]:
    """``count`` generated dossiers drawn at random: ``(dossier_id, email, code)``, read
    back from the file (not assumed)."""
    connection = sqlite3.connect(path)
    try:
        ((low, high),) = connection.execute(
            "SELECT MIN(dossier_id), MAX(dossier_id) FROM horscompte_tracking_code "
            "WHERE dossier_id > ?",
            (BULK_BASE_ID,),
        )
        ids = rng.sample(range(low, high + 1), min(count, high - low + 1))
        targets = []
        for dossier_id in ids:
            row = connection.execute(
                "SELECT dossier_id, email, code FROM horscompte_tracking_code WHERE dossier_id = ?",
                (dossier_id,),
            ).fetchone()
            if row is not None:
                targets.append((row[0], row[1], row[2]))
        return targets
    finally:
        connection.close()
