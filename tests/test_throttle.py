"""Shared fixed-window throttle counters, on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from processes import HANG_GUARD_SECONDS, all_at_once, collect
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from opencrm_horscompte.base.db import make_engine, writer
from opencrm_horscompte.base.models import ThrottleCounter, utc
from opencrm_horscompte.base.throttle import (
    Hit,
    Limit,
    hit,
    purge_expired,
    reset,
    throttle_key,
)

SECRET = b"throttle-test-key-" + b"7" * 14
HOUR = timedelta(hours=1)
LIMIT = Limit("identity.client", 3, HOUR)
KEY = throttle_key(SECRET, LIMIT.scope, "203.0.113.7")
TABLE = ThrottleCounter.__table__


@pytest.fixture
def counters(engine: Engine) -> Iterator[Engine]:
    SQLModel.metadata.create_all(engine, tables=[TABLE])
    yield engine


def _hit(engine: Engine, now: datetime, key: str = KEY, limit: Limit = LIMIT) -> Hit:
    with Session(writer(engine)) as session, session.begin():
        return hit(session, key, limit, now)


def _peek(engine: Engine, now: datetime, key: str = KEY, limit: Limit = LIMIT) -> int:
    """The count in ``key``'s current window, read from its row (0 if expired or absent)."""
    with Session(engine) as session:
        row = session.exec(
            select(TABLE.c.count, TABLE.c.window_start).where(TABLE.c.key == key)
        ).first()
    if row is None:
        return 0
    count, window_start = row
    if utc(window_start) <= now - limit.window:
        return 0
    return int(count)


def _rows(engine: Engine) -> list[tuple[str, datetime, int]]:
    with Session(engine) as session:
        rows = session.exec(select(TABLE.c.key, TABLE.c.window_start, TABLE.c.count)).all()
    return [(key, utc(start), count) for key, start, count in rows]


# --------------------------------------------------------------------------- keys


def test_key_is_a_64_char_hex_hmac_per_scope_value_and_secret() -> None:
    key = throttle_key(SECRET, "identity.client", "203.0.113.7")
    assert len(key) == 64
    assert int(key, 16) >= 0
    assert key == throttle_key(SECRET, "identity.client", "203.0.113.7")
    others = {
        throttle_key(SECRET, "identity.session", "203.0.113.7"),
        throttle_key(SECRET, "identity.client", "203.0.113.8"),
        throttle_key(b"another-secret-key" + b"7" * 14, "identity.client", "203.0.113.7"),
        # The NUL separator keeps scope and value apart.
        throttle_key(SECRET, "identity.client2", "03.0.113.7"),
        throttle_key(SECRET, "identity.clien", "t\x00203.0.113.7"),
    }
    assert key not in others
    assert len(others) == 5


@pytest.mark.parametrize("scope", ["", "a\x00b"])
def test_key_refuses_an_empty_scope_or_one_with_nul(scope: str) -> None:
    with pytest.raises(ValueError):
        throttle_key(SECRET, scope, "value")


def test_key_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError):
        throttle_key(b"", "scope", "value")


def test_key_accepts_any_string_value() -> None:
    assert len(throttle_key(SECRET, "scope", "\udcff lone surrogate, é, \x00")) == 64


@pytest.mark.parametrize(
    "args",
    [("", 1, HOUR), ("a\x00b", 1, HOUR), ("s", -1, HOUR), ("s", 1, timedelta(0))],
)
def test_limit_refuses_nonsense(args: tuple[str, int, timedelta]) -> None:
    with pytest.raises(ValueError):
        Limit(*args)


# --------------------------------------------------------------------------- counting


def test_counts_up_to_the_limit_then_refuses(counters: Engine, clock: Any) -> None:
    hits = [_hit(counters, clock()) for _ in range(LIMIT.limit + 2)]
    assert hits == [
        Hit(count=1, allowed=True, first_refusal=False, retry_after=timedelta(0)),
        Hit(count=2, allowed=True, first_refusal=False, retry_after=timedelta(0)),
        Hit(count=3, allowed=True, first_refusal=False, retry_after=timedelta(0)),
        Hit(count=4, allowed=False, first_refusal=True, retry_after=HOUR),
        Hit(count=5, allowed=False, first_refusal=False, retry_after=HOUR),
    ]
    assert _rows(counters) == [(KEY, clock(), 5)]


def test_a_zero_limit_refuses_the_first_hit(counters: Engine, clock: Any) -> None:
    blocked = Limit("blocked", 0, HOUR)
    assert _hit(counters, clock(), limit=blocked) == Hit(1, False, True, HOUR)
    assert _hit(counters, clock(), limit=blocked) == Hit(2, False, False, HOUR)


def test_retry_after_is_the_time_left_in_the_window(counters: Engine, clock: Any) -> None:
    start = clock()
    for _ in range(LIMIT.limit):
        assert _hit(counters, clock()).allowed
        clock.advance(minutes=10)
    refused = _hit(counters, clock())
    assert refused.first_refusal
    assert refused.retry_after == start + HOUR - clock() == timedelta(minutes=30)
    clock.advance(minutes=29, seconds=59, microseconds=999_999)
    assert _hit(counters, clock()).retry_after == timedelta(microseconds=1)


def test_a_window_covers_start_inclusive_to_start_plus_window_exclusive(
    counters: Engine, clock: Any
) -> None:
    start = clock()
    for _ in range(LIMIT.limit + 1):
        _hit(counters, start)

    just_before = start + HOUR - timedelta(microseconds=1)
    assert _peek(counters, just_before) == 4
    last = _hit(counters, just_before)
    assert (last.count, last.allowed, last.retry_after) == (5, False, timedelta(microseconds=1))
    assert _rows(counters) == [(KEY, start, 5)]

    at_boundary = start + HOUR
    assert _peek(counters, at_boundary) == 0
    assert _hit(counters, at_boundary) == Hit(1, True, False, timedelta(0))
    assert _rows(counters) == [(KEY, at_boundary, 1)]


def test_a_new_window_starts_at_the_first_hit_after_expiry(counters: Engine, clock: Any) -> None:
    _hit(counters, clock())
    clock.advance(hours=5, seconds=7)
    assert _hit(counters, clock()).count == 1
    assert _rows(counters) == [(KEY, clock(), 1)]
    # Refusals count toward the window too, and the next window starts fresh.
    for _ in range(10):
        _hit(counters, clock())
    clock.advance(hours=1)
    assert _hit(counters, clock()) == Hit(1, True, False, timedelta(0))


def test_the_same_instant_in_another_offset_is_the_same_window(
    counters: Engine, clock: Any
) -> None:
    paris = timezone(timedelta(hours=1))
    _hit(counters, clock())
    just_before = (clock() + HOUR - timedelta(microseconds=1)).astimezone(paris)
    assert _hit(counters, just_before).count == 2
    assert _peek(counters, (clock() + HOUR).astimezone(paris)) == 0
    assert _rows(counters) == [(KEY, clock(), 2)]


def test_naive_times_are_refused(counters: Engine, clock: Any) -> None:
    naive = clock().replace(tzinfo=None)
    with Session(writer(counters)) as session, session.begin():
        with pytest.raises(ValueError):
            hit(session, KEY, LIMIT, naive)
        with pytest.raises(ValueError):
            purge_expired(session, naive, HOUR)


def test_overlong_keys_are_refused_on_every_backend(counters: Engine, clock: Any) -> None:
    with Session(writer(counters)) as session, session.begin(), pytest.raises(ValueError):
        hit(session, KEY + "0", LIMIT, clock())


def test_keys_are_counted_apart(counters: Engine, clock: Any) -> None:
    client = Limit("identity.client", 2, HOUR)
    by_session = Limit("identity.session", 2, HOUR)
    keys = [
        throttle_key(SECRET, client.scope, "203.0.113.7"),
        throttle_key(SECRET, client.scope, "198.51.100.1"),
        throttle_key(SECRET, by_session.scope, "203.0.113.7"),
    ]
    for _ in range(3):
        _hit(counters, clock(), keys[0], client)
    assert _hit(counters, clock(), keys[1], client).count == 1
    assert _hit(counters, clock(), keys[2], by_session).count == 1
    assert {key: count for key, _, count in _rows(counters)} == {
        keys[0]: 3,
        keys[1]: 1,
        keys[2]: 1,
    }


def test_raw_values_are_never_stored(counters: Engine, clock: Any) -> None:
    values = ["203.0.113.7", "camille.martin@exemple.fr"]
    for value in values:
        _hit(counters, clock(), throttle_key(SECRET, "lookup", value))
    stored = repr(_rows(counters))
    assert len(_rows(counters)) == 2
    for value in values:
        assert value not in stored
        assert "camille" not in stored and "113" not in stored


def test_hit_joins_the_callers_transaction(counters: Engine, clock: Any) -> None:
    with Session(writer(counters)) as session, session.begin():
        assert hit(session, KEY, LIMIT, clock()).count == 1
        assert hit(session, KEY, LIMIT, clock()).count == 2
        session.rollback()
    assert _rows(counters) == []


# --------------------------------------------------------------------------- peek, reset, purge


def test_peek_does_not_count(counters: Engine, clock: Any) -> None:
    assert _peek(counters, clock()) == 0
    assert _rows(counters) == []
    _hit(counters, clock())
    _hit(counters, clock())
    for _ in range(3):
        assert _peek(counters, clock()) == 2
    assert _hit(counters, clock()).count == 3
    other = Limit(LIMIT.scope, LIMIT.limit, timedelta(minutes=5))
    clock.advance(minutes=5)
    assert _peek(counters, clock(), limit=other) == 0
    assert _peek(counters, clock()) == 3


def test_reset_forgets_one_key(counters: Engine, clock: Any) -> None:
    other = throttle_key(SECRET, LIMIT.scope, "198.51.100.1")
    for _ in range(5):
        _hit(counters, clock())
    _hit(counters, clock(), other)
    with Session(writer(counters)) as session, session.begin():
        reset(session, KEY)
        reset(session, throttle_key(SECRET, LIMIT.scope, "absent"))
    assert _peek(counters, clock()) == 0
    assert _hit(counters, clock()) == Hit(1, True, False, timedelta(0))
    assert _peek(counters, clock(), other) == 1


def test_purge_deletes_windows_started_before_now_minus_older_than(
    counters: Engine, clock: Any
) -> None:
    start = clock()
    keys = [throttle_key(SECRET, "purge", str(number)) for number in range(4)]
    starts = [
        start,  # before the cutoff
        start + timedelta(minutes=30) - timedelta(microseconds=1),  # just before
        start + timedelta(minutes=30),  # exactly at the cutoff: kept
        start + timedelta(hours=1),  # live
    ]
    for key, at in zip(keys, starts, strict=True):
        _hit(counters, at, key)

    now = start + timedelta(hours=1, minutes=30)
    with Session(writer(counters)) as session, session.begin():
        assert purge_expired(session, now, HOUR) == 2
    assert sorted(_rows(counters)) == sorted(
        (key, at, 1) for key, at in zip(keys[2:], starts[2:], strict=True)
    )
    with Session(writer(counters)) as session, session.begin():
        assert purge_expired(session, now, HOUR) == 0
        with pytest.raises(ValueError):
            purge_expired(session, now, -HOUR)


# --------------------------------------------------------------------------- concurrency

THREADS = 8
HITS_EACH = 50
CONCURRENT_LIMIT = Limit("concurrency", 100, HOUR)


@pytest.mark.slow
def test_concurrent_threads_lose_no_increment(counters: Engine, clock: Any) -> None:
    now = clock()
    batches = all_at_once(
        THREADS, lambda: [_hit(counters, now, limit=CONCURRENT_LIMIT) for _ in range(HITS_EACH)]
    )
    results = [hit for batch in batches for hit in batch]

    total = THREADS * HITS_EACH
    assert sorted(result.count for result in results) == list(range(1, total + 1))
    assert sum(result.allowed for result in results) == CONCURRENT_LIMIT.limit
    assert sum(result.first_refusal for result in results) == 1
    assert _rows(counters) == [(KEY, now, total)]


def _process_worker(
    url: str, now: datetime, hits: int, start: Any, results: Any, number: int
) -> None:
    """One host worker process: its own engine, one transaction per hit."""
    try:
        engine = make_engine(url)
        try:
            start.wait()
            counts = [_hit(engine, now, limit=CONCURRENT_LIMIT).count for _ in range(hits)]
        finally:
            engine.dispose()
        results.put((number, counts, None))
    except BaseException:
        results.put((number, [], traceback.format_exc()))


@pytest.mark.slow
@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_processes_lose_no_increment(
    counters: Engine, database_url: str, clock: Any
) -> None:
    """Host worker processes behind a load balancer: each with its own engine."""
    processes_count, hits = 2, 100
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes_count, timeout=HANG_GUARD_SECONDS)
    results = context.Queue()
    now = clock()
    processes = [
        context.Process(
            target=_process_worker, args=(database_url, now, hits, start, results, number)
        )
        for number in range(processes_count)
    ]
    for process in processes:
        process.start()
    try:
        received = collect(results, processes, lambda got: len(got) == len(processes))
        reports = {number: (counts, error) for number, counts, error in received}
        for process in processes:
            process.join(timeout=HANG_GUARD_SECONDS)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)

    errors = [error for _, error in reports.values() if error]
    assert errors == [], "\n".join(errors)
    assert [process.exitcode for process in processes] == [0] * processes_count
    total = processes_count * hits
    counts = sorted(count for counts, _ in reports.values() for count in counts)
    assert counts == list(range(1, total + 1))
    assert _rows(counters) == [(KEY, now, total)]
